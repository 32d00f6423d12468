"""Command lines of ``dispyscheduler`` and ``dispynode``.

Both mains monkey-patch the stdlib with gevent before anything else, check every option
(a bad value exits with status 2 and one line saying which and why), load TLS files, and then
hand over to the daemon.
"""

import argparse
import logging
import os
import signal
import sys

from . import __version__, config
from .constants import (
    DEFAULT_DEST_PATH_PREFIX,
    DEFAULT_NODE_DEST_PATH_PREFIX,
    MAX_FILE_SIZE,
    MAX_NODE_LOSSES,
    MAX_UNAUTHENTICATED,
    MAX_UNAUTHENTICATED_PER_SOURCE,
    NODE_PORT,
    PING_INTERVAL,
    PING_INTERVAL_RANGE,
    PULSE_INTERVAL,
    PULSE_INTERVAL_RANGE,
    SCHEDULER_CLIENT_PORT,
    SCHEDULER_NODE_PORT,
    ZOMBIE_INTERVAL,
)

class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, '%s: error: %s\n' % (self.prog, message))


def number_between(low, high):
    def check(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not a number' % (text,)) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError('must be between %g and %g, not %s'
                                             % (low, high, text))
        return value
    return check


def positive_number(text):
    return number_between(1e-3, float('inf'))(text)


def http_address(text):
    """``[HOST:]PORT`` for ``--httpd``; the host defaults to 127.0.0.1 (this host only)."""
    host, _, number = text.rpartition(':')
    return (ip_address(host) if host else '127.0.0.1'), port(number)


