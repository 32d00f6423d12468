"""A real daemon with a bug put into one of its message handlers, for the tests of internal
errors (``test_internal_errors.py``).

Usage: buggy_daemon.py scheduler|node DAEMON_ARGUMENTS...

The scheduler fails (ZeroDivisionError 'injected bug') on every pulse of a node and on a
client's cancel; the node fails on the scheduler's acknowledgement of a result.
"""

import sys

from gevent import monkey

monkey.patch_all()  # as the daemons' mains do first; they do it again, harmlessly


def inject(cls, method, kind):
    """Make ``cls.method`` raise on messages of ``kind`` (the message kind is its ``kind``
    argument, or the one before the body)."""
    original = getattr(cls, method)

    def buggy(self, *args):
        if kind in args:
            raise ZeroDivisionError('injected bug')
        return original(self, *args)
    setattr(cls, method, buggy)


if __name__ == '__main__':
    role = sys.argv[1]
    from dispyscheduler import cli
    if role == 'scheduler':
        from dispyscheduler.scheduler.server import Scheduler
        inject(Scheduler, 'on_node_message', 'pulse')
        inject(Scheduler, 'on_client_message', 'cancel')
        sys.exit(cli.scheduler_main(sys.argv[2:]))
    from dispyscheduler.node.daemon import NodeDaemon
    inject(NodeDaemon, 'on_scheduler_message', 'result_ack')
    sys.exit(cli.node_main(sys.argv[2:]))
