"""The daemons' configuration, typed and checked: what a scheduler or a node needs to run.

The command line (``cli.py``) builds these from its options and option files; a program can
build them directly and start a daemon without argparse (a JobCluster's own scheduler, the
tests, the benchmarks). ``check()`` applies the same rules the command line does, so a bad
value is one clear ``ConfigError`` whichever way it came.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, NamedTuple, Optional, TypeVar

from .resources import BUILT_IN, check_name
from .constants import (
    DEFAULT_DEST_PATH_PREFIX,
    DEFAULT_NODE_DEST_PATH_PREFIX,
    MAX_CLUSTER_BYTES,
    MAX_CLUSTER_JOBS,
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


class ConfigError(ValueError):
    """A configuration value is not acceptable; ``field`` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__('%s: %s' % (field, message))
        self.field = field
        self.reason = message


# The rules for single values, shared by the dataclasses' ``check`` and the command line's
# argument types: each takes a value of the right type, returns it, or raises ValueError.

def number_between(low: float, high: float) -> Callable[[float], float]:
    def check(value: float) -> float:
        if math.isnan(value) or not low <= value <= high:
            raise ValueError('must be between %g and %g, not %s' % (low, high, value))
        return value
    return check


check_pulse_interval = number_between(*PULSE_INTERVAL_RANGE)
check_ping_interval = number_between(*PING_INTERVAL_RANGE)


check_positive = number_between(1e-3, math.inf)


def check_count(value: int) -> int:
    if value < 1:
        raise ValueError('must be at least 1, not %s' % (value,))
    return value


def check_not_negative(value: int) -> int:
    if value < 0:
        raise ValueError('must be 0 or more, not %s' % (value,))
    return value


def check_size(value: int) -> int:
    if value < 0:
        raise ValueError('size cannot be negative: %s' % (value,))
    return value


def check_port(value: int, free_allowed: bool = False) -> int:
    """A TCP/UDP port; 0 (any free port) only where the daemon reports what it got."""
    low = 0 if free_allowed else 1
    if not low <= value <= 65535:
        raise ValueError('port must be between %d and 65535, not %s' % (low, value))
    return value


class TLSFiles(NamedTuple):
    """One link's TLS: our certificate (and key, if not in the certificate file), and CA
    certificates that must have signed the peer's (mutual TLS). ``tls.make_context(*files)``
    makes its context."""

    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    cafile: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return bool(self.certfile or self.cafile)


def _check_fields(config: object, rules: dict[str, Callable[[Any], Any]]) -> None:
    """Apply ``rules`` (field name -> check function) to ``config``'s values."""
    for name, rule in rules.items():
        try:
            rule(getattr(config, name))
        except (ValueError, TypeError) as exc:
            raise ConfigError(name, str(exc)) from None


@dataclasses.dataclass
class SchedulerConfig:
    """A scheduler. Field names are the command line's long options."""

    nodes: list[str] = dataclasses.field(default_factory=list)
    """Nodes to ping (names, addresses); empty: find them by broadcast."""
    ip_addr: list[str] = dataclasses.field(default_factory=list)
    """IPv4 addresses to listen on; empty: all."""
    ext_ip_addr: list[str] = dataclasses.field(default_factory=list)
    """Addresses announced to nodes instead of the ``ip_addr`` in the same place (NAT)."""
    port: int = SCHEDULER_NODE_PORT
    """TCP port for nodes, UDP port for discovery; 0: a free one."""
    scheduler_port: int = SCHEDULER_CLIENT_PORT
    """TCP port for clients; 0: a free one."""
    node_port: int = NODE_PORT
    """The nodes' UDP discovery port."""
    node_secret: str = ''
    cluster_secret: str = ''
    node_tls: TLSFiles = TLSFiles()
    cluster_tls: TLSFiles = TLSFiles()
    pulse_interval: float = PULSE_INTERVAL
    ping_interval: float = PING_INTERVAL
    zombie_interval: float = ZOMBIE_INTERVAL
    """Minutes."""
    max_file_size: int = MAX_FILE_SIZE
    dest_path_prefix: str = DEFAULT_DEST_PATH_PREFIX
    state_dir: Optional[str] = None
    """Where the state database lives; None: ``dest_path_prefix``/state."""
    max_node_losses: int = MAX_NODE_LOSSES
    httpd: Optional[tuple[str, int]] = None
    """(address, port) of the status page; None: off."""
    max_unauthenticated: int = MAX_UNAUTHENTICATED
    max_unauthenticated_per_source: int = MAX_UNAUTHENTICATED_PER_SOURCE
    max_cluster_jobs: int = MAX_CLUSTER_JOBS
    """Jobs of one cluster held at once (queued or running)."""
    max_cluster_bytes: int = MAX_CLUSTER_BYTES
    """Bytes of arguments and job files of one cluster's jobs held at once; 0: no limit."""
    pid_file: Optional[str] = None
    """Written once the scheduler serves (``--daemon``); None: none."""

    @property
    def state_path(self) -> str:
        return self.state_dir or os.path.join(self.dest_path_prefix, 'state')

    def check(self) -> 'SchedulerConfig':
        """Raise ``ConfigError`` for the first value that is off; return self."""
        _check_fields(self, {
            'port': lambda port: check_port(port, free_allowed=True),
            'scheduler_port': lambda port: check_port(port, free_allowed=True),
            'node_port': check_port,
            'pulse_interval': check_pulse_interval,
            'ping_interval': check_ping_interval,
            'zombie_interval': check_positive,
            'max_file_size': check_size,
            'max_node_losses': check_count,
            'max_unauthenticated': check_count,
            'max_unauthenticated_per_source': check_count,
            'max_cluster_jobs': check_count,
            'max_cluster_bytes': check_size,
        })
        for link in ('node', 'cluster'):
            files = getattr(self, link + '_tls')
            if files.keyfile and not files.certfile:
                raise ConfigError(link + '_keyfile', 'needs --%s_certfile' % link)
            if files.cafile and not files.certfile:
                raise ConfigError(link + '_cafile',
                                  'needs --%s_certfile (TLS on that link)' % link)
        if self.ext_ip_addr and self.ip_addr and len(self.ext_ip_addr) > len(self.ip_addr):
            raise ConfigError('ext_ip_addr', 'more --ext_ip_addr than -i addresses to pair '
                                             'them with')
        return self


