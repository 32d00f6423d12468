"""What a lab admin sees: the status page, /status, /metrics, the status command, option files,
and the client's progress bar. Real daemons on loopback."""

import io
import json
import os
import shutil
import re
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemons import BIN, free_ports, wait_for

from dispyscheduler import DispyJob, SharedJobCluster

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


def nap(seconds, tag):
    import time
    time.sleep(seconds)
    return tag


@pytest.fixture
def running(daemons):
    """A scheduler with --httpd, two nodes, and a cluster with jobs running."""
    (http_port,) = free_ports(1)
    daemons.start_scheduler('--httpd', '127.0.0.1:%d' % http_port)
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    cluster = SharedJobCluster(nap, **daemons.client_options())
    wait_for(lambda: len(cluster.status().nodes) == 2, 30, 'both nodes to set up the cluster')
    quick = [cluster.submit(0, n) for n in range(10)]
    wait_for(lambda: all(job.status == DispyJob.Finished for job in quick), 30, 'quick jobs')
    slow = [cluster.submit(30, n) for n in range(4)]
    wait_for(lambda: all(job.status == DispyJob.Running for job in slow), 30, 'slow jobs')
    yield 'http://127.0.0.1:%d' % http_port, cluster
    cluster.close(terminate=True)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.headers.get('Content-Type'), reply.read().decode()


def test_status_json_shows_nodes_and_a_running_cluster(running):
    url, cluster = running
    content_type, body = get(url + '/status')
    assert content_type == 'application/json'
    status = json.loads(body)
    assert [node['ip_addr'] for node in status['nodes']] == ['127.0.0.2', '127.0.0.3']
    assert all(node['cpus'] == 2 and node['busy'] == 2 and node['pulse_age'] < 5
               for node in status['nodes'])
    (mine,) = status['clusters']
    assert mine['cid'] == cluster.cid and mine['name'] == 'nap'
    assert mine['running'] == 4 and mine['done'] == 10 and mine['queued'] == 0
    assert mine['owner'].startswith('127.0.0.1:')


def test_metrics_parse_as_prometheus_text(running):
    url, _ = running
    content_type, body = get(url + '/metrics')
    assert content_type.startswith('text/plain; version=0.0.4')
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[('dispyscheduler_jobs_submitted_total', ())] == 14
    assert samples[('dispyscheduler_jobs_finished_total', ())] == 10
    assert samples[('dispyscheduler_jobs_running', ())] == 4
    assert samples[('dispyscheduler_jobs_queued', ())] == 0
    assert samples[('dispyscheduler_nodes', ())] == 2
    busy = {labels: value for (name, labels), value in samples.items()
            if name == 'dispyscheduler_node_busy_cpus'}
    assert sorted(value for value in busy.values()) == [2, 2]
    assert samples[('dispyscheduler_placement_seconds_count', ())] == 14
    assert any(name == 'dispyscheduler_node_pulse_age_seconds' for name, _ in samples)


@pytest.mark.skipif(CHROMIUM is None, reason='Chromium is not installed (.ci/run installs '
                                             "Debian's chromium package when it can)")
def test_status_page_in_headless_chromium(running, tmp_path):
    url, _ = running
    result = subprocess.run(
        [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--user-data-dir=%s' % (tmp_path / 'profile'),
         '--virtual-time-budget=5000', '--dump-dom', url + '/'],
        capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert 'id="node-127.0.0.2:' in dom and 'id="node-127.0.0.3:' in dom, result.stderr[-2000:]
    assert '2 nodes, 1 clusters' in dom
    assert 'class="late"' not in dom


def test_status_command_prints_both_nodes(running):
    url, cluster = running
    result = subprocess.run([sys.executable, os.path.join(BIN, 'dispyscheduler-status'), url],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ['NODE', 'NAME', 'CPUS', 'BUSY', 'JOBS', 'DONE', 'PULSE', 'IN',
                                'USE']
    assert any(line.startswith('127.0.0.2:') for line in lines)
    assert any(line.startswith('127.0.0.3:') for line in lines)
    assert any(line.split()[:2] == [str(cluster.cid), 'nap'] for line in lines)
    as_json = subprocess.run([sys.executable, os.path.join(BIN, 'dispyscheduler-status'),
                              url, '--json'], capture_output=True, text=True, timeout=30)
    assert len(json.loads(as_json.stdout)['nodes']) == 2
    gone = subprocess.run([sys.executable, os.path.join(BIN, 'dispyscheduler-status'),
                           'http://127.0.0.1:1'], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and 'cannot read' in gone.stderr


@pytest.mark.parametrize('program', ['dispyscheduler', 'dispynode'])
def test_save_config_then_config_round_trips(program, tmp_path):
    first, second = tmp_path / 'first.ini', tmp_path / 'second.ini'
    argv = (['-i', '127.0.0.1', '-n', '127.0.0.2', '-n', '127.0.0.3', '--node_secret', 's',
             '--pulse_interval', '7', '--httpd', '8181']
            if program == 'dispyscheduler' else ['-i', '127.0.0.2', '--cpus', '3', '-s', 's',
                                                 '--scheduler_node', '127.0.0.1'])
    run = [sys.executable, os.path.join(BIN, program)]
    subprocess.run(run + argv + ['--save_config', str(first)], check=True, timeout=30)
    subprocess.run(run + ['--config', str(first), '--save_config', str(second)], check=True,
                   timeout=30)
    assert first.read_text() == second.read_text()
    assert oct(first.stat().st_mode & 0o777) == '0o600'  # it holds secrets
    text = first.read_text()
    assert ('pulse_interval = 7.0' in text and '127.0.0.3' in text
            if program == 'dispyscheduler' else 'cpus = 3' in text)


def test_progress_bar(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(nap, **daemons.client_options()) as cluster:
        for n in range(20):
            cluster.submit(0.05, n)
        stream = io.StringIO()
        saved, sys.stderr = sys.stderr, stream
        try:
            assert cluster.wait(progress=True)
        finally:
            sys.stderr = saved
    shown = stream.getvalue()
    assert re.search(r'\r\[#{30}\] 20/20 jobs  [0-9.]+ jobs/s\n$', shown), repr(shown[-200:])
