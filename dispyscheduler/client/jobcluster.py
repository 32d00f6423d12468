"""``JobCluster``: a program that is its own scheduler, as dispy's JobCluster.

The scheduler is the project's own, run for this program alone in a child process
(``private.py``) with free ports and its state in a temporary directory; the program talks to
it as a ``SharedJobCluster`` does, on loopback. It finds nodes as dispy does: it pings the
hosts ``nodes`` names and broadcasts for patterns (``'*'``, ``'10.0.0.*'``) every ping
interval. ``local=True`` (or a number of CPUs) also starts a node on this host for this
cluster alone, so that a program runs with nothing started beforehand. Everything started
stops at ``close()``, at exit, or when the program is killed.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
import weakref
from typing import Any, Callable, Iterable, Literal, Sequence

from ..config import NodeConfig, SchedulerConfig, TLSFiles, fields_of, from_fields
from ..constants import PING_INTERVAL, PULSE_INTERVAL
from .cluster import ClusterCallback, JobCallback, NodeEntry, SharedJobCluster, node_allocations
from .private import ChildDaemon

logger = logging.getLogger('dispyscheduler')

LOCAL_ADDRESS = '127.0.0.1'
"""Where the program reaches its own scheduler, and where its local node runs."""


class JobCluster(SharedJobCluster):
    """Run ``computation`` on nodes (``dispynode``) found by this program's own scheduler.

    Arguments are dispy 4.15's: ``secret`` is the nodes' ``--secret``; ``keyfile`` and
    ``certfile`` turn on TLS to the nodes; ``host``/``ip_addr`` the address (or list of them)
    the scheduler uses, ``ext_host``/``ext_ip_addr`` what it announces behind NAT;
    ``ping_interval`` and ``pulse_interval`` its intervals; ``dispy_port`` the port (TCP and
    UDP) where nodes reach it (default: a free one; give one to forward through NAT);
    ``recover_file`` where ``recover_jobs`` finds it (its state beside it, in a ``.state``
    directory; False: none). Beyond dispy: ``local=True`` starts a node on this host with all
    its CPUs for this cluster alone (``local=N``: N CPUs), and with no ``nodes`` given then
    uses only that node; ``job_timeout`` as SharedJobCluster's.
    """

    def __init__(self, computation: Callable[..., Any] | str,
                 nodes: Sequence[NodeEntry] | str | None = None, depends: Iterable[Any] = (),
                 job_status: JobCallback | None = None,
                 cluster_status: ClusterCallback | None = None,
                 host: str | list[str] | None = None, dispy_port: int | None = None,
                 ext_host: str | list[str] | None = None, ip_addr: str | list[str] | None = None,
                 ext_ip_addr: str | list[str] | None = None, ipv4_udp_multicast: bool = False,
                 dest_path: str | None = None, loglevel: int = logging.WARNING,
                 callback: JobCallback | None = None, setup: Callable[..., Any] | None = None,
                 cleanup: bool | Callable[..., Any] = True,
                 ping_interval: float | None = None, pulse_interval: float | None = None,
                 poll_interval: float | None = None, reentrant: bool = False,
                 secret: str = '', keyfile: str | None = None, certfile: str | None = None,
                 recover_file: str | Literal[False] | None = None,
                 local: bool | int | None = None,
                 job_timeout: float | None = None, **dispy_options: Any) -> None:
        del ipv4_udp_multicast, dest_path, poll_interval  # no meaning here
        if isinstance(nodes, str):
            nodes = [nodes]
        workdir = tempfile.mkdtemp(prefix='dispyscheduler-jobcluster-')
        recover = recover_file is not False
        recover_path, state = _state_paths(recover_file or None, workdir, recover)
        self._stopper = Stopper(workdir, state)
        self._finalizer = weakref.finalize(self, self._stopper.stop, True)
        try:
            addresses = _listify(host or ip_addr)
            entries = node_allocations(nodes if nodes is not None else
                                       [] if local else ['*'])
            local_port = _free_udp_port() if local else None
            if local_port is not None:
                entries.append(node_allocations([(LOCAL_ADDRESS, local_port)])[0])
            cluster_secret = os.urandom(16).hex()
            config = SchedulerConfig(
                nodes=_ping_targets(entries), ip_addr=addresses,
                ext_ip_addr=_listify(ext_host or ext_ip_addr), port=dispy_port or 0,
                scheduler_port=0,
                node_secret=secret, cluster_secret=cluster_secret,
                node_tls=TLSFiles(certfile, keyfile),
                pulse_interval=pulse_interval or PULSE_INTERVAL,
                ping_interval=ping_interval or PING_INTERVAL, dest_path_prefix=state).check()
            debug = loglevel <= logging.DEBUG
            os.makedirs(state, mode=0o700, exist_ok=True)
            scheduler = self._stopper.start(ChildDaemon(
                'scheduler', config, os.path.join(state if recover else workdir,
                                                  'scheduler.log'), debug,
                workdir))  # never the state kept for recover_jobs, which is elsewhere
            if local_port is not None:
                self._stopper.start(ChildDaemon('node', NodeConfig(
                    cpus=0 if local is True else int(local or 0), ip_addr=LOCAL_ADDRESS,
                    node_port=local_port, secret=secret, scheduler_node=LOCAL_ADDRESS,
                    scheduler_port=scheduler.ports['port'], tls=TLSFiles(certfile, keyfile),
                    dest_path_prefix=os.path.join(workdir, 'node')).check(),
                    os.path.join(workdir, 'node.log'), debug, workdir))
            reachable = addresses[0] if addresses and addresses[0] else LOCAL_ADDRESS
            if recover:
                self._private_scheduler = {'config': fields_of(config), 'debug': debug,
                                           'reachable': reachable}
            super().__init__(computation, nodes=entries, depends=depends, callback=callback,
                             scheduler_host=reachable,
                             scheduler_port=scheduler.ports['scheduler_port'],
                             loglevel=loglevel, setup=setup, cleanup=cleanup,
                             reentrant=reentrant, secret=cluster_secret,
                             job_status=job_status, cluster_status=cluster_status,
                             job_timeout=job_timeout,
                             recover_file=recover_path or False,
                             **dispy_options)
        except BaseException:
            self._finalizer.detach()
            self._stopper.stop(keep_state=False)
            raise

    def close(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Close the cluster as SharedJobCluster does, then stop its scheduler (and local
        node): the nodes are free for other schedulers again. Its state goes too, unless the
        scheduler could not confirm the close (``recover_jobs`` may then still want it)."""
        try:
            super().close(timeout, terminate)
        finally:
            if self._finalizer.detach():
                self._stopper.stop(keep_state=self._recover_file is not None
                                   and os.path.exists(self._recover_file))

    shutdown = close  # dispy's name: close the cluster and stop its scheduler

    def _leave(self) -> None:
        """Leaving without closing (jobs pending at exit): the scheduler stops, its state
        kept, and ``recover_jobs`` starts it again to collect the results."""
        super()._leave()
        self._finalizer()


