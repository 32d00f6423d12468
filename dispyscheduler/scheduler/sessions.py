"""The scheduler's side of each peer's link, and the registry through which parts reach them.

A ``NodeSession`` is one node's link with what belongs to it (the acknowledgements of its
results that wait to travel with the next job); a ``ClientSession`` is one client's link to its
cluster. Each offers the messages that peer may be sent as named calls, so that no other part
writes a message by hand. ``Peers`` finds a node's session by its key and a cluster's client
by the cluster's id: the model never holds a link.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import gevent

from ..constants import ACK_BATCH, TERMINATED
from ..wire import messages as m
from ..runtime.hublink import HubLink
from ..wire.files import IncomingPayloads, payload_part, remove_file
from ..wire.protocol import ProtocolError
from .model import upload_path

if TYPE_CHECKING:
    from .model import Cluster, Node
    from .queues import Job

logger = logging.getLogger(__name__)


class NodeSession:
    """One node's link, from the scheduler's side."""

    def __init__(self, link: HubLink, key: str) -> None:
        self.link = link
        self.key = key
        self.pending_acks: list[int] = []  # saved results the node may forget
        self.uploads_sent: set[tuple[int, str]] = set()  # (cid, ref) the node has (a job's)
        self.lane: collections.deque[Job] = collections.deque()  # jobs waiting for values
        self.streamer: Optional[gevent.Greenlet] = None  # sends the lane's values and jobs
        self.payloads = IncomingPayloads()  # large results arriving

    def __repr__(self) -> str:
        return '<NodeSession %s>' % (self.key,)

    @property
    def closed(self) -> bool:
        return self.link.closed

    def close(self) -> None:
        self.link.close()

    def run(self, handle: Callable[[m.Message], Any]) -> str:
        """Serve the link until it ends, ``handle(message)`` for each message; returns why
        it ended."""
        return serve_link(self.link, handle, 'node %s' % (self.key,))

    def welcome(self, pulse_interval: float, scheduler_id: str) -> None:
        self.link.send(m.Welcome(pulse_interval=pulse_interval, scheduler_id=scheduler_id))

    def send_job(self, job: Job) -> None:
        """The job, with the acknowledgements waiting (in the same write). A job that needs
        values (``refs``) this node has not had yet waits for them in the slow lane, which
        streams them, a chunk or two at a time, then sends it."""
        if job.refs and (self.lane or any((job.cluster.cid, ref) not in self.uploads_sent
                                          for ref in job.refs)):
            self.lane.append(job)
            if self.streamer is None:
                self.streamer = gevent.spawn(self.stream_lane)
            return
        self.link.send(job_message(job), *self.take_acknowledgements())

    def stream_lane(self) -> None:
        """Send the lane's jobs in order, each after the values it needs (each value once
        per installation of the computation on this node). A job taken off this node
        meanwhile (cancelled, the node lost) is not sent."""
        try:
            while self.lane and not self.link.closed:
                job = self.lane[0]
                for ref in job.refs:
                    if not self.stream_value(job.cluster, ref):
                        return
                self.lane.popleft()
                if job.node is not None and job.node.key == self.key and not job.cancelling:
                    self.link.send(job_message(job), *self.take_acknowledgements())
        finally:
            self.streamer = None

    def stream_value(self, cluster: Cluster, ref: str) -> bool:
        """One value to the node's copy of the computation, unless it has it; False if the
        link closed meanwhile."""
        key = (cluster.cid, ref)
        if key in self.uploads_sent or ref not in cluster.uploads:
            return True
        try:
            if not self.send_upload(cluster, ref, value=True):
                return False
        except OSError as exc:  # its job fails on the node, saying the value is missing
            logger.error('value %s of cluster %s could not be read: %s', ref, cluster.cid, exc)
        self.uploads_sent.add(key)
        return True

    def send_upload(self, cluster: Cluster, ref: str, value: bool) -> bool:
        """A cluster's upload to the node's copy of the computation, a chunk at a time
        (``HubLink.send_file``); False if the link closed meanwhile."""
        name, _, mode = cluster.uploads[ref]
        return self.link.send_file(upload_path(cluster, ref), lambda offset, data, last, size:
                                   m.SentFile(cid=cluster.cid, name=name, size=size, mode=mode,
                                              offset=offset, data=data, last=last, value=value))

    def values_lost(self, cluster: Cluster, names: list[str]) -> None:
        """The node could not write these values: sent again when a job needs them."""
        lost = set(names)
        self.uploads_sent.difference_update((cluster.cid, ref) for ref, (name, _, _)
                                            in cluster.uploads.items() if name in lost)

    def forget_values(self, cid: int, names: dict[str, str]) -> None:
        """Values (ref -> file name) no job needs any more: the node deletes those it was
        sent."""
        sent = [name for ref, name in names.items() if (cid, ref) in self.uploads_sent]
        if sent:
            self.uploads_sent.difference_update((cid, ref) for ref in names)
            self.link.send(m.ForgetFiles(cid=cid, names=sent))

    def cancel_job(self, jid: int) -> None:
        self.link.send(m.CancelJob(jid=jid))

    def install(self, cid: int, name: str, code: bytes, files: list[m.FileSpec], cpus: int,
                setup_args: Optional[bytes]) -> None:
        self.forget_uploads(cid)
        self.link.send(m.Compute(cid=cid, name=name, code=code, files=files, cpus=cpus,
                                 setup_args=setup_args))

    def send_computation_file(self, cid: int, name: str, path: str) -> bool:
        """One of a computation's files, a chunk at a time (``HubLink.send_file``); False
        if the link closed meanwhile."""
        return self.link.send_file(path, lambda offset, data, last, size: m.ComputeFile(
            cid=cid, name=name, offset=offset, data=data, last=last))

    def forget_uploads(self, cid: int) -> None:
        """The node's copy of the computation goes (or starts afresh): so do its uploads."""
        self.uploads_sent = {key for key in self.uploads_sent if key[0] != cid}

    def uninstall(self, cid: int, cleanup: bool) -> None:
        self.forget_uploads(cid)
        self.link.send(m.Uninstall(cid=cid, cleanup=cleanup))

    def set_cpus(self, cid: int, cpus: int) -> None:
        self.link.send(m.SetCpus(cid=cid, cpus=cpus))

    def release_jobs(self, cid: int) -> None:
        self.link.send(m.ReleaseJobs(cid=cid))

    def acknowledge_results(self, ids: Iterable[int]) -> None:
        """Saved results the node may forget. The acknowledgement travels with the next job
        sent to the node, or at the next ``flush_acknowledgements``, or at once when many
        are waiting."""
        self.pending_acks.extend(ids)
        if len(self.pending_acks) >= ACK_BATCH:
            self.flush_acknowledgements()

    def acknowledge_result_now(self, jid: int) -> None:
        """A repeated result, of a job that ended already: nothing to save first."""
        self.link.send(m.ResultAck(ids=[jid]))

    def flush_acknowledgements(self) -> None:
        for message in self.take_acknowledgements():
            self.link.send(message)

    def take_acknowledgements(self) -> tuple[m.ResultAck, ...]:
        """The waiting acknowledgements as a message to send (none if none wait)."""
        if not self.pending_acks:
            return ()
        acknowledgements, self.pending_acks = self.pending_acks, []
        return (m.ResultAck(ids=acknowledgements),)


