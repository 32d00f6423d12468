"""Command lines of ``dispyscheduler`` and ``dispynode``.

Each program's options are a table (``SCHEDULER_OPTIONS``, ``NODE_OPTIONS``) from which its
parser and its option files follow. Both mains monkey-patch the stdlib with gevent before
anything else, check every option (a bad value exits with status 2 and one line saying which
and why), turn the options into the daemon's typed configuration (``config.py``), check what
can only be checked by trying (TLS files, directories, ports), and then hand over to the
daemon.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Callable, Iterable, Sequence, TypeVar

from . import __version__
from .node.service import parse_time_of_day
from .resources import parse_offer_option
from .runtime import daemonize
from .config import (
    ConfigError,
    NodeConfig,
    SchedulerConfig,
    TLSFiles,
    check_count,
    check_ping_interval,
    check_port,
    check_positive,
    check_pulse_interval,
    check_size,
)
from .constants import (
    DEFAULT_DEST_PATH_PREFIX,
    DEFAULT_HTTP_PORT,
    DEFAULT_NODE_DEST_PATH_PREFIX,
    MAX_CLUSTER_BYTES,
    MAX_CLUSTER_JOBS,
    MAX_FILE_SIZE,
    MAX_NODE_LOSSES,
    MAX_UNAUTHENTICATED,
    MAX_UNAUTHENTICATED_PER_SOURCE,
    NODE_PORT,
    PING_INTERVAL,
    PULSE_INTERVAL,
    SCHEDULER_CLIENT_PORT,
    SCHEDULER_NODE_PORT,
    ZOMBIE_INTERVAL,
)
from .optionfile import LIST, SWITCH, VALUE, ArgumentParser, Option, build_parser, parse_args
from .optionfile import write_option_file

T = TypeVar('T')
C = TypeVar('C')

# Argument types: text to a value, or ``argparse.ArgumentTypeError`` with the reason; the
# rules themselves are the configuration's (``config.py``), so a program building a
# configuration meets the same ones.


def argument_type(parse: Callable[[str], T], check: Callable[[T], T] | None = None,
                  what: str = 'a number') -> Callable[[str], T]:
    def convert(text: str) -> T:
        try:
            value = parse(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError('%r is not %s' % (text, what)) from None
        try:
            return check(value) if check is not None else value
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


SIZE_SUFFIXES = {'': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40}


def parse_size(text: str) -> int:
    """Bytes, with an optional k/m/g/t suffix."""
    stripped = text.strip().lower().rstrip('b')
    suffix = stripped[-1:] if stripped[-1:] in SIZE_SUFFIXES else ''
    return int(float(stripped[:len(stripped) - len(suffix)]) * SIZE_SUFFIXES[suffix])


size = argument_type(parse_size, check_size, 'a size (bytes, or with k/m/g/t)')
port = argument_type(int, check_port, 'a port number')
count = argument_type(int, check_count, 'a whole number')
positive_number = argument_type(float, check_positive)
pulse_interval = argument_type(float, check_pulse_interval)
ping_interval = argument_type(float, check_ping_interval)


def ip_address(text: str) -> str:
    """An IPv4 address, or a host name resolved to one."""
    try:
        # AF_INET: an address is a str already (str() for the checker's sake)
        return str(socket.getaddrinfo(text, None, socket.AF_INET)[0][4][0])
    except (OSError, IndexError, UnicodeError):
        raise argparse.ArgumentTypeError('cannot resolve %r to an IPv4 address'
                                         % (text,)) from None


time_of_day = argument_type(parse_time_of_day, what='a time of day (HH:MM)')


def gpu_ids(text: str) -> list[str]:
    """``--gpus 0,1``: CUDA ids; '' for none."""
    ids = [part.strip() for part in text.split(',') if part.strip()]
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError('%r names a GPU twice' % (text,))
    return ids


def named_resource(text: str) -> tuple[str, int]:
    """``--resource licence=2``."""
    try:
        return parse_offer_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def http_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` for ``--httpd``; the host defaults to 127.0.0.1 (this host only)."""
    host, _, number = text.rpartition(':')
    return (ip_address(host) if host else '127.0.0.1'), port(number)


