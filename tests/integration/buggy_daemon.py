"""A real daemon with a bug put into one of its message handlers, for the tests of internal
errors (``test_internal_errors.py``).

Usage: buggy_daemon.py scheduler|node DAEMON_ARGUMENTS...

The scheduler fails (ZeroDivisionError 'injected bug') on every pulse of a node, on a
client's cancel, and in the greenlet that sends a computation's files to a node; the node fails
on the scheduler's acknowledgement of a result.
"""

import functools
import os
import sys

from gevent import monkey

monkey.patch_all()  # as the daemons' mains do first; they do it again, harmlessly

# the checkout this file is in, not whichever one the environment installed (as bin/ does)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))


def inject(cls, method, kind=None):
    """Make ``cls.method`` raise on messages of ``kind`` (one of its arguments is a message
    of that kind), or always."""
    original = getattr(cls, method)

    @functools.wraps(original)  # its name, in the reports, is the method's
    def buggy(self, *args):
        if kind is None or any(getattr(arg, 'kind', None) == kind for arg in args):
            raise ZeroDivisionError('injected bug')
        return original(self, *args)
    setattr(cls, method, buggy)


if __name__ == '__main__':
    role = sys.argv[1]
    from dispyscheduler import cli
    if role == 'scheduler':
        from dispyscheduler.scheduler.clusters import ClusterService
        from dispyscheduler.scheduler.nodes import NodeService
        inject(NodeService, 'on_message', 'pulse')
        inject(ClusterService, 'on_message', 'cancel')
        inject(NodeService, 'stream_files')
        sys.exit(cli.scheduler_main(sys.argv[2:]))
    from dispyscheduler.node.daemon import NodeDaemon
    inject(NodeDaemon, 'on_scheduler_message', 'result_ack')
    sys.exit(cli.node_main(sys.argv[2:]))