def job_message(job: Job) -> m.Job:
    uploads = job.cluster.uploads
    return m.Job(jid=job.jid, cid=job.cluster.cid, args=job.args, timeout=job.timeout,
                 files=list(job.files),
                 values=[uploads[ref][0] for ref in job.refs if ref in uploads],
                 need=job.need.to_wire())


class ClientSession:
    """One client's link to its cluster, from the scheduler's side."""

    def __init__(self, link: HubLink, cid: int) -> None:
        self.link = link
        self.cid = cid
        # results and provisional results to send in order, each after its stream if it
        # has one: (message, its file or None, whether the file goes once sent)
        self.lane: collections.deque[tuple[m.JobEnd | m.ProvisionalResult, Optional[str],
                                           bool]] = collections.deque()
        self.in_lane: collections.Counter[int] = collections.Counter()  # uid -> entries
        self.streamer: Optional[gevent.Greenlet] = None

    def __repr__(self) -> str:
        return '<ClientSession %s of cluster %s>' % (self.link.peer, self.cid)

    @property
    def peer(self) -> str:
        return self.link.peer

    def close(self) -> None:
        self.link.close()

    def run(self, handle: Callable[[m.Message], Any]) -> str:
        """Serve the link until it ends, ``handle(message)`` for each message; returns why
        it ended."""
        return serve_link(self.link, handle, 'the client of cluster %s' % (self.cid,))

    def cluster_ok(self, credential: bytes, max_file_size: int, max_jobs: int,
                   max_job_bytes: int) -> None:
        self.link.send(m.ClusterOk(cid=self.cid, max_file_size=max_file_size,
                                   credential=credential, max_jobs=max_jobs,
                                   max_job_bytes=max_job_bytes))

    def job_ended(self, message: m.JobEnd, path: Optional[str] = None) -> None:
        """A job's end; one with a large result (``stored``, in the file at ``path``) after
        its stream."""
        if message.stored and path is None:  # a bug: it should have been kept
            logger.error('internal error: the result of job %s of cluster %s is missing',
                         message.uid, self.cid)
        self.in_order(message, path if message.stored else None, False)

    def in_order(self, message: m.JobEnd | m.ProvisionalResult, path: Optional[str],
                 remove: bool) -> None:
        """A job's (provisional) result, in the order the node sent them: one with a large
        result (in the file at ``path``, removed once sent if ``remove``) goes in the lane,
        one stream at a time, a chunk or two in flight, and so does any that follows it of
        the same job; others go at once."""
        if path is None and not self.in_lane[message.uid]:
            self.link.send(message)
            return
        self.in_lane[message.uid] += 1
        self.lane.append((message, path, remove))
        if self.streamer is None:
            self.streamer = gevent.spawn(self.stream_lane)

    def stream_lane(self) -> None:
        try:
            while self.lane and not self.link.closed:
                message, path, remove = self.lane.popleft()
                self.in_lane[message.uid] -= 1
                if self.in_lane[message.uid] <= 0:
                    del self.in_lane[message.uid]
                if path is not None:
                    try:
                        if not self.link.send_file(path, payload_part(message.uid,
                                                                      message.stored)):
                            return
                    except OSError as exc:
                        logger.error('the result of job %s of cluster %s could not be read: '
                                     '%s', message.uid, self.cid, exc)
                        if type(message) is not m.JobEnd:  # a provisional result: dropped
                            continue
                        message = m.JobEnd.failure(
                            message.uid, TERMINATED, 'its result was lost at the scheduler: %s'
                            % (exc.strerror or exc,), message.start_time, message.ip_addr,
                            message.tag)
                    finally:
                        if remove:
                            remove_file(path)
                self.link.send(message)
        finally:
            self.streamer = None
            if self.link.closed:  # provisional results not sent are gone
                for _, path, remove in self.lane:
                    if remove and path is not None:
                        remove_file(path)
                self.lane.clear()
                self.in_lane.clear()

    def submitted(self, uids: list[int]) -> None:
        self.link.send(m.Submitted(uids=uids))

    def jobs_pending(self, jobs: list[m.PendingJob]) -> None:
        self.link.send(m.JobsPending(jobs=jobs))

    def job_started(self, uid: int, status: int, ip_addr: str, start_time: float) -> None:
        self.link.send(m.JobStatus(uid=uid, status=status, ip_addr=ip_addr,
                                   start_time=start_time))

    def provisional_result(self, uid: int, provisional: m.Provisional, ip_addr: str,
                           path: Optional[str] = None) -> None:
        """A provisional result; a large one (in the file at ``path``, removed once sent)
        after its stream."""
        self.in_order(m.ProvisionalResult(uid=uid, result=provisional.result, ip_addr=ip_addr,
                                          stored=provisional.stored), path, True)

    def file_part(self, uid: int, chunk: m.JobFile) -> None:
        self.link.send(m.FilePart(uid=uid, name=chunk.name, offset=chunk.offset,
                                  data=chunk.data, last=chunk.last))

    def node_status(self, node: Node, status: int, reason: str = '') -> None:
        self.link.send(m.NodeStatus(ip_addr=node.ip_addr, name=node.name, cpus=node.cpus,
                                    status=status, platform=node.platform, reason=reason,
                                    avail=node.avail))

    def offer_node(self, node: Node) -> None:
        self.link.send(m.NodeOffer(key=node.key, ip_addr=node.ip_addr, name=node.name,
                                   cpus=node.cpus, platform=node.platform, avail=node.avail))

    def warn(self, reason: str) -> None:
        self.link.send(m.ClusterWarning(reason=reason))

    def node_control_done(self, rid: int, value: int, reason: str = '') -> None:
        self.link.send(m.NodeControlDone(rid=rid, value=value, reason=reason))

    def closed(self) -> None:
        """The cluster is closed, as its client asked."""
        self.link.send(m.Closed())