def common_options(prog: str) -> list[Option]:
    return [
        Option(('-d', '--debug'), 'log debug messages', SWITCH),
        Option(('--config',), 'read options from FILE (an INI file with a [%s] section); the '
                              'command line wins' % prog, metavar='FILE', in_files=False),
        Option(('--save_config',), 'write the effective options to FILE and exit',
               metavar='FILE', in_files=False),
        Option(('--daemon',), 'detach from the terminal and write a pid file', SWITCH),
        Option(('--pid_file',), 'pid file with --daemon (default: $PIDFILE, else '
                                '/var/run/%s.pid)' % prog, metavar='FILE'),
        Option(('--log_file',), 'log to FILE instead of stderr; SIGHUP reopens it (logrotate)',
               metavar='FILE'),
        Option(('--zombie_interval',), 'minutes after which work of a peer that went away is '
                                       'cleaned up (default %(default)g)',
               type=positive_number, default=ZOMBIE_INTERVAL, metavar='MINUTES'),
        Option(('--max_file_size',), 'largest file accepted, in bytes or with k/m/g/t '
                                     '(default 10g); 0 = no limit',
               type=size, default=MAX_FILE_SIZE, metavar='SIZE'),
    ]


def accepted_from_dispy(*names: str, value: bool = False) -> list[Option]:
    """dispy 4.15's options that have no meaning here: accepted (so that its command lines and
    option files work), without effect."""
    return [Option((name,), "dispy's; accepted, no effect here", VALUE if value else SWITCH,
                   metavar='VALUE' if value else None, effect=False) for name in names]


SCHEDULER_OPTIONS = common_options('dispyscheduler') + [
    Option(('-n', '--node', '--nodes'), 'ping this node (repeatable); without -n, nodes are '
                                        'found by broadcast', LIST, metavar='NODE'),
    Option(('-i', '--host', '--ip_addr'), 'listen on this address (repeatable; default all)',
           LIST, type=ip_address, metavar='ADDR'),
    Option(('--ext_host', '--ext_ip_addr'), 'address announced to nodes instead of the matching '
                                            '-i address (NAT); repeatable', LIST,
           type=ip_address, metavar='ADDR'),
    Option(('-p', '--port'), 'TCP port for nodes and UDP port for discovery (default '
                             '%(default)d)', type=port, default=SCHEDULER_NODE_PORT),
    Option(('--scheduler_port',), 'TCP port for clients (default %(default)d)', type=port,
           default=SCHEDULER_CLIENT_PORT),
    Option(('--node_port',), "nodes' UDP discovery port (default %(default)d)", type=port,
           default=NODE_PORT),
    Option(('--node_secret',), 'secret shared with the nodes', default=''),
    Option(('--cluster_secret',), 'secret shared with clients', default=''),
    Option(('--node_keyfile',), 'TLS key for the node link'),
    Option(('--node_certfile',), 'TLS certificate for the node link'),
    Option(('--cluster_keyfile',), 'TLS key for the client link'),
    Option(('--cluster_certfile',), 'TLS certificate for the client link'),
    Option(('--node_cafile',), 'CA certificates: nodes must show a certificate they signed '
                               '(mutual TLS on the node link)', metavar='FILE'),
    Option(('--cluster_cafile',), 'CA certificates: clients must show a certificate they '
                                  'signed (mutual TLS on the client link)', metavar='FILE'),
    Option(('--pulse_interval',), 'seconds between node pulses; a node silent for 5 intervals '
                                  'is presumed dead (1 to 600, default %(default)g)',
           type=pulse_interval, default=PULSE_INTERVAL, metavar='SECONDS'),
    Option(('--ping_interval',), 'seconds between discovery pings (default %(default)g)',
           type=ping_interval, default=PING_INTERVAL, metavar='SECONDS'),
    Option(('--dest_path_prefix',), "where computations' files are kept (default "
                                    '%(default)s)', default=DEFAULT_DEST_PATH_PREFIX,
           metavar='DIR'),
    Option(('--state_dir',), 'where the scheduler keeps its state (default: '
                             'DEST_PATH_PREFIX/state)', metavar='DIR'),
    Option(('--max_node_losses',), 'a job whose runs lost this many nodes ends Abandoned '
                                   '(default %(default)d)', type=count,
           default=MAX_NODE_LOSSES, metavar='N'),
    Option(('--httpd',), 'serve the status page, /status (JSON) and /metrics (Prometheus) on '
                         'PORT (alone: %d), at HOST (default 127.0.0.1); off unless given'
                         % DEFAULT_HTTP_PORT,
           type=http_address, metavar='[HOST:]PORT', const=('127.0.0.1', DEFAULT_HTTP_PORT)),
    Option(('--max_unauthenticated',), 'connections in their handshake at once; past this the '
                                       'oldest is dropped (default %(default)d)', type=count,
           default=MAX_UNAUTHENTICATED, metavar='N'),
    Option(('--max_unauthenticated_per_source',), 'connections in their handshake from one '
                                                  'address; past this the oldest of them is '
                                                  'dropped (default %(default)d)', type=count,
           default=MAX_UNAUTHENTICATED_PER_SOURCE, metavar='N'),
    Option(('--max_cluster_jobs',), "jobs of one cluster held at once, queued or running; a "
                                    "client's submit() waits while its cluster has this many "
                                    '(default %(default)d)', type=count,
           default=MAX_CLUSTER_JOBS, metavar='N'),
    Option(('--max_cluster_bytes',), "bytes of arguments and job files of one cluster's jobs "
                                     'held at once, in bytes or with k/m/g/t; submit() waits '
                                     'for room (default 256m; 0 = no limit)', type=size,
           default=MAX_CLUSTER_BYTES, metavar='SIZE'),
] + accepted_from_dispy('--fair_cluster_scheduler', '--early_cluster_scheduler',
                        '--cooperative', '--cleanup_nodes', '--clean') + accepted_from_dispy(
    '--msg_timeout', value=True)