@dataclasses.dataclass
class NodeConfig:
    """A node. Field names are the command line's long options."""

    cpus: int = 0
    """Jobs run at once; 0: all CPUs, negative: all but that many (see ``cpu_count``)."""
    ip_addr: Optional[str] = None
    """The address to use and announce; None: the one that reaches the scheduler."""
    ext_ip_addr: Optional[str] = None
    """Announced instead of ``ip_addr`` (NAT)."""
    node_port: int = NODE_PORT
    """UDP port for discovery pings."""
    secret: str = ''
    """The scheduler's node secret."""
    tls: TLSFiles = TLSFiles()
    scheduler_node: Optional[str] = None
    """Connect to this scheduler at start (retrying); None: wait to be pinged."""
    scheduler_port: int = SCHEDULER_NODE_PORT
    dest_path_prefix: str = DEFAULT_NODE_DEST_PATH_PREFIX
    name: Optional[str] = None
    """Shown for this node; None: the host name."""
    ping_interval: float = PING_INTERVAL
    zombie_interval: float = ZOMBIE_INTERVAL
    """Minutes."""
    max_file_size: int = MAX_FILE_SIZE
    pid_file: Optional[str] = None
    """Written once the node serves (``--daemon``); None: none."""
    serve: int = 0
    """Exit after serving this many computations (dispy's ``--serve``); 0: serve for ever."""
    service_start: Optional[int] = None
    """Each day from this time (seconds after midnight) the node takes jobs; None: midnight."""
    service_stop: Optional[int] = None
    """... until this time, when it takes no more (its running jobs go on); None: no stop."""
    service_end: Optional[int] = None
    """... and at this time it ends its running jobs and leaves its scheduler; None: never."""
    clean: bool = False
    """Remove computations' directories a previous run left in ``dest_path_prefix``."""
    memory: Optional[int] = None
    """Bytes of memory jobs may hold in all; None: the host's physical memory."""
    gpus: Optional[list[str]] = None
    """GPUs jobs may use (their CUDA ids); None: those ``nvidia-smi -L`` lists."""
    resource: dict[str, int] = dataclasses.field(default_factory=dict)
    """Named resources jobs may ask for (``--resource licence=2``): name -> how many."""

    def cpu_count(self, available: Optional[int] = None) -> int:
        """The CPUs to use on a host with ``available`` of them (default: this host's)."""
        available = available or os.cpu_count() or 1
        return self.cpus if self.cpus > 0 else available + self.cpus

    def check(self) -> 'NodeConfig':
        """Raise ``ConfigError`` for the first value that is off; return self."""
        _check_fields(self, {
            'node_port': check_port,
            'scheduler_port': check_port,
            'ping_interval': check_ping_interval,
            'zombie_interval': check_positive,
            'max_file_size': check_size,
            'serve': check_not_negative,
        })
        if self.memory is not None and self.memory < 1:
            raise ConfigError('memory', 'must be more than 0, not %s' % (self.memory,))
        for name, amount in self.resource.items():
            try:
                check_name(name)
            except ValueError as exc:
                raise ConfigError('resource', str(exc)) from None
            if name in BUILT_IN or amount < 0:
                raise ConfigError('resource', '%s=%s: %s' % (
                    name, amount, 'use --%s' % name if name in BUILT_IN
                    else 'a count cannot be negative'))
        if self.gpus is not None and len(set(self.gpus)) != len(self.gpus):
            raise ConfigError('gpus', '%s names a GPU twice' % ','.join(self.gpus))
        if self.cpu_count() < 1:
            raise ConfigError('cpus', 'leaves no CPU to use (%d available)'
                              % (os.cpu_count() or 1))
        if self.tls.keyfile and not self.tls.certfile:
            raise ConfigError('keyfile', 'needs --certfile')
        return self


# dispy 4.15's module-level settings (``dispy.config``), which programs read and set; links
# here are long-lived and watched by pulses, and file sizes are the daemons' options, so
# setting them changes nothing.
MsgTimeout = 10
MaxFileSize = 0


def fields_of(config: SchedulerConfig | NodeConfig) -> dict[str, Any]:
    """A configuration as plain values (JSON), for a daemon run in a child process."""
    return dataclasses.asdict(config)


C = TypeVar('C', SchedulerConfig, NodeConfig)


def from_fields(cls: type[C], fields: dict[str, Any]) -> C:
    """The configuration ``fields_of`` gave; not checked (``check`` it)."""
    values = dict(fields)
    for name, field in cls.__dataclass_fields__.items():
        value = values.get(name)
        if isinstance(value, list) and field.type in ('TLSFiles', TLSFiles):
            values[name] = TLSFiles(*value)
        elif isinstance(value, list) and name == 'httpd':
            values[name] = tuple(value)
    return cls(**values)
