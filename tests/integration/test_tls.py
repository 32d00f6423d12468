"""TLS on both links: a whole run with a test CA and mutual verification, peers with
certificates from another CA refused, and certificate problems stopping a daemon at start."""

import os
import subprocess
import sys

import pytest

from certs import CA
from daemons import BIN

from dispyscheduler import SharedJobCluster


def square(n):
    return n * n if isinstance(n, int) else n  # data: itself, back


@pytest.fixture
def pki(tmp_path):
    """Our CA with scheduler, node and client certificates, and a stranger's CA."""
    ours = CA(tmp_path, 'our CA')
    theirs = CA(tmp_path, 'their CA')
    return {
        'ca': ours.cert_path, 'scheduler': ours.issue('scheduler'), 'node': ours.issue('node'),
        'client': ours.issue('client'), 'stranger': theirs.issue('stranger'),
        'expired': ours.issue('expired', expired=True),
    }


def test_mutual_tls_on_both_links(daemons, pki):
    cert, key = pki['scheduler']
    daemons.start_scheduler('--node_certfile', cert, '--node_keyfile', key,
                            '--node_cafile', pki['ca'], '--cluster_certfile', cert,
                            '--cluster_keyfile', key, '--cluster_cafile', pki['ca'])
    node_cert, node_key = pki['node']
    daemons.start_node('127.0.0.2', '--certfile', node_cert, '--keyfile', node_key,
                       '--cafile', pki['ca'])
    client_cert, client_key = pki['client']
    with SharedJobCluster(square, certfile=client_cert, keyfile=client_key, cafile=pki['ca'],
                          **daemons.client_options()) as cluster:
        jobs = [cluster.submit(n) for n in range(30)]
        assert [job() for job in jobs] == [n * n for n in range(30)]
        # large values and results take the same links: 20 MB each way, through TLS
        data = os.urandom(20 * 1000 * 1000)
        big = cluster.submit(data)
        assert big(timeout=120) == data, (big.status, big.exception)
    # a client whose certificate another CA signed is refused; so is one with none
    stranger_cert, stranger_key = pki['stranger']
    with pytest.raises(ConnectionError, match='TLS'):
        SharedJobCluster(square, certfile=stranger_cert, keyfile=stranger_key,
                         cafile=pki['ca'], **daemons.client_options())
    with pytest.raises(ConnectionError, match='TLS'):
        SharedJobCluster(square, cafile=pki['ca'], **daemons.client_options())
    # a node likewise
    intruder = daemons.start_node('127.0.0.3', '--certfile', stranger_cert, '--keyfile',
                                  stranger_key, '--cafile', pki['ca'], wait=False)
    intruder.wait_log('cannot reach scheduler')
    assert 'node 127.0.0.3' not in daemons.scheduler.log()
    daemons.scheduler.wait_log('dropped node connection from 127.0.0.3: TLS handshake failed')


def test_client_refuses_a_scheduler_its_ca_did_not_sign(daemons, pki):
    stranger_cert, stranger_key = pki['stranger']
    daemons.start_scheduler('--cluster_certfile', stranger_cert, '--cluster_keyfile',
                            stranger_key)
    with pytest.raises(ConnectionError, match='TLS handshake failed'):
        SharedJobCluster(square, cafile=pki['ca'], **daemons.client_options())


def start(program, *argv):
    return subprocess.run([sys.executable, os.path.join(BIN, program)] + list(argv),
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize('problem', ['expired', 'missing', 'wrong key', 'not a certificate'])
def test_certificate_problems_stop_the_daemons_at_start(pki, tmp_path, problem):
    cert, key = pki['scheduler']
    if problem == 'expired':
        cert, key = pki['expired']
        expected = 'expired on'
    elif problem == 'missing':
        cert = str(tmp_path / 'nonexistent.pem')
        expected = 'cannot read certificate'
    elif problem == 'wrong key':
        key = pki['node'][1]
        expected = 'cannot use key'
    else:
        cert = key
        expected = 'cannot load certificate'
    for program, argv in (
            ('dispyscheduler', ['--cluster_certfile', cert, '--cluster_keyfile', key,
                                '--dest_path_prefix', str(tmp_path / 'scheduler')]),
            ('dispyscheduler', ['--node_certfile', cert, '--node_keyfile', key,
                                '--dest_path_prefix', str(tmp_path / 'scheduler')]),
            ('dispynode', ['--certfile', cert, '--keyfile', key,
                           '--dest_path_prefix', str(tmp_path / 'node')])):
        result = start(program, *argv)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
