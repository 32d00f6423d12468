"""A program that runs a scheduler or a node from a typed configuration, without a command
line (as a JobCluster's own scheduler will): ``test_in_process.py`` starts it.

Usage: in_process_daemons.py scheduler DIRECTORY NODE_PORT NODE_SECRET CLUSTER_SECRET
       in_process_daemons.py node DIRECTORY NODE_PORT SCHEDULER_PORT NODE_SECRET

The scheduler takes free ports (port 0) and prints the ones it got as one line of JSON.
"""

import json
import os
import sys

from gevent import monkey

monkey.patch_all()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dispyscheduler.config import NodeConfig, SchedulerConfig  # noqa: E402
from dispyscheduler.runtime.daemonize import configure_logging  # noqa: E402


def run_scheduler(directory, node_port, node_secret, cluster_secret):
    from dispyscheduler.scheduler.server import Listeners, Scheduler
    from dispyscheduler.scheduler.store import Store
    config = SchedulerConfig(ip_addr=['127.0.0.1'], port=0, scheduler_port=0,
                             node_port=int(node_port), nodes=['127.0.0.2'],
                             node_secret=node_secret, cluster_secret=cluster_secret,
                             dest_path_prefix=directory, pulse_interval=1,
                             ping_interval=1).check()
    os.makedirs(config.state_path, exist_ok=True)
    listeners = Listeners(config)
    print(json.dumps({'port': listeners.node_port, 'scheduler_port': listeners.client_port}),
          flush=True)
    Scheduler(config, Store(config.state_path), listeners).run()


def run_node(directory, node_port, scheduler_port, node_secret):
    from dispyscheduler.node.daemon import NodeDaemon
    config = NodeConfig(cpus=2, ip_addr='127.0.0.2', node_port=int(node_port),
                        secret=node_secret, scheduler_node='127.0.0.1',
                        scheduler_port=int(scheduler_port), dest_path_prefix=directory,
                        ping_interval=1).check()
    node = NodeDaemon(config)
    node.bind()
    node.run()


if __name__ == '__main__':
    configure_logging(debug=False)
    role, arguments = sys.argv[1], sys.argv[2:]
    (run_scheduler if role == 'scheduler' else run_node)(*arguments)
