"""What the status shows of resources: each node's offer and what its jobs hold, each
cluster's need and what its jobs hold, the pool's; in ``/status`` (``httpd.status``), in
``/metrics`` (``httpd.Metrics``), in ``dispyscheduler-status``'s text (``report.render``) and
on the page (``httpd.PAGE``'s script, run by Node.js where it is installed). A ``State`` built
in-process, no daemons."""

import json
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispyscheduler.resources import Need, Offer
from dispyscheduler.scheduler.httpd import PAGE, Metrics, status
from dispyscheduler.scheduler.model import State
from dispyscheduler.scheduler.report import holding, render, usage
from dispyscheduler.scheduler.sessions import Peers

GiB = 1 << 30
ALPHA, BETA = '10.0.0.1:51348', '10.0.0.2:51348'
NODE = shutil.which('node') or shutil.which('nodejs')


@pytest.fixture
def pool():
    """Two nodes: alpha (4 CPUs, 16 GiB, 2 GPUs, 2 licences), beta (2 CPUs, nothing else);
    a cluster whose jobs need 2 CPUs, 1 GiB and a licence. Its first job runs on alpha (the
    only node with memory); its second, of 4 CPUs and a GPU, waits for alpha, kept free for
    it."""
    state = State(max_depth=2)
    alpha = state.add_node(ALPHA, 'alpha', '10.0.0.1', 51348, 4,
                           offer=Offer(4, 16 * GiB, 2, {'licence': 2})).node
    beta = state.add_node(BETA, 'beta', '10.0.0.2', 51348, 2).node
    cluster = state.add_cluster('big', b'code', [('*', 0)], False, True,
                                need=Need(2, memory=GiB, named=[('licence', 1)])).cluster
    first = state.submit(cluster, 1, b'args').job
    second = state.submit(cluster, 2, b'args', need=Need(4, gpus=1)).job
    dispatches = state.compute_ready(alpha, cluster.cid) + state.compute_ready(beta, cluster.cid)
    assert dispatches == [(alpha, first)]
    assert alpha.reserved is second
    return state, cluster, alpha, beta, first, second


def document(state):
    """``/status`` as a client reads it (through JSON)."""
    return json.loads(json.dumps(status(state, Peers(), 0.0, 1.0)))


def metrics_text(state):
    return generate_latest(Metrics(state).registry).decode()


def samples(text):
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_status_shows_what_nodes_have_and_hold_and_what_clusters_hold(pool):
    state, cluster, _, _, _, _ = pool
    doc = document(state)
    alpha, beta = doc['nodes']
    assert alpha['address'] == ALPHA and beta['address'] == BETA
    assert alpha['resources'] == {'cpus': 4, 'memory': 16 * GiB, 'gpus': 2, 'licence': 2}
    assert alpha['in_use'] == {'cpus': 2, 'memory': GiB, 'gpus': 0, 'licence': 1}
    assert alpha['reserved_for'] == '%d/2' % cluster.cid
    assert beta['resources'] == {'cpus': 2, 'memory': 0, 'gpus': 0}
    assert beta['in_use'] == {'cpus': 0, 'memory': 0, 'gpus': 0}
    assert beta['reserved_for'] is None
    (big,) = doc['clusters']
    assert big['needs'] == {'cpus': 2, 'memory': GiB, 'licence': 1}
    assert big['holds'] == {'cpus': 2, 'memory': 1073741824, 'gpus': 0, 'licence': 1}
    assert doc['resources'] == {'cpus': 6, 'memory': 16 * GiB, 'gpus': 2, 'licence': 2}
    assert doc['in_use'] == {'cpus': 2, 'memory': GiB, 'gpus': 0, 'licence': 1}
    # every key there was before resources were counted is still there
    assert {'version', 'uptime', 'pulse_interval', 'nodes', 'clusters'} <= set(doc)
    assert {'address', 'ip_addr', 'name', 'cpus', 'busy', 'jobs', 'jobs_done',
            'pulse_age'} <= set(alpha)
    assert (alpha['cpus'], alpha['jobs'], alpha['busy']) == (4, 1, 0)
    assert {'cid', 'name', 'owner', 'queued', 'running', 'done', 'nodes', 'undelivered',
            'job_bytes'} <= set(big)
    assert (big['queued'], big['running'], big['owner']) == (1, 1, None)


