"""The scheduler's side of client links: new and resumed clusters, submissions, results.

A mixin of ``server.Scheduler``. A cluster outlives its client's connection: a client that
reconnects (or a new process holding the cluster's credential) resumes it and is sent every
result it has not acknowledged. Submissions are acknowledged once saved.
"""

import hmac
import logging
import os
import shutil
import socket
import tempfile
import time

import gevent

from ..discovery import resolve
from ..constants import CANCELLED, FILE_TIMEOUT, NODE_INITIALIZED, TERMINATED
from ..files import (MAX_FILES, FileRefused, IncomingFiles, check_manifest_entry, check_size,
                     safe_relative_path)
from ..protocol import ProtocolError
from .model import FAILED, OFFERED, READY

logger = logging.getLogger(__name__)


class ClientSide:
    def serve_client(self, sock, address):
        link = self.accept(sock, self.cluster_tls, self.options.cluster_secret, 'client',
                           address)
        if link is None:
            return
        try:
            kind, request = link.recv_now(time.monotonic() + self.handshake_timeout)
            if kind == 'cluster_new':
                cluster = self.new_cluster(link, request)
            elif kind == 'cluster_resume':
                cluster = self.resumed_cluster(request)
            else:
                raise ProtocolError('expected cluster_new or cluster_resume, got %r' % (kind,))
        except FileRefused as exc:
            logger.warning('refused cluster from %s: %s', address[0], exc)
            link.send_now('error', {'reason': str(exc)})
            return
        except (ProtocolError, OSError) as exc:
            logger.warning('dropped client connection from %s: %s', address[0], exc)
            link.send_now('error', {'reason': str(exc)}) if not link.closed else None
            return
        old = cluster.owner
        cluster.owner = link
        cluster.orphaned_since = None
        if old is not None:
            old.close()  # a client back on a new connection before its old one was noticed
        writer = gevent.spawn(link.run_writer)
        link.send('cluster_ok', {'cid': cluster.cid, 'max_file_size': self.options.max_file_size,
                                 'credential': self.credentials[cluster.cid]})
        if kind == 'cluster_new':
            logger.info('cluster %s (%s) from %s', cluster.cid, cluster.name, address[0])
            for node in self.state.nodes.values():
                if cluster.cid in node.clusters:
                    self.offer_or_install(node, cluster)
        else:
            logger.info('cluster %s (%s) resumed from %s; %d results to deliver', cluster.cid,
                        cluster.name, address[0], len(cluster.results))
            if cluster.dormant:
                for node in self.state.revive(cluster):
                    self.offer_or_install(node, cluster)
            self.catch_up(cluster)
        try:
            link.run_reader(lambda kind, body: self.on_client_message(cluster, kind, body))
        except ProtocolError as exc:
            logger.warning('client of cluster %s sent a bad frame: %s', cluster.cid, exc)
        finally:
            writer.kill(block=False)
            if cluster.owner is link:
                cluster.owner = None
                cluster.orphaned_since = time.monotonic()
                if cluster.cid in self.state.clusters:
                    logger.info('client of cluster %s left without closing it', cluster.cid)

    def new_cluster(self, link, request):
        """Receive a new cluster (computation, files) and save it before answering."""
        patterns = resolve_patterns(request['nodes'])
        if not all(isinstance(name, str) for name in request['node_files']):
            raise ProtocolError('cluster_new: node_files must be file names')
        staging = self.receive_cluster_files(link, request['files'])
        cluster, _ = self.state.add_cluster(request['name'], request['code'], patterns,
                                            request['reentrant'], request['cleanup'],
                                            request['allocate'])
        cluster.files = request['files']
        cluster.node_files = set(request['node_files'])
        self.prepare_acknowledgements(cluster)
        if staging is not None:
            cluster.directory = os.path.join(self.options.dest_path_prefix, str(cluster.cid))
            shutil.rmtree(cluster.directory, ignore_errors=True)
            os.rename(staging, cluster.directory)
        credential = self.credentials[cluster.cid] = os.urandom(16)
        self.store.put_cluster(cluster, credential)
        self.wait_until_durable()
        return cluster

    def prepare_acknowledgements(self, cluster):
        def acknowledge_submits(uids):
            # a job that has ended meanwhile needs none: its result says it was received
            waiting = [uid for uid in uids if uid in cluster.jobs]
            if waiting and cluster.owner is not None:
                cluster.owner.send('submitted', {'uids': waiting})
        cluster.acknowledge_submits = acknowledge_submits

    def resumed_cluster(self, request):
        cluster = self.state.clusters.get(request['cid'])
        credential = self.credentials.get(request['cid'], b'')
        if cluster is None or not hmac.compare_digest(credential, request['credential']):
            raise ProtocolError('no cluster %s with that credential here (it was closed, or '
                                'cleaned up after --zombie_interval)' % (request['cid'],))
        return cluster

    def catch_up(self, cluster):
        """A resumed cluster's client gets what it missed: the jobs still to end, their
        results so far, the nodes, node offers."""
        cluster.owner.send('jobs_pending', {'jobs': [[job.uid, job.tag]
                                                     for job in cluster.jobs.values()]})
        for message in list(cluster.results.values()):
            cluster.owner.send('job_end', message)
        for node in self.state.nodes.values():
            state = node.clusters.get(cluster.cid)
            if state == READY:
                self.notify_node(cluster, node, NODE_INITIALIZED)
            elif state == OFFERED:
                self.offer_or_install(node, cluster)

    def receive_cluster_files(self, link, manifest):
        """Receive a new cluster's files (announced in ``manifest``) into a staging directory;
        returns its path, or None when there are none."""
        if not manifest:
            return None
        if len(manifest) > MAX_FILES:
            raise FileRefused('%d files; at most %d are accepted' % (len(manifest), MAX_FILES))
        modes = {}
        for entry in manifest:
            check_manifest_entry(entry, self.options.max_file_size)
            modes[entry[0]] = entry[2]
        staging = tempfile.mkdtemp(prefix='incoming-', dir=self.options.dest_path_prefix)
        incoming = IncomingFiles(staging, self.options.max_file_size)
        try:
            while len(incoming.done) < len(modes):
                chunk = link.expect('cluster_file', time.monotonic() + FILE_TIMEOUT)
                if chunk['name'] not in modes:
                    raise FileRefused('file %r was not announced' % (chunk['name'],))
                incoming.chunk(chunk['name'], chunk['offset'], chunk['data'], chunk['last'],
                               modes[chunk['name']])
        except BaseException:
            incoming.abort()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def on_client_message(self, cluster, kind, body):
        if cluster.cid not in self.state.clusters and kind != 'result_ack':
            if kind == 'submit':  # sent while the cluster was closing
                self.end_submitted(cluster, body['uid'], CANCELLED, 'cluster is closed')
            return
        if kind == 'submit':
            if body['uid'] in cluster.jobs or body['uid'] in cluster.results:
                self.acknowledge_submit(cluster, body['uid'])  # a resend: already here
                return
            self.submit(cluster, body)
        elif kind == 'result_ack':
            for uid in body['ids']:
                if cluster.results.pop(uid, None) is not None:
                    self.store.result_acknowledged(cluster.cid, uid)
        elif kind == 'node_allocation':
            node = self.state.nodes.get(body['key'])
            if node is not None and self.state.allocate(node, cluster.cid, body['cpus'],
                                                        body['setup_args'], body['files']):
                self.install(node, cluster)
        elif kind == 'cancel':
            job, node = self.state.cancel(cluster, body['uid'])
            if node is not None:
                node.link.send('cancel_job', {'jid': job.jid})
            elif job is not None:
                self.end_job(job, CANCELLED, 'job was cancelled before it ran')
        elif kind == 'close':
            self.close_cluster(cluster)
            cluster.owner.send('closed', {})
        else:
            raise ProtocolError('unexpected %r from a client' % (kind,))

    def submit(self, cluster, body):
        """A new job: its files and its node (``submit_node``) are checked first; a job that
        cannot run ends at once with the reason."""
        files = body['files']
        try:
            for entry in files:
                if not (isinstance(entry, list) and len(entry) == 3
                        and isinstance(entry[1], bytes) and isinstance(entry[2], int)):
                    raise FileRefused('invalid job file entry')
                safe_relative_path(entry[0])
                check_size(entry[0], len(entry[1]), self.options.max_file_size)
        except FileRefused as exc:
            self.end_submitted(cluster, body['uid'], TERMINATED, str(exc))
            return
        timeout = body['timeout']
        if timeout is not None and not 0 < timeout < float('inf'):
            self.end_submitted(cluster, body['uid'], TERMINATED,
                               'invalid time limit %r' % (timeout,))
            return
        pinned = None
        if body['node'] is not None:
            node = next((node for node in self.state.nodes.values()
                         if node.answers_to(body['node']) and cluster.cid in node.clusters
                         and node.clusters[cluster.cid] != FAILED), None)
            if node is None:
                self.end_submitted(cluster, body['uid'], CANCELLED, 'node %s is not available '
                                   'to this cluster' % (body['node'],))
                return
            pinned = node.key
        job, dispatches = self.state.submit(cluster, body['uid'], body['args'],
                                            body['priority'], body['timeout'], files, pinned,
                                            body['tag'])
        job.submitted_at = time.monotonic()
        self.dispatch(dispatches)  # first: a job sent to a node leaves at once
        self.metrics.job_submitted()
        self.store.put_job(job)
        self.acknowledge_submit(cluster, job.uid)

    def acknowledge_submit(self, cluster, uid):
        """Tell the client its job is saved (once it is): it need not send it again. One
        message per batch carries every job of the cluster saved in it."""
        self.store.acknowledge_when_durable(cluster, cluster.acknowledge_submits, uid)

    def end_submitted(self, cluster, uid, status, reason):
        """A submission refused at once: it ends without becoming a job."""
        self.send_result(cluster, {'uid': uid, 'status': status, 'result': None,
                                   'exception': reason, 'stdout': '', 'stderr': '',
                                   'start_time': None, 'end_time': time.time(),
                                   'ip_addr': None, 'tag': None})
        self.acknowledge_submit(cluster, uid)

    def close_cluster(self, cluster):
        if cluster.cid not in self.state.clusters:
            return
        nodes, queued, running, dispatches = self.state.remove_cluster(cluster)
        for node in nodes:
            node.link.send('uninstall', {'cid': cluster.cid, 'cleanup': cluster.cleanup})
        for job in queued:
            self.end_job(job, CANCELLED, 'cluster was closed before the job ran')
        for node, job in running:
            self.end_job(job, CANCELLED, 'cluster was closed while the job ran on %s' % node.key)
        self.dispatch(dispatches)
        self.store.delete_cluster(cluster.cid)
        self.credentials.pop(cluster.cid, None)
        if cluster.directory is not None:
            shutil.rmtree(cluster.directory, ignore_errors=True)
        logger.info('cluster %s (%s) closed', cluster.cid, cluster.name)

    def deliver(self, job, node, reply):
        """Pass a node's result to the job's client, and keep it until acknowledged."""
        self.send_result(job.cluster, {
            'uid': job.uid, 'status': reply['status'], 'result': reply['result'],
            'exception': reply['exception'], 'stdout': reply['stdout'],
            'stderr': reply['stderr'], 'start_time': reply['start_time'],
            'end_time': reply['end_time'], 'ip_addr': node.ip_addr, 'tag': job.tag}, job)

    def end_job(self, job, status, reason):
        """Tell the client a job ended without a result from a node."""
        self.send_result(job.cluster, {
            'uid': job.uid, 'status': status, 'result': None, 'exception': reason,
            'stdout': '', 'stderr': '', 'start_time': job.start_time, 'end_time': time.time(),
            'ip_addr': job.node.ip_addr if job.node is not None else None, 'tag': job.tag}, job)

    def send_result(self, cluster, message, job=None):
        """Keep a job's final message (saved) until the client acknowledges it, and send it."""
        if cluster.owner is not None:  # first: it leaves at once
            cluster.owner.send('job_end', message)
        cluster.results[message['uid']] = message
        self.metrics.job_ended(message['status'])
        if cluster.cid in self.state.clusters:
            self.store.job_ended(cluster.cid, job.jid if job is not None else None, message)

    def notify_node(self, cluster, node, status):
        if cluster.owner is not None:
            cluster.owner.send('node_status', {'ip_addr': node.ip_addr, 'name': node.name,
                                               'cpus': node.cpus, 'status': status})

    def warn_client(self, cluster, reason):
        logger.warning('cluster %s: %s', cluster.cid, reason)
        if cluster.owner is not None:
            cluster.owner.send('cluster_warning', {'reason': reason})


def resolve_patterns(nodes):
    """A cluster's ``nodes`` as ``(pattern, port)`` pairs; a host name also matches the
    addresses it resolves to."""
    patterns = []
    for entry in nodes:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], int)):
            raise ProtocolError('cluster_new: bad nodes entry %r' % (entry,))
        pattern, port = entry
        patterns.append((pattern, port))
        if not any(ch in pattern for ch in '*?[') and not _is_ip(pattern):
            patterns.extend((ip, port) for ip in resolve(pattern))
    return patterns


def _is_ip(text):
    try:
        socket.inet_aton(text)
        return text.count('.') == 3
    except OSError:
        return False