NODE_OPTIONS = common_options('dispynode') + [
    Option(('-i', '--host', '--ip_addr'), 'address to use and announce (default: the one that '
                                          'reaches the scheduler)', type=ip_address,
           metavar='ADDR'),
    Option(('--ext_host', '--ext_ip_addr'), 'address announced instead of -i (NAT)',
           type=ip_address, metavar='ADDR'),
    Option(('-p', '--node_port'), 'UDP port for discovery pings (default %(default)d)',
           type=port, default=NODE_PORT),
    Option(('-c', '--cpus'), 'jobs run at once (default: all CPUs; negative: all but that '
                             'many)', type=int, default=0),
    Option(('--memory',), 'memory jobs may hold in all, as 64G (default: all of it)',
           type=size, metavar='SIZE'),
    Option(('--gpus',), 'GPUs jobs may use, by CUDA id, as 0,1 (default: those nvidia-smi '
                        "-L lists; '' for none)", type=gpu_ids, metavar='IDS', show=','.join),
    Option(('--resource',), 'a named resource jobs may ask for, as licence=2 (repeatable)',
           LIST, type=named_resource, metavar='NAME=COUNT', show='%s=%d'.__mod__),
    Option(('-s', '--secret'), "the scheduler's --node_secret", default=''),
    Option(('--certfile',), 'TLS certificate (turns TLS on)'),
    Option(('--keyfile',), 'TLS key, if not in the certificate file'),
    Option(('--cafile',), "CA certificates that must have signed the scheduler's certificate "
                          '(turns TLS on)', metavar='FILE'),
    Option(('--scheduler_host', '--scheduler_node'), 'connect to this scheduler at start, '
                                                     'retrying until it is there',
           metavar='HOST'),
    Option(('--scheduler_port',), "the scheduler's --port (default %(default)d)", type=port,
           default=SCHEDULER_NODE_PORT),
    Option(('--dest_path_prefix',), "where computations' files are kept (default "
                                    '%(default)s)', default=DEFAULT_NODE_DEST_PATH_PREFIX,
           metavar='DIR'),
    Option(('--name',), 'name shown for this node (default: host name)'),
    Option(('--ping_interval',), 'seconds between announcements while the node has no '
                                 'scheduler (default %(default)g)', type=ping_interval,
           default=PING_INTERVAL, metavar='SECONDS'),
    Option(('--serve',), 'exit after serving N computations (default: serve for ever)',
           type=count, metavar='N'),
    Option(('--service_start',), 'take jobs each day from this time (default: midnight, or '
                                 'at once)', type=time_of_day, metavar='HH:MM'),
    Option(('--service_stop',), 'take no new jobs each day from this time; running jobs go '
                                'on', type=time_of_day, metavar='HH:MM'),
    Option(('--service_end',), 'end running jobs and leave the scheduler each day at this '
                               'time, until --service_start', type=time_of_day,
           metavar='HH:MM'),
    Option(('--clean',), "remove computations' directories a previous run left in "
                         '--dest_path_prefix', SWITCH),
]