def test_status_follows_jobs_ending(pool):
    """The first job ends: alpha takes the job it was kept for (4 CPUs and a GPU), and what
    is held follows; an idle named resource shows 0, not nothing."""
    state, cluster, alpha_node, _, first, second = pool
    placed = state.job_done(alpha_node, first.jid, 5)
    assert placed.dispatches == [(alpha_node, second)]
    doc = document(state)
    alpha = doc['nodes'][0]
    assert alpha['in_use'] == {'cpus': 4, 'memory': 0, 'gpus': 1, 'licence': 0}
    assert alpha['reserved_for'] is None
    assert doc['clusters'][0]['holds'] == {'cpus': 4, 'memory': 0, 'gpus': 1}
    assert doc['in_use'] == {'cpus': 4, 'memory': 0, 'gpus': 1, 'licence': 0}
    state.job_done(alpha_node, second.jid, 5)
    doc = document(state)
    assert doc['nodes'][0]['in_use'] == {'cpus': 0, 'memory': 0, 'gpus': 0, 'licence': 0}
    assert doc['clusters'][0]['holds'] == {'cpus': 0, 'memory': 0, 'gpus': 0}
    assert doc['in_use'] == {'cpus': 0, 'memory': 0, 'gpus': 0, 'licence': 0}


def test_metrics_give_each_resource_of_each_node_and_cluster(pool):
    state, cluster, alpha_node, _, first, _ = pool
    text = metrics_text(state)
    lines = text.splitlines()
    assert 'dispyscheduler_node_resource_in_use{node="%s",resource="cpus"} 2.0' % ALPHA in lines
    assert ('dispyscheduler_cluster_resource_held{cluster="%d",resource="memory"} '
            '1.073741824e+09' % cluster.cid) in lines
    found = samples(text)

    def values(name, label, key):
        return {labels[1][1]: value for (metric, labels), value in found.items()
                if metric == name and labels[0] == (label, key)}

    assert values('dispyscheduler_node_resource', 'node', ALPHA) == {
        'cpus': 4, 'memory': 16 * GiB, 'gpus': 2, 'licence': 2}
    assert values('dispyscheduler_node_resource', 'node', BETA) == {
        'cpus': 2, 'memory': 0, 'gpus': 0}
    assert values('dispyscheduler_node_resource_in_use', 'node', ALPHA) == {
        'cpus': 2, 'memory': GiB, 'gpus': 0, 'licence': 1}
    assert values('dispyscheduler_node_resource_in_use', 'node', BETA) == {
        'cpus': 0, 'memory': 0, 'gpus': 0}
    assert values('dispyscheduler_cluster_resource_held', 'cluster', str(cluster.cid)) == {
        'cpus': 2, 'memory': GiB, 'gpus': 0, 'licence': 1}
    # the metrics there were before keep their names
    for name in ('dispyscheduler_jobs_queued', 'dispyscheduler_jobs_running',
                 'dispyscheduler_nodes', 'dispyscheduler_clusters'):
        assert (name, ()) in found
    assert found[('dispyscheduler_node_cpus', (('node', ALPHA),))] == 4
    assert ('dispyscheduler_node_busy_cpus', (('node', BETA),)) in found
    # a resource nothing holds any more stays, at 0 (a series that vanished would read as
    # unknown rather than as idle)
    state.job_done(alpha_node, first.jid, 5)
    lines = metrics_text(state).splitlines()
    assert ('dispyscheduler_node_resource_in_use{node="%s",resource="licence"} 0.0' % ALPHA
            in lines)
    assert ('dispyscheduler_cluster_resource_held{cluster="%d",resource="licence"} 0.0'
            % cluster.cid in lines)
    assert 'dispyscheduler_node_resource_in_use{node="%s",resource="gpus"} 1.0' % ALPHA in lines


def test_report_shows_use_per_node_and_cluster_and_for_the_pool(pool):
    state, cluster, _, _, _, _ = pool
    text = render(document(state))
    lines = text.splitlines()
    assert lines[0].split() == ['NODE', 'NAME', 'CPUS', 'BUSY', 'JOBS', 'DONE', 'PULSE', 'IN',
                                'USE']
    (alpha,) = [line for line in lines if line.startswith(ALPHA)]
    (beta,) = [line for line in lines if line.startswith(BETA)]
    assert alpha.endswith('  2/4 CPUs, 1 GiB/16 GiB, 0/2 GPUs, licence 1/2 (kept for job %d/2)'
                          % cluster.cid), alpha
    assert beta.endswith('  0/2 CPUs'), beta  # no memory, no GPUs: not mentioned
    # the usage column starts at the same place on every row, under its header
    column = lines[0].index('IN USE')
    assert alpha[column:].startswith('2/4 CPUs') and beta[column:].startswith('0/2 CPUs')
    header = lines.index([line for line in lines if line.startswith('CLUSTER')][0])
    assert lines[header].split()[-1] == 'HOLDS'
    row = lines[header + 1]
    assert row.split()[:2] == [str(cluster.cid), 'big']
    assert row.endswith('  2 CPUs, 1 GiB, licence 1'), row
    assert lines[-2].startswith('2 nodes, 6 CPUs (0 busy); 1 clusters, 1 jobs queued, '
                                '1 running')
    assert lines[-1] == 'pool in use: 2/6 CPUs, 1 GiB/16 GiB, 0/2 GPUs, licence 1/2'


