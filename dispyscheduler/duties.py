"""A daemon's long-lived greenlets (discovery, watchdogs, connectors) in one group.

If one of them dies of an error, the daemon stops rather than limp on without it: ``stopped``
is set, which the daemon's main greenlet waits on.
"""

import logging

import gevent.pool

logger = logging.getLogger(__name__)


class Duties:
    def __init__(self, stopped):
        self.group = gevent.pool.Group()
        self.stopped = stopped

    def spawn(self, function, *args):
        greenlet = self.group.spawn(function, *args)
        greenlet.link_exception(self.failed)
        return greenlet

    def failed(self, greenlet):
        logger.error('internal error in %s: %r; stopping', greenlet, greenlet.exception)
        self.stopped.set()

    def kill(self):
        self.group.kill()
