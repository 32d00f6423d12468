"""The scheduler's side of node links: joining, installing computations, results, loss.

A mixin of ``server.Scheduler``: one greenlet per node link reads its messages top to bottom
and turns each into an event on the model, saving what must survive a restart in the store.
A result is acknowledged to its node only once it is saved.
"""

import logging
import os
import time

import gevent

from ..constants import ACK_BATCH, ACK_DELAY, CANCELLED, NODE_CLOSED, NODE_INITIALIZED
from ..files import read_chunks, safe_relative_path
from ..protocol import ProtocolError
from .model import READY

logger = logging.getLogger(__name__)


class NodeSide:
    def serve_node(self, sock, address):
        link = self.accept(sock, self.node_tls, self.options.node_secret, 'node', address)
        if link is None:
            return
        try:
            info = link.expect('node_info', time.monotonic() + self.handshake_timeout)
            held = set(info['jobs'])
        except (ProtocolError, OSError, TypeError) as exc:
            logger.warning('dropped node connection from %s: %s', address[0], exc)
            return
        key = '%s:%d' % (info['ip_addr'], info['port'])
        old = self.state.nodes.get(key)
        if old is not None:
            self.node_lost(old, 'the node connected again')
        node, clusters = self.state.add_node(key, info['name'], info['ip_addr'], info['port'],
                                             max(1, info['cpus']))
        node.platform = info['platform']
        node.link = link
        node.pending_acks = []
        node.acknowledge_results = lambda ids: self.acknowledge_results(node, ids)
        node.last_heard = time.monotonic()
        writer = gevent.spawn(link.run_writer)
        link.send('welcome', {'pulse_interval': self.options.pulse_interval,
                              'scheduler_id': self.scheduler_id})
        requeued = self.state.reattach(node, held)
        for job in requeued:
            self.store.job_moved(job)
        stale = held.difference(node.jobs)
        if stale:
            logger.info('node %s came back holding %d jobs that run elsewhere now or have '
                        'ended; told it to drop them', key, len(stale))
        for jid in stale:
            link.send('cancel_job', {'jid': jid})
        for cluster in clusters:
            self.offer_or_install(node, cluster)
        for cluster in {job.cluster for job in requeued}:
            self.dispatch(self.state.place(cluster))
        logger.info('node %s (%s) joined with %d CPUs%s', key, node.name, node.cpus,
                    ', holding %d jobs' % len(node.jobs) if node.jobs else '')
        reason = 'its connection closed'
        try:
            link.run_reader(lambda kind, body: self.on_node_message(node, kind, body))
        except ProtocolError as exc:
            reason = 'it sent a bad frame (%s)' % (exc,)
        except Exception:  # a bug here, not the node's doing: said so, with its traceback
            logger.exception('internal error: handling a message from node %s failed', key)
            reason = 'the scheduler failed to handle its message (an internal error)'
        finally:
            self.node_lost(node, reason)
            writer.kill(block=False)

    def offer_or_install(self, node, cluster):
        """Install a cluster's computation on a node, or first ask the client's NodeAllocate
        how many of the node's CPUs to use (the answer comes as ``node_allocation``)."""
        if not cluster.allocate:
            self.install(node, cluster)
        elif cluster.owner is not None:
            cluster.owner.send('node_offer', {'key': node.key, 'ip_addr': node.ip_addr,
                                              'name': node.name, 'cpus': node.cpus,
                                              'platform': node.platform})

    def install(self, node, cluster):
        """Send the computation and then its files (from the scheduler's copy, in chunks)."""
        cpus, setup_args, node_files = cluster.allocations.get(node.key, (0, None, ()))
        files = [entry for entry in cluster.files
                 if entry[0] not in cluster.node_files or entry[0] in node_files]
        node.link.send('compute', {'cid': cluster.cid, 'name': cluster.name,
                                   'code': cluster.code, 'files': files, 'cpus': cpus,
                                   'setup_args': setup_args})
        if files:
            gevent.spawn(self.stream_files, node, cluster, files)

    def stream_files(self, node, cluster, files):
        link = node.link
        for name, _, _ in files:
            path = os.path.join(cluster.directory, safe_relative_path(name))
            for offset, data, last in read_chunks(path):
                if link.closed:
                    return
                link.send('compute_file', {'cid': cluster.cid, 'name': name, 'offset': offset,
                                           'data': data, 'last': last})
                link.wait_until_drained()

    def on_node_message(self, node, kind, body):
        node.last_heard = time.monotonic()
        if kind == 'job_done':
            job = node.jobs.get(body['jid'])
            if job is None:  # a repeat, or a job that ended otherwise: nothing to keep
                node.link.send('result_ack', {'ids': [body['jid']]})
                return
            self.deliver(job, node, body)  # first: the result leaves at once
            started = body['start_time']
            _, dispatches = self.state.job_done(
                node, body['jid'], body['status'],
                body['end_time'] - started if started is not None else None)
            self.store.acknowledge_when_durable(node, node.acknowledge_results, body['jid'])
            self.dispatch(dispatches)
        elif kind == 'job_started':
            job = self.state.job_started(node, body['jid'], body['start_time'])
            if job is not None and job.cluster.owner is not None:
                job.cluster.owner.send('job_status', {
                    'uid': job.uid, 'status': job.status, 'ip_addr': node.ip_addr,
                    'start_time': body['start_time']})
        elif kind == 'provisional':
            job = node.jobs.get(body['jid'])
            if job is not None and job.cluster.owner is not None:
                job.cluster.owner.send('provisional_result', {
                    'uid': job.uid, 'result': body['result'], 'ip_addr': node.ip_addr})
        elif kind == 'job_file':
            job = node.jobs.get(body['jid'])
            if job is not None and job.cluster.owner is not None:
                job.cluster.owner.send('file_part', {
                    'uid': job.uid, 'name': body['name'], 'offset': body['offset'],
                    'data': body['data'], 'last': body['last']})
        elif kind == 'pulse':
            node.busy = body['busy']
        elif kind == 'compute_ready':
            cluster = self.state.clusters.get(body['cid'])
            if cluster is None:  # the cluster closed while the node installed it
                node.link.send('uninstall', {'cid': body['cid'], 'cleanup': True})
                return
            dispatches = self.state.compute_ready(node, cluster.cid)
            self.notify_node(cluster, node, NODE_INITIALIZED)
            self.dispatch(dispatches)
        elif kind == 'compute_failed':
            cluster, stranded, requeued, dispatches = self.state.compute_failed(node,
                                                                                body['cid'])
            if cluster is not None:
                self.warn_client(cluster, 'computation could not be set up on node %s: %s'
                                 % (node.key, body['reason']))
                self.handle_lost_jobs(requeued, stranded, dispatches, 'job was submitted to '
                                      'node %s, where the computation could not be set up'
                                      % (node.key,))
        elif kind == 'node_leaving':
            requeued, dispatches = self.state.node_leaving(node, set(body['jobs']))
            logger.info('node %s is shutting down; %d unstarted jobs handed back', node.key,
                        len(requeued))
            self.handle_lost_jobs(requeued, [], dispatches, '')
        else:
            raise ProtocolError('unexpected %r from a node' % (kind,))

    def node_lost(self, node, reason):
        """A node's link is gone: its jobs go back to the queue or end, as their cluster asks."""
        node.link.close()
        if self.state.nodes.get(node.key) is not node:
            return
        used_by = [self.state.clusters[cid] for cid, state in node.clusters.items()
                   if state == READY and cid in self.state.clusters]
        requeued, lost, dispatches = self.state.remove_node(node)
        for cluster in used_by:
            self.notify_node(cluster, node, NODE_CLOSED)
        logger.warning('node %s lost: %s (%d jobs requeued, %d ended)', node.key, reason,
                       len(requeued), len(lost))
        self.handle_lost_jobs(requeued, lost, dispatches, 'node %s (%s) was lost while '
                              'running this job: %s' % (node.key, node.name, reason))

    def acknowledge_results(self, node, ids):
        """Saved results the node may forget. The acknowledgement travels with the next job
        sent to the node (``dispatch``), or after ``ACK_DELAY`` (``flush_acknowledgements``),
        or at once when many are waiting."""
        node.pending_acks.extend(ids)
        if len(node.pending_acks) >= ACK_BATCH:
            self.send_acknowledgements(node)

    def send_acknowledgements(self, node):
        for message in self.take_acknowledgements(node):
            node.link.send(*message)

    def take_acknowledgements(self, node):
        """The node's waiting acknowledgements as a message to send (none if none wait)."""
        if not node.pending_acks:
            return ()
        acknowledgements, node.pending_acks = node.pending_acks, []
        return (('result_ack', {'ids': acknowledgements}),)

    def flush_acknowledgements(self):
        while True:
            gevent.sleep(ACK_DELAY)
            for node in list(self.state.nodes.values()):
                self.send_acknowledgements(node)

    def handle_lost_jobs(self, requeued, lost, dispatches, reason):
        for job in requeued:
            self.store.job_moved(job)
        for job in lost:
            self.end_job(job, job.status, 'job was cancelled' if job.cancelling else
                         reason if job.status == CANCELLED else
                         '%s; it has now lost %d nodes and is given up'
                         % (reason, job.lost_nodes))
        self.dispatch(dispatches)

    def dispatch(self, dispatches):
        for node, job in dispatches:
            node.link.send('job', {'jid': job.jid, 'cid': job.cluster.cid, 'args': job.args,
                                   'timeout': job.timeout, 'files': job.files},
                           *self.take_acknowledgements(node))  # in the same write
            if job.submitted_at is not None:  # its first placement
                self.metrics.job_placed(time.monotonic() - job.submitted_at)
                job.submitted_at = None
            self.store.job_moved(job)