NODE_OPTIONS += accepted_from_dispy('--client_shutdown') + accepted_from_dispy(
    '--msg_timeout', value=True)

OPTIONS = {'dispyscheduler': SCHEDULER_OPTIONS, 'dispynode': NODE_OPTIONS}


def scheduler_parser() -> ArgumentParser:
    return build_parser('dispyscheduler', 'Shared job scheduler for dispy-style clusters.',
                        SCHEDULER_OPTIONS, __version__)


def node_parser() -> ArgumentParser:
    return build_parser('dispynode', 'Compute node for dispyscheduler.', NODE_OPTIONS,
                        __version__)


def scheduler_config(options: argparse.Namespace) -> SchedulerConfig:
    """The scheduler's configuration from its parsed command line (checked)."""
    return SchedulerConfig(
        nodes=options.nodes, ip_addr=options.ip_addr, ext_ip_addr=options.ext_ip_addr,
        port=options.port, scheduler_port=options.scheduler_port, node_port=options.node_port,
        node_secret=options.node_secret, cluster_secret=options.cluster_secret,
        node_tls=TLSFiles(options.node_certfile, options.node_keyfile, options.node_cafile),
        cluster_tls=TLSFiles(options.cluster_certfile, options.cluster_keyfile,
                             options.cluster_cafile),
        pulse_interval=options.pulse_interval, ping_interval=options.ping_interval,
        zombie_interval=options.zombie_interval, max_file_size=options.max_file_size,
        dest_path_prefix=options.dest_path_prefix, state_dir=options.state_dir,
        max_node_losses=options.max_node_losses, httpd=options.httpd,
        max_unauthenticated=options.max_unauthenticated,
        max_unauthenticated_per_source=options.max_unauthenticated_per_source,
        max_cluster_jobs=options.max_cluster_jobs, max_cluster_bytes=options.max_cluster_bytes,
    ).check()


def node_config(options: argparse.Namespace) -> NodeConfig:
    """The node's configuration from its parsed command line (checked); its CPUs counted."""
    config = NodeConfig(
        cpus=options.cpus, ip_addr=options.ip_addr, ext_ip_addr=options.ext_ip_addr,
        node_port=options.node_port, secret=options.secret,
        tls=TLSFiles(options.certfile, options.keyfile, options.cafile),
        scheduler_node=options.scheduler_node, scheduler_port=options.scheduler_port,
        dest_path_prefix=options.dest_path_prefix, name=options.name,
        ping_interval=options.ping_interval, zombie_interval=options.zombie_interval,
        max_file_size=options.max_file_size, serve=options.serve or 0,
        service_start=options.service_start, service_stop=options.service_stop,
        service_end=options.service_end, clean=options.clean, memory=options.memory,
        gpus=options.gpus, resource=dict(options.resource or ()),
    ).check()
    config.cpus = config.cpu_count()
    return config


def monkey_patch() -> None:
    """What a daemon's process needs before anything else: the stdlib made cooperative,
    and large buffers returned to the system when freed."""
    from gevent import monkey
    monkey.patch_all()
    from .runtime.memory import return_large_buffers
    return_large_buffers()


def fail(prog: str, message: str) -> int:
    sys.stderr.write('%s: error: %s\n' % (prog, message))
    return 2