def serve_link(link: HubLink, handle: Callable[[m.Message], Any], who: str) -> str:
    """A session's loop: its writer greenlet and its reader, until the link ends. A peer that
    breaks the protocol loses its link; a handler that fails is a bug here, logged as one
    with its traceback, and ends that link only. Returns why the link ended."""
    writer = gevent.spawn(link.run_writer)
    try:
        link.run_reader(handle)
        return 'its connection closed'
    except ProtocolError as exc:
        logger.warning('%s sent a bad frame: %s', who, exc)
        return 'it sent a bad frame (%s)' % (exc,)
    except Exception:
        logger.exception('internal error: handling a message from %s failed', who)
        return 'the scheduler failed to handle its message (an internal error)'
    finally:
        writer.kill(block=False)


class Peers:
    """The live sessions: nodes by key, clients by their cluster's id."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeSession] = {}
        self.clients: dict[int, ClientSession] = {}

    def node(self, key: str) -> Optional[NodeSession]:
        return self.nodes.get(key)

    def client(self, cid: int) -> Optional[ClientSession]:
        return self.clients.get(cid)

    def node_joined(self, session: NodeSession) -> None:
        self.nodes[session.key] = session

    def node_left(self, session: NodeSession) -> None:
        if self.nodes.get(session.key) is session:
            del self.nodes[session.key]

    def client_attached(self, session: ClientSession) -> Optional[ClientSession]:
        """The session now serving a cluster; returns the one it replaces, if any (a client
        back on a new connection before its old one was noticed)."""
        old = self.clients.get(session.cid)
        self.clients[session.cid] = session
        return old

    def client_detached(self, session: ClientSession) -> bool:
        """Whether ``session`` was the one serving its cluster (it is not any more)."""
        if self.clients.get(session.cid) is session:
            del self.clients[session.cid]
            return True
        return False

    def close_all(self) -> None:
        for session in list(self.nodes.values()) + list(self.clients.values()):
            session.close()