def count(text):
    """A whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a whole number' % (text,)) from None
    if value < 1:
        raise argparse.ArgumentTypeError('must be at least 1, not %s' % (text,))
    return value


def port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a port number' % (text,)) from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError('port must be between 1 and 65535, not %s' % (text,))
    return value


SIZE_SUFFIXES = {'': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40}


def size(text):
    """Bytes, with an optional k/m/g/t suffix; 0 means no limit."""
    stripped = text.strip().lower().rstrip('b')
    suffix = stripped[-1:] if stripped[-1:] in SIZE_SUFFIXES else ''
    try:
        value = int(float(stripped[:len(stripped) - len(suffix)]) * SIZE_SUFFIXES[suffix])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError('%r is not a size (bytes, or with k/m/g/t)'
                                         % (text,)) from None
    if value < 0:
        raise argparse.ArgumentTypeError('size cannot be negative: %s' % (text,))
    return value


def ip_address(text):
    """An IPv4 address, or a host name resolved to one."""
    import socket
    try:
        return socket.getaddrinfo(text, None, socket.AF_INET)[0][4][0]
    except (OSError, IndexError):
        raise argparse.ArgumentTypeError('cannot resolve %r to an IPv4 address'
                                         % (text,)) from None


def common_options(parser):
    parser.add_argument('-d', '--debug', action='store_true', help='log debug messages')
    parser.add_argument('--version', action='version', version='%(prog)s ' + __version__)
    parser.add_argument('--config', metavar='FILE',
                        help='read options from FILE (an INI file with a [%s] section); the '
                             'command line wins' % parser.prog)
    parser.add_argument('--save_config', metavar='FILE',
                        help='write the effective options to FILE and exit')
    parser.add_argument('--daemon', action='store_true',
                        help='detach from the terminal and write a pid file')
    parser.add_argument('--pid_file', metavar='FILE',
                        help='pid file with --daemon (default: $PIDFILE, else '
                             '/var/run/%s.pid)' % parser.prog)
    parser.add_argument('--log_file', metavar='FILE',
                        help='log to FILE instead of stderr; SIGHUP reopens it (logrotate)')
    parser.add_argument('--zombie_interval', type=positive_number, default=ZOMBIE_INTERVAL,
                        metavar='MINUTES',
                        help='minutes after which work of a peer that went away is cleaned '
                             'up (default %(default)g)')
    parser.add_argument('--max_file_size', type=size, default=MAX_FILE_SIZE, metavar='SIZE',
                        help='largest file accepted, in bytes or with k/m/g/t; 0 = no limit')


def scheduler_parser():
    parser = ArgumentParser(prog='dispyscheduler',
                            description='Shared job scheduler for dispy-style clusters.')
    common_options(parser)
    parser.add_argument('-n', '--nodes', action='append', default=[], metavar='NODE',
                        help='ping this node (repeatable); without -n, nodes are found by '
                             'broadcast')
    parser.add_argument('-i', '--ip_addr', action='append', type=ip_address, default=[],
                        metavar='ADDR', help='listen on this address (repeatable; default all)')
    parser.add_argument('--ext_ip_addr', action='append', type=ip_address, default=[],
                        metavar='ADDR', help='address announced to nodes instead of the '
                                             'matching -i address (NAT); repeatable')
    parser.add_argument('-p', '--port', type=port, default=SCHEDULER_NODE_PORT,
                        help='TCP port for nodes and UDP port for discovery (default %(default)d)')
    parser.add_argument('--scheduler_port', type=port, default=SCHEDULER_CLIENT_PORT,
                        help='TCP port for clients (default %(default)d)')
    parser.add_argument('--node_port', type=port, default=NODE_PORT,
                        help="nodes' UDP discovery port (default %(default)d)")
    parser.add_argument('--node_secret', default='', help='secret shared with the nodes')
    parser.add_argument('--cluster_secret', default='', help='secret shared with clients')
    parser.add_argument('--node_keyfile', help='TLS key for the node link')
    parser.add_argument('--node_certfile', help='TLS certificate for the node link')
    parser.add_argument('--cluster_keyfile', help='TLS key for the client link')
    parser.add_argument('--cluster_certfile', help='TLS certificate for the client link')
    parser.add_argument('--node_cafile', metavar='FILE',
                        help='CA certificates: nodes must show a certificate they signed '
                             '(mutual TLS on the node link)')
    parser.add_argument('--cluster_cafile', metavar='FILE',
                        help='CA certificates: clients must show a certificate they signed '
                             '(mutual TLS on the client link)')
    parser.add_argument('--pulse_interval', type=number_between(*PULSE_INTERVAL_RANGE),
                        default=PULSE_INTERVAL, metavar='SECONDS',
                        help='seconds between node pulses; a node silent for 5 intervals is '
                             'presumed dead (1 to 600, default %(default)g)')
    parser.add_argument('--ping_interval', type=number_between(*PING_INTERVAL_RANGE),
                        default=PING_INTERVAL, metavar='SECONDS',
                        help='seconds between discovery pings (default %(default)g)')
    parser.add_argument('--dest_path_prefix', default=DEFAULT_DEST_PATH_PREFIX, metavar='DIR',
                        help="where computations' files are kept (default %(default)s)")
    parser.add_argument('--state_dir', metavar='DIR',
                        help='where the scheduler keeps its state (default: DEST_PATH_PREFIX/'
                             'state)')
    parser.add_argument('--max_node_losses', type=int, default=MAX_NODE_LOSSES, metavar='N',
                        help='a job whose runs lost this many nodes ends Abandoned '
                             '(default %(default)d)')
    parser.add_argument('--httpd', type=http_address, metavar='[HOST:]PORT',
                        help='serve the status page, /status (JSON) and /metrics (Prometheus) '
                             'on PORT, at HOST (default 127.0.0.1); off unless given')
    parser.add_argument('--max_unauthenticated', type=count, default=MAX_UNAUTHENTICATED,
                        metavar='N', help='connections in their handshake at once; past this '
                                          'the oldest is dropped (default %(default)d)')
    parser.add_argument('--max_unauthenticated_per_source', type=count,
                        default=MAX_UNAUTHENTICATED_PER_SOURCE, metavar='N',
                        help='connections in their handshake from one address; past this new '
                             'ones are refused (default %(default)d)')
    return parser


def node_parser():
    parser = ArgumentParser(prog='dispynode', description='Compute node for dispyscheduler.')
    common_options(parser)
    parser.add_argument('-i', '--ip_addr', type=ip_address, metavar='ADDR',
                        help='address to use and announce (default: the one that reaches '
                             'the scheduler)')
    parser.add_argument('--ext_ip_addr', type=ip_address, metavar='ADDR',
                        help='address announced instead of -i (NAT)')
    parser.add_argument('-p', '--node_port', type=port, default=NODE_PORT,
                        help='UDP port for discovery pings (default %(default)d)')
    parser.add_argument('-c', '--cpus', type=int, default=0,
                        help='jobs run at once (default: all CPUs; negative: all but that '
                             'many)')
    parser.add_argument('-s', '--secret', default='', help="the scheduler's --node_secret")
    parser.add_argument('--certfile', help='TLS certificate (turns TLS on)')
    parser.add_argument('--keyfile', help='TLS key, if not in the certificate file')
    parser.add_argument('--cafile', metavar='FILE',
                        help="CA certificates that must have signed the scheduler's "
                             'certificate (turns TLS on)')
    parser.add_argument('--scheduler_node', metavar='HOST',
                        help='connect to this scheduler at start, retrying until it is there')
    parser.add_argument('--scheduler_port', type=port, default=SCHEDULER_NODE_PORT,
                        help="the scheduler's --port (default %(default)d)")
    parser.add_argument('--dest_path_prefix', default=DEFAULT_NODE_DEST_PATH_PREFIX,
                        metavar='DIR', help="where computations' files are kept "
                                            '(default %(default)s)')
    parser.add_argument('--name', help='name shown for this node (default: host name)')
    parser.add_argument('--ping_interval', type=number_between(*PING_INTERVAL_RANGE),
                        default=PING_INTERVAL, metavar='SECONDS',
                        help='seconds between announcements while the node has no scheduler '
                             '(default %(default)g)')
    return parser


def monkey_patch():
    from gevent import monkey
    monkey.patch_all()


def fail(prog, message):
    sys.stderr.write('%s: error: %s\n' % (prog, message))
    return 2


def prepare_directory(path, mode=0o700):
    os.makedirs(path, mode=mode, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError('%s is not writable' % (path,))


def lock_state_dir(path):
    """One scheduler per state directory: a second one would corrupt the first one's state."""
    import fcntl
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


