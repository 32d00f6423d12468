"""A daemon's long-lived greenlets (discovery, watchdogs, connectors) in one group, and the
hook that puts every greenlet's crash in the daemon's log.

If a duty dies of an error, the daemon stops rather than limp on without it: ``stopped`` is
set, which the daemon's main greenlet waits on, and the daemon exits with status 1 (so that a
service manager restarts it). A duty that cannot go on for a reason outside the program (a full
disk) raises ``Fatal``, whose one line is the log's last word; any other exception is a bug,
logged as an internal error with its traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
from types import TracebackType
from typing import Any, Callable

import gevent
import gevent.event
import gevent.hub
import gevent.pool

from ..wire.files import remove_file

logger = logging.getLogger(__name__)


class Fatal(Exception):
    """A duty cannot go on, for a reason outside the program; the message says which."""


class Duties:
    def __init__(self, stopped: gevent.event.Event) -> None:
        self.group = gevent.pool.Group()
        self.stopped = stopped
        self.status = 0
        """The daemon's exit status: 1 once a duty has failed."""

    def spawn(self, function: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        greenlet = self.group.spawn(function, *args)
        greenlet.link_exception(self.failed)
        return greenlet

    def failed(self, greenlet: gevent.Greenlet) -> None:
        if isinstance(greenlet.exception, Fatal):
            logger.error('%s; stopping', greenlet.exception)
        else:  # its traceback is in the log already (``log_greenlet_errors``)
            logger.error('internal error: duty %s died of %r; stopping', greenlet,
                         greenlet.exception)
        self.status = 1
        self.stopped.set()

    def kill(self) -> None:
        self.group.kill()


def log_greenlet_errors(hub: gevent.hub.Hub | None = None) -> None:
    """Report every greenlet that dies of an unexpected exception (a bug in a handler, a
    duty, a hub callback) in the log, with its traceback, instead of on gevent's stderr, which
    ``--daemon`` points at /dev/null. The line keeps gevent's own words ("<greenlet> failed
    with ZeroDivisionError"), which the tests look for in every daemon's log."""
    hub = hub or gevent.get_hub()

    def print_exception(context: object, kind: type[BaseException] | None,
                        value: BaseException | str | None, tb: TracebackType | None) -> None:
        if isinstance(value, Fatal):  # not a bug: the duty's group says why it stops
            return
        if context is not None and not isinstance(context, str):
            try:
                context = hub.format_context(context)
            except Exception:  # a greenlet whose repr fails must still be reported
                context = repr(context)
        name = getattr(kind, '__name__', 'exception')
        logger.error('internal error: %s failed with %s', context or 'the hub', name,
                     exc_info=(kind, value, tb) if kind is not None
                     and isinstance(value, BaseException) else None)

    # gevent documents replacing a hub's print_exception; mypy takes it for a method
    hub.print_exception = print_exception  # type: ignore[method-assign,assignment]


def in_background(function: Callable[..., Any], *args: Any) -> None:
    """Run a blocking call whose outcome nobody waits for (removing a large file, which on a
    disk mounted with ``discard`` takes milliseconds) on the hub's thread pool, so that the
    hub serves everyone else meanwhile."""
    gevent.get_hub().threadpool.spawn(function, *args)


def remove_later(path: str) -> None:
    """Remove a file or a directory in the background, out of the way at once: it is renamed
    first (to a hidden name in the same directory), so that one of the same name can be
    written again straight away (a value sent again), while the removal, which on a disk
    mounted with ``discard`` takes milliseconds, keeps the hub from no one."""
    directory, name = os.path.split(path)
    gone = os.path.join(directory, '.gone-%s-%s' % (os.urandom(4).hex(), name))
    try:
        os.rename(path, gone)
    except FileNotFoundError:
        return
    in_background(_remove_tree, gone)


def _remove_tree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        remove_file(path)