def parse(prog: str, parser: ArgumentParser, argv: Sequence[str] | None,
          to_config: Callable[[argparse.Namespace], C]) -> tuple[argparse.Namespace, C]:
    """Parse, and turn into a configuration; a value the configuration refuses is a usage
    error naming its option."""
    options = parse_args(parser, OPTIONS[prog], sys.argv[1:] if argv is None else argv)
    try:
        return options, to_config(options)
    except ConfigError as exc:
        parser.error('argument --%s: %s' % (exc.field, exc.reason))


def start_running(options: argparse.Namespace, prog: str) -> str | None:
    """``--daemon``, logging, file limits: what both daemons do once everything is
    checked. Returns the pid file to write once serving (None without ``--daemon``)."""
    daemonize.raise_file_limit()
    pid_file = None
    if options.daemon:
        pid_file = os.path.abspath(options.pid_file or daemonize.default_pid_file(prog))
        daemonize.daemonize()
    log_file = daemonize.configure_logging(options.debug, options.log_file)
    import gevent
    # SIGHUP (logrotate, ``systemctl reload``) reopens the log file, and never kills
    gevent.signal_handler(signal.SIGHUP, log_file.reopen if log_file else lambda: None)
    return pid_file


def absolute_paths(config: SchedulerConfig | NodeConfig, options: argparse.Namespace,
                   names: Iterable[str]) -> None:
    """A daemon runs in / once detached: relative paths are made absolute before that."""
    if options.daemon:
        for name in names:
            value = getattr(config, name)
            if value:
                setattr(config, name, os.path.abspath(value))
        if options.log_file:
            options.log_file = os.path.abspath(options.log_file)


def scheduler_main(argv: Sequence[str] | None = None) -> int:
    monkey_patch()
    parser = scheduler_parser()
    options, config = parse('dispyscheduler', parser, argv, scheduler_config)
    if options.save_config:
        write_option_file(parser.prog, SCHEDULER_OPTIONS, options, options.save_config)
        return 0
    from .wire.tls import TLSConfigError, make_context
    try:
        node_tls = make_context(*config.node_tls) if config.node_tls.certfile else None
        cluster_tls = make_context(*config.cluster_tls) if config.cluster_tls.certfile else None
    except TLSConfigError as exc:
        return fail(parser.prog, str(exc))
    from .scheduler.store import Store, StoreError
    absolute_paths(config, options, ('dest_path_prefix', 'state_dir'))
    config.state_dir = config.state_path
    try:
        daemonize.prepare_directory(config.dest_path_prefix)
        state_lock = daemonize.lock_state_dir(config.state_dir)
        Store(config.state_dir).close()  # a database that cannot be used fails here, at once
    except (OSError, StoreError) as exc:
        return fail(parser.prog, str(exc))
    from .scheduler.server import Listeners, Scheduler
    try:
        listeners = Listeners(config)
    except OSError as exc:  # a port in use, an address not on this host
        return fail(parser.prog, 'cannot listen on %s' % (exc,))
    config.pid_file = start_running(options, parser.prog)
    daemonize.write_lock_owner(state_lock)
    try:
        store = Store(config.state_dir)
    except StoreError as exc:
        logging.getLogger('dispyscheduler').error('%s', exc)
        return fail(parser.prog, str(exc))
    try:
        return Scheduler(config, store, listeners, node_tls, cluster_tls).run()
    finally:
        state_lock.close()


def node_main(argv: Sequence[str] | None = None) -> int:
    monkey_patch()
    parser = node_parser()
    options, config = parse('dispynode', parser, argv, node_config)
    if options.save_config:  # as given: "all CPUs" stays all CPUs of whichever host
        write_option_file(parser.prog, NODE_OPTIONS, options, options.save_config)
        return 0
    from .wire.tls import TLSConfigError, make_context
    absolute_paths(config, options, ('dest_path_prefix',))
    try:
        tls_context = make_context(*config.tls) if config.tls.enabled else None
        daemonize.prepare_directory(config.dest_path_prefix)
    except (TLSConfigError, OSError) as exc:
        return fail(parser.prog, str(exc))
    from .node.daemon import NodeDaemon
    node = NodeDaemon(config, tls_context)
    try:
        node.bind()
    except OSError as exc:
        return fail(parser.prog, 'cannot listen: %s' % (exc,))
    config.pid_file = start_running(options, parser.prog)
    return node.run()