def test_report_reads_a_scheduler_that_counts_no_resources(pool):
    """The status of a scheduler of before resources were counted prints as it did, with
    empty usage columns and no pool line."""
    state, _, _, _, _, _ = pool
    doc = document(state)
    del doc['resources'], doc['in_use']
    for node in doc['nodes']:
        del node['resources'], node['in_use'], node['reserved_for']
    for cluster in doc['clusters']:
        del cluster['needs'], cluster['holds']
    lines = render(doc).splitlines()
    assert lines[0].split()[:7] == ['NODE', 'NAME', 'CPUS', 'BUSY', 'JOBS', 'DONE', 'PULSE']
    assert lines[-1].startswith('2 nodes, 6 CPUs (0 busy)')


def test_usage_and_holding_texts():
    assert usage({'cpus': 4, 'memory': 16 * GiB, 'gpus': 2, 'licence': 2},
                 {'cpus': 2, 'memory': 3 * GiB, 'gpus': 1, 'licence': 1}) == (
        '2/4 CPUs, 3 GiB/16 GiB, 1/2 GPUs, licence 1/2')
    assert usage({'cpus': 1, 'memory': 0, 'gpus': 1}, {'cpus': 0, 'memory': 0, 'gpus': 0}) == (
        '0/1 CPU, 0/1 GPU')
    assert usage({'cpus': 8, 'memory': 1536 << 20, 'gpus': 0, 'b': 1, 'a': 3},
                 {'cpus': 8, 'memory': 0, 'gpus': 0}) == '8/8 CPUs, 0/1.5 GiB, a 0/3, b 0/1'
    assert holding({'cpus': 1, 'memory': 512 << 20, 'gpus': 1, 'licence': 0}) == (
        '1 CPU, 512 MiB, 1 GPU')
    assert holding({'cpus': 0, 'memory': 0, 'gpus': 0}) == '0 CPUs'


PAGE_HARNESS = r'''
// the page's script, with the few browser parts it uses stood in for
var status = JSON.parse(require('fs').readFileSync(0, 'utf8'));
function element(tag) {
  var children = [], text = '';
  return {
    tag: tag, className: '', id: '', children: children,
    appendChild: function (child) { children.push(child); },
    get textContent() { return text; },
    set textContent(value) { text = value; children.length = 0; },
  };
}
var elements = {};
var document = {
  getElementById: function (id) { return elements[id] = elements[id] || element('p'); },
  querySelector: function (selector) {
    return elements[selector] = elements[selector] || element('tbody');
  },
  createElement: element,
};
function fetch() { return Promise.resolve({json: function () { return status; }}); }
function setInterval() {}
%s
setTimeout(function () {
  function rows(selector) {
    return elements[selector].children.map(function (row) {
      return {id: row.id, cells: row.children.map(function (cell) {
        return String(cell.textContent); })};
    });
  }
  console.log(JSON.stringify({summary: elements.summary.textContent,
                              pool: elements.pool.textContent,
                              nodes: rows('#nodes tbody'), clusters: rows('#clusters tbody')}));
}, 0);
'''


@pytest.mark.skipif(NODE is None, reason='Node.js is not installed (it runs the page\'s '
                                         'script here)')
def test_page_shows_use_per_node_and_cluster(pool, tmp_path):
    state, cluster, _, _, _, _ = pool
    page = PAGE.decode()
    script = page[page.index('<script>') + len('<script>'):page.index('</script>')]
    harness = tmp_path / 'page.js'
    harness.write_text(PAGE_HARNESS % script)
    result = subprocess.run([NODE, str(harness)], input=json.dumps(document(state)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown['summary'].endswith('2 nodes, 1 clusters')
    assert shown['pool'] == 'Pool in use: 2/6 CPUs, 1 GiB/16 GiB, 0/2 GPUs, licence 1/2'
    alpha, beta = shown['nodes']
    assert alpha['id'] == 'node-' + ALPHA
    assert alpha['cells'][-1] == ('2/4 CPUs, 1 GiB/16 GiB, 0/2 GPUs, licence 1/2 '
                                  '(kept for job %d/2)' % cluster.cid)
    assert beta['cells'][-1] == '0/2 CPUs'
    assert alpha['cells'][:4] == [ALPHA, 'alpha', '4', '0']
    (big,) = shown['clusters']
    assert big['cells'][-1] == '2 CPUs, 1 GiB, licence 1'
    assert len(big['cells']) == 8 and len(alpha['cells']) == 8
    assert '<th>In use</th>' in page and '<th>Holds</th>' in page
