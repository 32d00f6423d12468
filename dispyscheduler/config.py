"""How the daemons are run: option files, detaching, pid files, logging.

An option file is an INI file with a section named after the program (``[dispyscheduler]``
or ``[dispynode]``) whose keys are the long option names; an option given more than once on
the command line takes one value per line. Values on the command line win over the file.
"""

import argparse
import configparser
import logging
import os
import sys

LOG_FORMAT = '%(asctime)s %(name)s %(levelname)s %(message)s'

NOT_SAVED = {'config', 'save_config', 'help', 'version'}
"""Options that make no sense in an option file."""


def parse_args(parser, argv=None):
    """Parse ``argv`` with the defaults of ``--config FILE`` (if given) under it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument('--config')
    known, _ = early.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**read_config(parser, known.config, argv))
    return parser.parse_args(argv)


def read_config(parser, path, argv):
    """Option values from ``path``, converted and checked as the command line would; options
    repeated on the command line replace, not extend, the file's."""
    config = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as handle:
            config.read_file(handle)
    except (OSError, configparser.Error) as exc:
        parser.error('cannot read --config %s: %s' % (path, exc))
    if not config.has_section(parser.prog):
        parser.error('--config %s has no [%s] section' % (path, parser.prog))
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for key, text in config.items(parser.prog):
        action = actions.get(key)
        if action is None or key in NOT_SAVED:
            parser.error('--config %s: unknown option %r' % (path, key))
        given_here = any(arg == flag or arg.startswith(flag + '=')
                         for arg in argv for flag in action.option_strings)
        try:
            if isinstance(action, argparse._StoreTrueAction):
                values[key] = config.getboolean(parser.prog, key)
            elif isinstance(action, argparse._AppendAction):
                if not given_here:
                    values[key] = [convert(action, item) for item in text.split()]
            else:
                values[key] = convert(action, text.strip())
        except (argparse.ArgumentTypeError, ValueError) as exc:
            parser.error('--config %s: option %s: %s' % (path, key, exc))
    return values


def convert(action, text):
    return action.type(text) if action.type is not None else text


def save_config(parser, options, path):
    """Write the effective options to ``path`` (for ``--config``)."""
    config = configparser.ConfigParser(interpolation=None)
    config.add_section(parser.prog)
    for action in parser._actions:
        if action.dest in NOT_SAVED or not action.option_strings:
            continue
        value = getattr(options, action.dest, None)
        if value is None or value == []:
            continue
        if isinstance(value, bool):
            value = 'yes' if value else 'no'
        elif isinstance(value, tuple):  # an address: host:port, as given
            value = ':'.join(str(part) for part in value)
        elif isinstance(value, list):
            value = '\n'.join(str(item) for item in value)
        config.set(parser.prog, action.dest, str(value))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds secrets
    with os.fdopen(fd, 'w') as handle:
        config.write(handle)


def daemonize():
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


def write_pid_file(path):
    """Write this process's pid to ``path``; it is removed again at exit."""
    with open(path, 'w') as handle:
        handle.write('%d\n' % os.getpid())
    pid = os.getpid()

    def remove():
        if os.getpid() == pid:  # not in a forked child
            try:
                os.unlink(path)
            except OSError:
                pass
    import atexit
    atexit.register(remove)


def default_pid_file(prog):
    """``$PIDFILE`` (as the init.d scripts set it), else ``/var/run/<prog>.pid``."""
    return os.environ.get('PIDFILE') or '/var/run/%s.pid' % prog


class ReopeningFileHandler(logging.FileHandler):
    """A log file that ``reopen`` closes and opens again by name, so that logrotate can move
    it away and signal the daemon (SIGHUP)."""

    def reopen(self):
        self.acquire()
        try:
            self.close()
            self.stream = self._open()
        finally:
            self.release()


def configure_logging(debug, log_file=None):
    """Log to ``log_file`` (or stderr); returns the file's handler, or None."""
    handler = ReopeningFileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return handler if log_file else None
