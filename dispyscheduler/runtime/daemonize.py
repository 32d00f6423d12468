"""How a daemon process runs: detaching from the terminal, its pid file, its log, its limits,
and the lock that keeps one scheduler per state directory."""

from __future__ import annotations

import atexit
import fcntl
import faulthandler
import logging
import os
import resource
import sys
from typing import TextIO

LOG_FORMAT = '%(asctime)s %(name)s %(levelname)s %(message)s'


def daemonize() -> None:
    """Detach from the terminal (double fork, new session). The daemon writes its pid file
    once it is ready (``write_pid_file``)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir('/')
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def write_pid_file(path: str) -> None:
    """Write this process's pid to ``path``; it is removed again at exit."""
    with open(path, 'w') as handle:
        handle.write('%d\n' % os.getpid())
    pid = os.getpid()

    def remove() -> None:
        if os.getpid() == pid:  # not in a forked child
            try:
                os.unlink(path)
            except OSError:
                pass
    atexit.register(remove)


def default_pid_file(prog: str) -> str:
    """``$PIDFILE`` (as the init.d scripts set it), else ``/var/run/<prog>.pid``."""
    return os.environ.get('PIDFILE') or '/var/run/%s.pid' % prog


class ReopeningFileHandler(logging.FileHandler):
    """A log file that ``reopen`` closes and opens again by name, so that logrotate can move
    it away and signal the daemon (SIGHUP)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            self.close()
            self.stream = self._open()
            faulthandler.enable(self.stream)  # fatal signals' tracebacks follow the log
        finally:
            self.release()


def configure_logging(debug: bool, log_file: str | None = None) -> ReopeningFileHandler | None:
    """Log to ``log_file`` (or stderr); returns the file's handler, or None."""
    file_handler = ReopeningFileHandler(log_file) if log_file else None
    handler = file_handler if file_handler is not None else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGABRT) leaves its Python traceback in the
    # log, not only an exit status
    stream = file_handler.stream if file_handler is not None else sys.stderr
    if stream is not None:
        faulthandler.enable(stream)
    return file_handler


def raise_file_limit() -> None:
    """As many open files as allowed: a daemon holds one per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def prepare_directory(path: str, mode: int = 0o700) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError('%s is not writable' % (path,))


def lock_state_dir(path: str) -> TextIO:
    """One scheduler per state directory: a second one would corrupt the first one's state.
    Returns the open lock file (the lock lasts as long as it is open)."""
    prepare_directory(path)
    handle = open(os.path.join(path, 'lock'), 'a+')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise OSError('state directory %s is in use by another dispyscheduler (pid %s)'
                      % (path, handle.read().strip() or '?')) from None
    write_lock_owner(handle)
    return handle


def write_lock_owner(handle: TextIO) -> None:
    """The lock file says which process holds it (again after ``daemonize`` forked)."""
    handle.seek(0)
    handle.truncate()
    handle.write('%d\n' % os.getpid())
    handle.flush()