def write_lock_owner(handle):
    handle.seek(0)
    handle.truncate()
    handle.write('%d\n' % os.getpid())
    handle.flush()


def start_running(parser, options):
    """``--daemon``, logging, file limits: what both daemons do once everything is
    checked."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # one per connection
    if options.daemon:
        for name in ('dest_path_prefix', 'state_dir', 'log_file', 'config'):
            value = getattr(options, name, None)
            if value:  # the daemon runs in /
                setattr(options, name, os.path.abspath(value))
        options.pid_file = os.path.abspath(options.pid_file
                                           or config.default_pid_file(parser.prog))
        config.daemonize()
    log_file = config.configure_logging(options.debug, options.log_file)
    import gevent
    # SIGHUP (logrotate, ``systemctl reload``) reopens the log file, and never kills
    gevent.signal_handler(signal.SIGHUP, log_file.reopen if log_file else lambda: None)


def scheduler_main(argv=None):
    monkey_patch()
    parser = scheduler_parser()
    options = config.parse_args(parser, argv)
    if options.node_keyfile and not options.node_certfile:
        parser.error('--node_keyfile needs --node_certfile')
    if options.cluster_keyfile and not options.cluster_certfile:
        parser.error('--cluster_keyfile needs --cluster_certfile')
    for link in ('node', 'cluster'):
        if getattr(options, link + '_cafile') and not getattr(options, link + '_certfile'):
            parser.error('--%s_cafile needs --%s_certfile (TLS on that link)' % (link, link))
    if options.ext_ip_addr and options.ip_addr and len(options.ext_ip_addr) > len(options.ip_addr):
        parser.error('more --ext_ip_addr than -i addresses to pair them with')
    if options.max_node_losses < 1:
        parser.error('argument --max_node_losses: must be at least 1')
    if options.save_config:
        config.save_config(parser, options, options.save_config)
        return 0
    from .tls import TLSConfigError, make_context
    try:
        node_tls = cluster_tls = None
        if options.node_certfile:
            node_tls = make_context(options.node_certfile, options.node_keyfile,
                                    options.node_cafile)
        if options.cluster_certfile:
            cluster_tls = make_context(options.cluster_certfile, options.cluster_keyfile,
                                       options.cluster_cafile)
    except TLSConfigError as exc:
        return fail(parser.prog, str(exc))
    from .scheduler.store import Store, StoreError
    options.state_dir = options.state_dir or os.path.join(options.dest_path_prefix, 'state')
    try:
        prepare_directory(options.dest_path_prefix)
        state_lock = lock_state_dir(options.state_dir)
        Store(options.state_dir).close()  # a database that cannot be used fails here, at once
    except (OSError, StoreError) as exc:
        return fail(parser.prog, str(exc))
    from .scheduler.server import Listeners, Scheduler
    try:
        listeners = Listeners(options)
    except OSError as exc:  # a port in use, an address not on this host
        return fail(parser.prog, 'cannot listen on %s' % (exc,))
    start_running(parser, options)
    write_lock_owner(state_lock)
    try:
        store = Store(options.state_dir)
    except StoreError as exc:
        logging.getLogger('dispyscheduler').error('%s', exc)
        return fail(parser.prog, str(exc))
    try:
        Scheduler(options, store, listeners, node_tls, cluster_tls).run()
    finally:
        state_lock.close()
    return 0


def node_main(argv=None):
    monkey_patch()
    parser = node_parser()
    options = config.parse_args(parser, argv)
    if options.keyfile and not options.certfile:
        parser.error('--keyfile needs --certfile')
    if options.save_config:  # as given: "all CPUs" stays all CPUs of whichever host
        config.save_config(parser, options, options.save_config)
        return 0
    available = os.cpu_count() or 1
    if options.cpus <= 0:
        options.cpus = available + options.cpus
        if options.cpus < 1:
            parser.error('argument -c/--cpus: leaves no CPU to use (%d available)' % available)
    from .tls import TLSConfigError, make_context
    try:
        tls_context = None
        if options.certfile or options.cafile:
            tls_context = make_context(options.certfile, options.keyfile, options.cafile)
        prepare_directory(options.dest_path_prefix)
    except (TLSConfigError, OSError) as exc:
        return fail(parser.prog, str(exc))
    from .node.daemon import NodeDaemon
    node = NodeDaemon(options, tls_context)
    try:
        node.bind()
    except OSError as exc:
        return fail(parser.prog, 'cannot listen: %s' % (exc,))
    start_running(parser, options)
    node.run()
    return 0
