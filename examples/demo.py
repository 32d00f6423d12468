"""Start a scheduler and two nodes on this host, run the sample program, stop them again.

The scheduler listens on 127.0.0.1 and the nodes on 127.0.0.2 and 127.0.0.3 (every 127.x
address is this host), on the default ports. Run from the repository: python examples/demo.py
"""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(os.path.dirname(HERE), 'bin')


def start(log_dir, name, *argv):
    log = open(os.path.join(log_dir, name + '.log'), 'wb')
    return subprocess.Popen([sys.executable, os.path.join(BIN, argv[0])] + list(argv[1:]),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_nodes(log_path, count, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as handle:
            if handle.read().count(' joined with ') >= count:
                return
        time.sleep(0.1)
    sys.exit('nodes did not join within %d seconds; see %s' % (timeout, log_path))


def main():
    work = tempfile.mkdtemp(prefix='dispyscheduler-demo-')
    node_secret, cluster_secret = secrets.token_hex(8), secrets.token_hex(8)
    daemons = [start(work, 'scheduler', 'dispyscheduler', '-i', '127.0.0.1',
                     '--node_secret', node_secret, '--cluster_secret', cluster_secret,
                     '-n', '127.0.0.2', '-n', '127.0.0.3',
                     '--dest_path_prefix', os.path.join(work, 'scheduler'))]
    try:
        time.sleep(0.5)
        for address in ('127.0.0.2', '127.0.0.3'):
            daemons.append(start(work, 'node-' + address, 'dispynode', '-i', address,
                                 '--cpus', '2', '-s', node_secret,
                                 '--scheduler_node', '127.0.0.1',
                                 '--dest_path_prefix', os.path.join(work, 'node-' + address)))
        wait_for_nodes(os.path.join(work, 'scheduler.log'), 2)
        print('scheduler and two nodes are up (logs in %s)' % work)
        subprocess.run([sys.executable, os.path.join(HERE, 'sample_program.py'), '127.0.0.1',
                        cluster_secret], check=True)
    finally:
        for daemon in reversed(daemons):
            daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
    print('daemons stopped')


if __name__ == '__main__':
    main()
