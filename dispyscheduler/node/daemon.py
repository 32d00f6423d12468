"""The node daemon (``dispynode``): one link to a scheduler, computations, discovery.

The node always opens the link: to ``--scheduler_node`` at start (retrying with back-off until
that scheduler is there), or to whichever scheduler pings it first. It serves one scheduler at
a time. Jobs run in processes of their computation (``computation.py`` is the daemon's side of
one, ``runner.py`` the program its processes run); the daemon only routes frames, so it never
unpickles user data. A finished result is kept until the scheduler acknowledges it and is sent
again over the next link if the current one breaks first. A result too large to travel inline
stays in the file its worker process wrote, and streams from there, a chunk at a time, in the
link's payload lane.

Runs under gevent with the stdlib monkey-patched (``cli.node_main`` does that first).
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import platform
import re
import shutil
import signal
import socket
import time
from typing import TYPE_CHECKING, Dict, Optional, Tuple, Union

import gevent
import gevent.event
import gevent.queue
from gevent.server import StreamServer

from ..runtime import discovery
from ..wire.auth import AuthenticationError, handshake
from ..wire.backoff import Backoff
from ..constants import (
    CANCELLED,
    CONNECT_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    NODE_SHUTDOWN_GRACE,
    PULSE_INTERVAL,
    RECONNECT_DELAY_RANGE,
    TERMINATED,
)
from ..resources import ONE_CPU, Need, Offer, ResourceError
from ..wire import messages as m
from ..wire import serialize
from ..config import NodeConfig
from ..runtime.daemonize import write_pid_file
from ..runtime.duties import Duties, in_background, log_greenlet_errors
from ..wire.files import FileRefused, check_manifest, payload_part, remove_file
from ..runtime.hublink import HubLink
from ..wire.link import ConnectionClosed, set_nodelay
from ..wire.protocol import ProtocolError
from ..wire.tls import TLSError, TLSSocket
from .avail import avail_info
from .service import OFF, SERVING, STOPPING, ServiceWindow, seconds_of_day
from .computation import Computation, ComputationError, NodeJob, NodeSettings, ResourcePool
from .grants import Grants, MemoryLimits, find_gpus, node_memory

if TYPE_CHECKING:
    from OpenSSL import SSL

logger = logging.getLogger(__name__)


class NodeDaemon:
    """A compute node. Tunables are class attributes; the rest comes from its configuration.

    Its computations tell it what becomes of their jobs through ``job_started``,
    ``job_finished``, ``relay``, ``wait_until_sent`` and ``computation_failed`` (the
    ``computation.Daemon`` interface), and read nothing else of it."""

    reconnect_delays = RECONNECT_DELAY_RANGE
    """First and largest pause between attempts to reach the scheduler."""

    zombie_check_interval = 30.0
    """Seconds between checks for computations whose scheduler has been gone too long."""

    service_check_interval = 60.0
    """Most seconds between looks at the clock for the service window (the clock may be
    set, or the host suspended, between its changes)."""

    busy_answer_interval = 60.0
    """Seconds between answers to a scheduler that pings this node while it serves another."""

    shutdown_grace = NODE_SHUTDOWN_GRACE
    """Seconds a node told to stop lets its running jobs finish and their results reach the
    scheduler before it kills them."""

    def __init__(self, config: NodeConfig, tls_context: Optional[SSL.Context] = None) -> None:
        self.config = config
        self.tls_context = tls_context
        self.name = config.name or socket.gethostname()
        self.cpus = config.cpu_count()
        memory = config.memory or node_memory()
        gpus = config.gpus if config.gpus is not None else find_gpus()
        self.offer = Offer(self.cpus, memory, len(gpus), config.resource)
        self.resources = ResourcePool(Grants(self.cpus, memory, gpus, config.resource),
                                      # a group of its own: nodes may share a host and a port
                                      MemoryLimits.detect('dispynode-%d-%d' % (
                                          config.node_port, os.getpid())))
        self.computations: Dict[int, Computation] = {}  # cid -> Computation
        self.jobs: Dict[int, NodeJob] = {}  # jid -> NodeJob queued or running here
        self.unacked: Dict[int, m.JobDone] = {}  # jid -> its end, not yet acknowledged
        self.stored: Dict[int, str] = {}  # jid -> the file of its unacknowledged result
        self.payloads: Optional[gevent.queue.Queue] = None  # the link's payload lane
        # jid -> its messages in the lane: the job's next ones follow them there, in order
        self.in_lane: collections.Counter[int] = collections.Counter()
        self.link: Optional[HubLink] = None
        self.ip_addr = config.ext_ip_addr or config.ip_addr or ''  # as announced
        self.scheduler_id: Optional[str] = None
        self.scheduler_addr: Optional[Tuple[str, int]] = None
        if config.scheduler_node:
            self.scheduler_addr = (config.scheduler_node, config.scheduler_port)
        if config.clean:
            remove_leftovers(config.dest_path_prefix)
        self.scheduler_changed = gevent.event.Event()
        self.last_scheduler_contact = time.monotonic()
        self.pulse_interval = PULSE_INTERVAL
        self.local_token = os.urandom(16)
        self.local_address = 'dispynode-%d-%s' % (os.getpid(), os.urandom(6).hex())
        self.settings = NodeSettings(name=self.name, local_address=self.local_address,
                                     local_token=self.local_token,
                                     max_file_size=config.max_file_size, cpus=self.cpus)
        self.stopped = gevent.event.Event()
        self.duties = Duties(self.stopped)
        self.window = ServiceWindow(config.service_start, config.service_stop,
                                    config.service_end)
        # a node started out of its window waits for its start (one started after its stop
        # too: it takes no jobs until then)
        self.service = SERVING if self.window.state(seconds_of_day()) == SERVING else OFF
        self.service_changed = gevent.event.Event()
        self.served = 0  # computations served to their end (``--serve``)
        self.busy_answered: Dict[Tuple[str, int], float] = {}  # scheduler -> when told busy

    # lifecycle

    def bind(self) -> None:
        """Open the node's sockets (before it detaches, so that errors reach the terminal)."""
        self.local_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.local_listener.bind('\0' + self.local_address)
        self.local_listener.listen(128)
        addresses = [self.config.ip_addr] if self.config.ip_addr else []
        self.udp = discovery.open_sockets(addresses, self.config.node_port)

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; then stop every computation and return the exit
        status: 1 if a duty failed."""
        log_greenlet_errors()
        local_server = StreamServer(self.local_listener, self.serve_local)
        local_server.start()
        udp = self.udp
        for sock in udp.values():
            self.duties.spawn(discovery.receive_loop, sock, self.config.secret,
                              lambda message, source, sock=sock: self.on_datagram(
                                  message, source, sock))
        self.duties.spawn(self.scheduler_connector)
        self.duties.spawn(self.zombie_watchdog)
        self.duties.spawn(self.announce_loop, udp)
        if self.window.limited:
            self.duties.spawn(self.service_watch)
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self.stopped.set)
        if self.config.pid_file:  # ``--daemon``
            write_pid_file(self.config.pid_file)  # now it answers SIGTERM: ready
        logger.info('dispynode %s serving with %s (discovery on UDP port %d)', self.name,
                    self.offer.describe(), self.config.node_port)
        if self.resources.grants.gpu_ids:
            logger.info('GPUs for jobs: %s', ', '.join(self.resources.grants.gpu_ids))
        logger.info(self.resources.memory_limits.describe())
        self.stopped.wait()
        logger.info('stopping')
        self.leave()
        if self.link is not None:
            self.link.close()
        self.duties.kill()
        local_server.stop(timeout=1)
        for computation in list(self.computations.values()):
            computation.close(cleanup=True)
        self.resources.memory_limits.close()
        for sock in udp.values():
            sock.close()
        return self.duties.status

    def leave(self) -> None:
        """Hand the jobs not started back to the scheduler, and give the running ones
        ``shutdown_grace`` seconds to finish and their results time to be acknowledged."""
        self.hand_back_unstarted()
        deadline = time.monotonic() + self.shutdown_grace
        while (self.jobs or self.unacked) and self.link is not None:
            if time.monotonic() > deadline:
                logger.warning('stopping with %d jobs still running', len(self.jobs))
                return
            gevent.sleep(0.05)

    def hand_back_unstarted(self) -> None:
        """The scheduler takes back the jobs not started here, and sends no more."""
        unstarted = [job for job in self.jobs.values() if job.worker is None]
        for job in unstarted:
            job.cancelled = True
            del self.jobs[job.jid]
        self.send(m.NodeLeaving(jobs=[job.jid for job in unstarted]))

    # the daily service window (--service_start, --service_stop, --service_end)

    def service_watch(self) -> None:
        """Follow the service window: at its stop, hand back the jobs not started and take
        no more; at its end, interrupt the running ones (as ``cancel`` does) and leave the
        scheduler; at its start, link again (or take jobs again)."""
        while True:
            now = seconds_of_day()
            self.change_service(self.window.state(now))
            gevent.sleep(min(self.window.next_change(now), self.service_check_interval))

    def change_service(self, state: str) -> None:
        previous, self.service = self.service, state
        if state == previous:
            return
        logger.info('service window: %s (was %s)', state, previous)
        if state == SERVING and previous == STOPPING:
            self.send(m.NodeResumed())
        elif state == STOPPING and previous == SERVING:
            self.hand_back_unstarted()
        elif state == OFF:
            self.hand_back_unstarted()
            for job in list(self.jobs.values()):
                computation = self.computations.get(job.cid)
                if computation is not None:
                    computation.cancel(job)
            gevent.spawn(self.leave_when_done)
        self.service_changed.set()

    def leave_when_done(self) -> None:
        """Out of service: once the interrupted jobs have ended and their ends reached the
        scheduler (or after ``shutdown_grace``), the link closes until service starts."""
        deadline = time.monotonic() + self.shutdown_grace
        while (self.jobs or self.unacked) and self.link is not None \
                and time.monotonic() < deadline and self.service == OFF:
            gevent.sleep(0.05)
        if self.service == OFF and self.link is not None:
            self.link.close()

    # discovery

    def announce_loop(self, udp: Dict[str, socket.socket]) -> None:
        """Announce this node at start, and every ``--ping_interval`` while it has no
        scheduler (its own went away: another may take it)."""
        while True:
            if self.link is None and self.service != OFF:
                self.announce(udp)
            gevent.sleep(self.config.ping_interval)

    def announce(self, udp: Dict[str, socket.socket]) -> None:
        """Tell schedulers on this host's networks that this node exists (by broadcast, never
        from a loopback address); a scheduler that hears it pings back."""
        announcement = m.Announce(port=self.config.node_port)
        source = udp.get(self.config.ip_addr or '') or next(iter(udp.values()), None)
        if source is None or self.config.scheduler_node:
            return  # with --scheduler_node the node connects on its own
        for target in discovery.broadcast_targets(self.config.ip_addr or ''):
            discovery.send(source, self.config.secret, announcement,
                           (target, self.config.scheduler_port))

    def on_datagram(self, ping: m.Message, source: Tuple[str, int],
                    sock: Optional[socket.socket] = None) -> None:
        if type(ping) is not m.Ping:
            return
        if self.link is not None:
            if sock is not None:
                self.answer_busy(ping, source, sock)
            return
        if self.config.scheduler_node:
            return
        if not (discovery.valid_address(ping.addr) and discovery.valid_port(ping.port)):
            logger.debug('ignored a ping with address %r port %r', ping.addr, ping.port)
            return
        address = (ping.addr or source[0], ping.port)
        if address != self.scheduler_addr:
            logger.info('pinged by scheduler at %s:%s', *address)
            self.scheduler_addr = address
        self.scheduler_changed.set()

    def answer_busy(self, ping: m.Ping, source: Tuple[str, int], sock: socket.socket) -> None:
        """Tell a scheduler that pings this node while it serves another which one it serves
        (its programs see a warning naming the node), at most once a ``busy_answer_interval``
        per scheduler."""
        serving = self.link.peer if self.link is not None else ''
        if (ping.addr or source[0], ping.port) == self.scheduler_addr:
            return  # ours, pinging before it noticed the link
        now = time.monotonic()
        if now - self.busy_answered.get(source, -self.busy_answer_interval) \
                < self.busy_answer_interval:
            return
        self.busy_answered[source] = now
        discovery.send(sock, self.config.secret,
                       m.NodeBusy(port=self.config.node_port, serving=serving), source)

    # the scheduler link

    def scheduler_connector(self) -> None:
        """Keep one link to the scheduler, reconnecting with back-off when it breaks."""
        backoff = Backoff(*self.reconnect_delays)
        while True:
            if self.service == OFF:  # outside its service window: it waits
                self.service_changed.clear()
                self.service_changed.wait()
                continue
            if self.scheduler_addr is None:
                self.scheduler_changed.wait()
                self.scheduler_changed.clear()
                continue
            address = self.scheduler_addr
            try:
                linked = self.serve_scheduler(address)
            except AuthenticationError as exc:
                logger.error('scheduler at %s:%s refused this node: %s (is --secret the '
                             "scheduler's --node_secret?)", address[0], address[1], exc)
                linked = False
            except (OSError, ProtocolError, TLSError, gevent.Timeout, ValueError,
                    UnicodeError) as exc:
                logger.info('cannot reach scheduler at %s:%s: %s', address[0], address[1], exc)
                linked = False
            if linked:
                backoff.reset()
            self.scheduler_changed.clear()
            self.scheduler_changed.wait(backoff.next_delay())

    def serve_scheduler(self, address: Tuple[str, int]) -> bool:
        """Connect, authenticate and serve one link; returns True once it was established."""
        source = (self.config.ip_addr, 0) if self.config.ip_addr else None
        sock: Union[socket.socket, TLSSocket]  # TLS, when configured, wraps the plain socket
        sock = socket.create_connection(address, CONNECT_TIMEOUT, source)
        sock.settimeout(None)
        set_nodelay(sock)
        try:
            with gevent.Timeout(HANDSHAKE_TIMEOUT):
                if self.tls_context is not None:
                    sock = TLSSocket(sock, self.tls_context, server_side=False)
                    sock.do_handshake()
                link = HubLink(sock, '%s:%s' % address)
                handshake(link, self.config.secret, 'node', 'scheduler', initiator=True,
                          deadline=time.monotonic() + HANDSHAKE_TIMEOUT)
                self.ip_addr = self.announced_address(sock)
                link.send_now(m.NodeInfo(
                    name=self.name, ip_addr=self.ip_addr, port=self.config.node_port,
                    cpus=self.cpus, platform=platform.platform(),
                    jobs=list(self.jobs) + list(self.unacked),
                    avail=avail_info(self.config.dest_path_prefix),
                    resources=self.offer.to_wire()))
                welcome = link.expect(m.Welcome, time.monotonic() + HANDSHAKE_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        self.adopt_scheduler(welcome)
        logger.info('linked to scheduler at %s:%s', *address)
        writer = gevent.spawn(link.run_writer)
        pulse = gevent.spawn(self.pulse_loop, link)
        payloads = self.payloads = gevent.queue.Queue()
        self.in_lane.clear()
        streamer = gevent.spawn(self.stream_payloads, link, payloads)
        self.link = link
        for done in list(self.unacked.values()):
            self.report(done)
        try:
            link.run_reader(self.on_scheduler_message)
        except ProtocolError as exc:
            logger.error('scheduler at %s:%s sent a bad frame: %s', address[0], address[1], exc)
        except Exception:  # a bug here: logged as one, and the node links again
            logger.exception('internal error: handling a message from the scheduler failed')
        finally:
            self.link = self.payloads = None
            self.last_scheduler_contact = time.monotonic()
            pulse.kill()
            streamer.kill()
            writer.kill()
            while not payloads.empty():  # provisional results not sent: gone
                message, path = payloads.get_nowait()
                if type(message) is m.Provisional and path is not None:
                    remove_file(path)
            logger.info('link to scheduler at %s:%s closed', *address)
        return True

    def announced_address(self, sock: Union[socket.socket, TLSSocket]) -> str:
        return (self.config.ext_ip_addr or self.config.ip_addr
                or sock.getsockname()[0])

    def adopt_scheduler(self, welcome: m.Welcome) -> None:
        """A scheduler other than the last one starts with a clean node."""
        self.pulse_interval = welcome.pulse_interval
        if self.scheduler_id is not None and welcome.scheduler_id != self.scheduler_id:
            logger.info('new scheduler: dropping computations of the previous one')
            self.drop_all_computations()
        self.scheduler_id = welcome.scheduler_id

    def pulse_loop(self, link: HubLink) -> None:
        while not link.closed:
            gevent.sleep(self.pulse_interval)
            pulse = m.Pulse(busy=self.resources.busy)
            avail = avail_info(self.config.dest_path_prefix)
            link.send(pulse, *([m.Avail(avail=avail)] if avail is not None else []))

    def on_scheduler_message(self, message: m.Message) -> None:
        if type(message) is m.Job:
            self.queue_job(message)
        elif type(message) is m.ResultAck:
            for jid in message.ids:
                self.unacked.pop(jid, None)
                path = self.stored.pop(jid, None)
                if path is not None:
                    in_background(remove_file, path)
        elif type(message) is m.CancelJob:
            self.cancel_job(message.jid)
        elif type(message) is m.ComputeFile:
            computation = self.computations.get(message.cid)
            if computation is not None:
                computation.receive_file(message)
        elif type(message) is m.Compute:
            self.install(message)
        elif type(message) is m.SentFile:
            computation = self.computations.get(message.cid)
            if computation is not None:
                computation.receive_sent_file(message)
        elif type(message) is m.ForgetFiles:
            computation = self.computations.get(message.cid)
            if computation is not None:
                computation.forget_files(message.names)
        elif type(message) is m.SetCpus:
            computation = self.computations.get(message.cid)
            if computation is not None:
                computation.set_cpus(message.cpus)
        elif type(message) is m.ReleaseJobs:
            self.release_jobs(message.cid)
        elif type(message) is m.Uninstall:
            self.uninstall(message.cid, message.cleanup)
        else:
            raise ProtocolError('unexpected %r from the scheduler' % (message.kind,))

    def send(self, message: m.Message) -> None:
        link = self.link
        if link is not None and not link.closed:
            link.send(message)

    def relay(self, message: m.Message) -> None:
        """What a running job sent (a provisional result, a file) goes to the scheduler."""
        if type(message) is m.Provisional:
            path = None
            if message.stored:
                path = self.payload_path(message.jid, message.stored)
                if path is None or self.payloads is None:
                    if path is not None:
                        remove_file(path)
                    return
            self.in_order(message, path)
        else:
            self.send(message)

    def report(self, done: m.JobDone) -> None:
        """A job's end to the scheduler: at once, or after its result's stream."""
        self.in_order(done, self.stored.get(done.jid) if done.stored else None)

    def in_order(self, message: m.JobDone | m.Provisional, path: Optional[str]) -> None:
        """A job's result or provisional result, in the order the job made them: one
        with a payload (in the file at ``path``) goes in the link's lane after its stream,
        and so does any that follows it of the same job; others go at once."""
        if path is None and not self.in_lane[message.jid]:
            self.send(message)
        elif self.payloads is not None:
            self.in_lane[message.jid] += 1
            self.payloads.put((message, path))

    def payload_path(self, jid: int, name: str) -> Optional[str]:
        """Where a running job's worker process wrote a payload (None: not a payload's name,
        or the job is gone)."""
        job = self.jobs.get(jid)
        computation = self.computations.get(job.cid) if job is not None else None
        if computation is None or not serialize.PAYLOAD_NAME.fullmatch(name):
            return None
        return os.path.join(computation.directory, name)

    def stream_payloads(self, link: HubLink, payloads: gevent.queue.Queue) -> None:
        """The link's payload lane: each large result streams in chunks, with flow control
        (the scheduler writes them to disk as they come), and the message reporting it
        follows. A result whose file cannot be read ends its job with the reason."""
        for message, path in payloads:
            jid = message.jid
            self.in_lane[jid] -= 1
            if self.in_lane[jid] <= 0:
                del self.in_lane[jid]
            if path is None:
                link.send(message)
                continue
            try:
                if not link.send_file(path, payload_part(jid, message.stored)):
                    return
            except OSError as exc:
                if type(message) is m.Provisional:
                    continue
                reason = 'result of the job could not be read on node %s: %s' % (
                    self.ip_addr or self.name, exc.strerror or exc)
                message = self.unacked[jid] = m.JobDone.failure(jid, TERMINATED, reason)
                self.stored.pop(jid, None)
            finally:
                if type(message) is m.Provisional:
                    remove_file(path)
            link.send(message)

    def wait_until_sent(self) -> None:
        """Back-pressure for bulk data (files a job sends): wait while the link is behind."""
        link = self.link
        if link is not None:
            link.wait_until_drained()

    # computations

    def install(self, request: m.Compute) -> None:
        """A computation to install: its files follow in ``compute_file`` messages, so the
        computation is registered at once and started in a greenlet of its own."""
        cid = request.cid
        existing = self.computations.get(cid)
        if existing is not None:  # sent again after a reconnect
            if existing.loaded:
                self.send(m.ComputeReady(cid=cid))
            return  # still starting: ``start_computation`` answers when it is done
        directory = os.path.join(self.config.dest_path_prefix,
                                 '%d_%s' % (cid, os.urandom(4).hex()))
        try:
            check_manifest(self.config.dest_path_prefix, request.files,
                           self.config.max_file_size)
        except FileRefused as exc:
            self.send(m.ComputeFailed(cid=cid, reason=str(exc)))
            return
        computation = Computation(request, directory, self.settings, self.resources, self)
        self.computations[cid] = computation
        gevent.spawn(self.start_computation, computation)

    def start_computation(self, computation: Computation) -> None:
        cid, name = computation.cid, computation.name
        try:
            computation.start(self.ip_addr)
        except ComputationError as exc:
            if self.computations.get(cid) is computation:  # not merely uninstalled meanwhile
                logger.warning('computation %s (%s) failed to install: %s', cid, name, exc)
            self.computation_failed(computation, str(exc))
            return
        if self.computations.get(cid) is not computation:  # uninstalled while it started
            computation.close(cleanup=True)
            return
        logger.info('installed computation %s (%s)', cid, name)
        self.send(m.ComputeReady(cid=cid))

    def uninstall(self, cid: int, cleanup: bool) -> None:
        """Forget the computation at once (so that one installed again under its id, by
        ``resetup_node``, is a new one); it closes in a greenlet of its own."""
        computation = self.computations.pop(cid, None)
        if computation is None:
            return
        for jid in [jid for jid, job in self.jobs.items() if job.cid == cid]:
            job = self.jobs.pop(jid)
            computation.cancel(job)
        gevent.spawn(self.close_computation, computation, cleanup)
        if computation.loaded:
            self.served += 1
            if self.served == self.config.serve:  # --serve N
                logger.info('served %d computations (--serve): stopping', self.served)
                self.stopped.set()

    @staticmethod
    def close_computation(computation: Computation, cleanup: bool) -> None:
        computation.close(cleanup)
        logger.info('uninstalled computation %s (%s)', computation.cid, computation.name)

    def computation_failed(self, computation: Computation, reason: str) -> None:
        """Setup failed or the setup process died. The scheduler hears it first, so it sends
        no more of its jobs here and puts back those that never started; then this node's
        jobs of it end with the reason."""
        if self.computations.get(computation.cid) is computation:
            del self.computations[computation.cid]
            self.send(m.ComputeFailed(cid=computation.cid, reason=reason))
            for job in [job for job in self.jobs.values() if job.cid == computation.cid]:
                self.job_finished(job, m.JobDone.failure(job.jid, TERMINATED, reason))
        computation.close(cleanup=True)

    def drop_all_computations(self) -> None:
        for cid in list(self.computations):
            self.uninstall(cid, cleanup=True)
        self.unacked.clear()
        self.stored.clear()  # with their computations' directories

    def zombie_watchdog(self) -> None:
        """Drop computations of a scheduler that has been gone for ``--zombie_interval``."""
        while True:
            gevent.sleep(self.zombie_check_interval)
            idle = time.monotonic() - self.last_scheduler_contact
            if self.link is None and self.computations and idle > self.config.zombie_interval * 60:
                logger.info('no scheduler for %d minutes: dropping its computations', idle // 60)
                self.drop_all_computations()

    # jobs

    def queue_job(self, request: m.Job) -> None:
        jid, cid = request.jid, request.cid
        if jid in self.jobs or jid in self.unacked:
            return  # sent again after a reconnect; already here
        computation = self.computations.get(cid)
        try:
            need = Need.from_wire(request.need)
        except ResourceError as exc:
            need, refusal = ONE_CPU, str(exc)
        else:
            refusal = '' if self.resources.grants.covers(need) else (
                'node %s cannot give the job %s; it has %s'  # the scheduler thought otherwise
                % (self.name, need.describe(), self.offer.describe()))
        job = self.jobs[jid] = NodeJob(request, need)
        if computation is None or refusal:
            self.job_finished(job, m.JobDone.failure(
                jid, TERMINATED, refusal or 'computation %d is not installed on this node'
                % cid))
            return
        lost = [name for name in request.values if name in computation.lost_values]
        if lost:  # the scheduler sends them again with the next job that needs them
            self.job_finished(job, m.JobDone.failure(
                jid, TERMINATED, 'an argument of this job could not be written on node %s: %s'
                % (self.config.ip_addr or self.name, computation.lost_values[lost[0]])))
            self.send(m.ValuesLost(cid=cid, names=lost))
            return
        computation.put_job(job)

    def cancel_job(self, jid: int) -> None:
        job = self.jobs.get(jid)
        if job is None:
            return
        if job.worker is None:
            job.cancelled = True
            self.job_finished(job, m.JobDone.failure(job.jid, CANCELLED, 'job was cancelled'))
        else:
            self.computations[job.cid].cancel(job)

    def release_jobs(self, cid: int) -> None:
        """The scheduler takes back the computation's jobs that have not started here."""
        unstarted = [job for job in self.jobs.values() if job.cid == cid and job.worker is None]
        for job in unstarted:
            job.cancelled = True
            del self.jobs[job.jid]
        self.send(m.JobsReleased(cid=cid, jobs=[job.jid for job in unstarted]))

    def job_started(self, job: NodeJob, start_time: float) -> None:
        self.send(m.JobStarted(jid=job.jid, start_time=start_time))

    def job_finished(self, job: NodeJob, done: m.JobDone) -> None:
        """Report a job's end, and keep the report until the scheduler acknowledges it. Ends
        of jobs no longer tracked here (their computation was dropped) go nowhere."""
        if self.jobs.pop(job.jid, None) is not job:
            return
        if done.stored:
            computation = self.computations.get(job.cid)
            if computation is None or not serialize.PAYLOAD_NAME.fullmatch(done.stored):
                return  # dropped with its computation
            self.stored[job.jid] = os.path.join(computation.directory, done.stored)
        self.unacked[job.jid] = done
        self.report(done)

    # a computation's processes, connecting back

    def serve_local(self, sock: socket.socket, address: object) -> None:
        """A setup or worker process of a computation connecting back to this daemon."""
        link = HubLink(sock, 'local process')
        try:
            hello = link.expect(m.WorkerHello, time.monotonic() + HANDSHAKE_TIMEOUT)
        except (OSError, ProtocolError, ConnectionClosed) as exc:
            logger.warning('local connection dropped: %s', exc)
            return
        computation = self.computations.get(hello.cid)
        if computation is None or not hmac.compare_digest(hello.token, self.local_token):
            return
        link.authenticated()
        if hello.role == 'setup':
            computation.serve_setup_process(link)
        else:
            computation.serve_worker(link, hello.pid)


COMPUTATION_DIRECTORY = re.compile(r'[0-9]+_[0-9a-f]{8}')
"""How computations' directories are named in ``dest_path_prefix``."""


def remove_leftovers(dest_path_prefix: str) -> None:
    """``--clean``: computations' directories a previous run left (only those: the prefix
    may hold anything else)."""
    try:
        entries = os.listdir(dest_path_prefix)
    except OSError:
        return
    for entry in entries:
        if COMPUTATION_DIRECTORY.fullmatch(entry):
            shutil.rmtree(os.path.join(dest_path_prefix, entry), ignore_errors=True)
            logger.info('removed %s left by a previous run (--clean)', entry)