class Stopper:
    """What a JobCluster started, stopped when it closes, at exit, or when it is collected;
    holds no reference to the cluster, so that it can be collected."""

    def __init__(self, workdir: str, state: str) -> None:
        self.children: list[ChildDaemon] = []
        self.workdir = workdir
        self.state = state

    def start(self, child: ChildDaemon) -> ChildDaemon:
        self.children.append(child)
        return child

    def stop(self, keep_state: bool) -> None:
        for child in reversed(self.children):  # the local node first: it leaves its scheduler
            child.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if not keep_state:
            shutil.rmtree(self.state, ignore_errors=True)


def restart_private_scheduler(record: dict[str, Any]) -> tuple[ChildDaemon, dict[str, Any],
                                                                 str]:
    """For ``recover_jobs``: a killed JobCluster program's scheduler started again on its
    saved state; returns it, the record pointing at it, and the cluster's secret."""
    private = record['private_scheduler']
    config = from_fields(SchedulerConfig, private['config'])
    config.port = config.scheduler_port = 0
    scheduler = ChildDaemon('scheduler', config.check(),
                            os.path.join(config.dest_path_prefix, 'scheduler.log'),
                            private.get('debug', False))
    record = dict(record, scheduler=private['reachable'],
                  port=scheduler.ports['scheduler_port'])
    return scheduler, record, config.cluster_secret


def forget_private_scheduler(scheduler: ChildDaemon, record: dict[str, Any],
                             recover_file: str) -> None:
    """After ``recover_jobs``: the scheduler stops; its state goes once everything was
    collected (the recovery file is gone)."""
    scheduler.stop()
    if not os.path.exists(recover_file):
        shutil.rmtree(record['private_scheduler']['config']['dest_path_prefix'],
                      ignore_errors=True)


def _state_paths(recover_file: str | None, workdir: str,
                 recover: bool) -> tuple[str | None, str]:
    """The recovery file and the scheduler's state directory: beside it (so that
    ``recover_jobs`` can start the scheduler again if the program is killed), or without
    recovery in the temporary directory."""
    if not recover:
        return None, os.path.join(workdir, 'scheduler')
    path = recover_file or '_dispyscheduler_%s_%s.json' % (time.strftime('%Y%m%d%H%M%S'),
                                                           os.urandom(3).hex())
    stem = path[:-len('.json')] if path.endswith('.json') else path
    return path, os.path.abspath(stem) + '.state'


def _listify(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _ping_targets(entries: Iterable[Any]) -> list[str]:
    """The hosts to ping for ``nodes``: names and addresses as they are; a pattern
    (``'*'``, ``'10.0.0.*'``) is looked for by broadcast; ``host:port`` for an entry that names
    the node's port."""
    targets = []
    for entry in entries:
        host = entry.ip_addr
        target = '*' if any(ch in host for ch in '*?[') else host
        if entry.port:
            target += ':%d' % entry.port
        if target not in targets:
            targets.append(target)
    return targets


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL_ADDRESS, 0))
        return int(sock.getsockname()[1])
