"""The scheduler's durable state: an SQLite database (WAL mode) in ``--state_dir``.

What is kept: each cluster (with its credential, so its client can resume it), each job not
yet ended (and the node it was sent to), and each result the client has not acknowledged.
What is not: anything that can be learned again (nodes, links, queue order beyond priority
and submission).

Writes are batched (group commit): event handlers only record operations; a flusher greenlet
commits everything recorded since its last pass in one transaction, on the hub's threadpool
so that the fsync never blocks the scheduler, and only then runs the actions that had to wait
for durability (acknowledging a submission to its client, a result to its node). So a submit
is acknowledged once its batch is on disk, never one fsync per job.
"""

import logging
import os
import sqlite3

import msgpack

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SCHEMA = '''
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE clusters (
    cid INTEGER PRIMARY KEY, name TEXT, code BLOB, patterns BLOB, reentrant INTEGER,
    cleanup INTEGER, allocate INTEGER, files BLOB, node_files BLOB, directory TEXT,
    credential BLOB);
CREATE TABLE jobs (
    jid INTEGER PRIMARY KEY, cid INTEGER, uid INTEGER, args BLOB, priority INTEGER,
    timeout REAL, files BLOB, pinned TEXT, tag BLOB, node TEXT, lost_nodes INTEGER);
CREATE INDEX jobs_by_cluster ON jobs (cid);
CREATE TABLE results (cid INTEGER, uid INTEGER, message BLOB, PRIMARY KEY (cid, uid));
'''


class StoreError(Exception):
    """The state database cannot be used; the message says which file and why."""


def pack(value):
    return msgpack.packb(value, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False)


class Batch:
    """Changes recorded since the last commit, kept by row, so that a job submitted and ended
    (and its result acknowledged) within one batch costs the database nothing."""

    def __init__(self):
        self.jobs = {}  # jid -> Job whose row to write as it is when the batch is taken
        self.new_jobs = set()  # jids first saved in this batch
        self.ended_jobs = set()  # jids whose rows go
        self.results = {}  # (cid, uid) -> final message to keep for the client
        self.acknowledged = set()  # (cid, uid) of results the client has now
        self.clusters = []  # (sql, parameters) for clusters, in order, after the rest
        self.actions = []  # (action, args) to run once the batch is committed
        self.acknowledgements = {}  # link -> (send, [items]): one message each


class Store:
    """One scheduler's state database. Not thread-safe: ``commit`` runs on one thread at a
    time (the flusher's), everything else on the hub."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, 'state.sqlite')
        self.batch = Batch()
        try:
            fresh = not os.path.exists(self.path)
            self.db = sqlite3.connect(self.path, check_same_thread=False,
                                      isolation_level=None)
            self.db.execute('PRAGMA journal_mode=WAL')
            self.db.execute('PRAGMA synchronous=FULL')
            if fresh:
                self.db.executescript('BEGIN;' + SCHEMA + 'COMMIT;')
                self.db.execute("INSERT INTO meta VALUES ('version', ?)", (SCHEMA_VERSION,))
            version = self.meta('version')
            if version != SCHEMA_VERSION:
                raise StoreError('%s has state version %r; this scheduler reads version %d'
                                 % (self.path, version, SCHEMA_VERSION))
            # a new incarnation of the scheduler; writing it now also finds, at start rather
            # than later, a database that cannot be written
            self.epoch = (self.meta('epoch') or 0) + 1
            self.scheduler_id = self.meta('scheduler_id') or os.urandom(8).hex()
            with self.db:
                self.db.execute('BEGIN')
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (self.epoch,))
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('scheduler_id', ?)",
                                (self.scheduler_id,))
        except sqlite3.Error as exc:
            raise StoreError('cannot use state database %s: %s' % (self.path, exc)) from None

    def close(self):
        self.db.close()

    def meta(self, key, default=None):
        row = self.db.execute('SELECT value FROM meta WHERE key = ?', (key,)).fetchone()
        return default if row is None else row[0]

    # recording (no I/O until the next commit)

    def notify(self):
        """Replaced by the scheduler with a wake-up of its flusher."""

    def when_durable(self, action, *args):
        """Run ``action(*args)`` once everything recorded so far is committed."""
        self.batch.actions.append((action, args))
        self.notify()

    def acknowledge_when_durable(self, key, send, item):
        """Add ``item`` to the acknowledgement ``send(items)`` that goes to ``key`` (a link)
        once everything recorded so far is committed: one message per peer per batch."""
        group = self.batch.acknowledgements.get(key)
        if group is None:
            group = self.batch.acknowledgements[key] = (send, [])
        group[1].append(item)
        self.notify()

    def put_cluster(self, cluster, credential):
        self.batch.clusters.append((
            'INSERT OR REPLACE INTO clusters VALUES (?,?,?,?,?,?,?,?,?,?,?)',
            (cluster.cid, cluster.name, cluster.code,
             pack([list(p) for p in cluster.patterns]), int(cluster.reentrant),
             int(cluster.cleanup), int(cluster.allocate), pack(cluster.files),
             pack(sorted(cluster.node_files)), cluster.directory, credential)))
        self.batch.clusters.append(("INSERT OR REPLACE INTO meta VALUES ('next_cid', ?)",
                                    (cluster.cid + 1,)))
        self.notify()

    def delete_cluster(self, cid):
        self.batch.clusters.extend([('DELETE FROM clusters WHERE cid = ?', (cid,)),
                                    ('DELETE FROM jobs WHERE cid = ?', (cid,)),
                                    ('DELETE FROM results WHERE cid = ?', (cid,))])
        self.notify()

    def put_job(self, job):
        self.batch.jobs[job.jid] = job
        self.batch.new_jobs.add(job.jid)
        self.notify()

    def job_moved(self, job):
        """The job was sent to a node, or came back from one."""
        self.batch.jobs[job.jid] = job
        self.notify()

    def job_ended(self, cid, jid, message):
        """A job ended (or a submission was refused, ``jid`` None): its row goes, its final
        message waits for the client's acknowledgement."""
        batch = self.batch
        if jid is not None:
            batch.jobs.pop(jid, None)
            batch.ended_jobs.add(jid)
        batch.results[(cid, message['uid'])] = message
        batch.acknowledged.discard((cid, message['uid']))
        self.notify()

    def result_acknowledged(self, cid, uid):
        if self.batch.results.pop((cid, uid), None) is None:
            self.batch.acknowledged.add((cid, uid))
        self.notify()

    # committing

    def take_batch(self):
        """What was recorded since the last batch, as ``(statements, actions)``: the SQL to
        commit (rows that came and went within the batch are left out) and what waits for
        it. Runs on the hub, so the rows are read from the jobs as they are now."""
        batch, self.batch = self.batch, Batch()
        statements = []
        if batch.jobs:
            statements.append(('INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?)', [
                (job.jid, job.cluster.cid, job.uid, job.args, job.priority, job.timeout,
                 pack(job.files), job.pinned, job.tag, job.node.key if job.node else None,
                 job.lost_nodes) for job in batch.jobs.values()]))
        saved_before = batch.ended_jobs - batch.new_jobs  # rows written by an earlier batch
        if saved_before:
            statements.append(('DELETE FROM jobs WHERE jid = ?',
                               [(jid,) for jid in saved_before]))
        if batch.results:
            statements.append(('INSERT OR REPLACE INTO results VALUES (?,?,?)',
                               [(cid, uid, pack(message))
                                for (cid, uid), message in batch.results.items()]))
        if batch.acknowledged:
            statements.append(('DELETE FROM results WHERE cid = ? AND uid = ?',
                               list(batch.acknowledged)))
        statements.extend((sql, [parameters]) for sql, parameters in batch.clusters)
        actions = batch.actions + [(send, (items,)) for send, items
                                   in batch.acknowledgements.values()]
        return statements, actions

    def commit(self, statements):
        """Apply ``statements`` in one transaction (called on a threadpool thread)."""
        self.db.execute('BEGIN')
        try:
            for sql, rows in statements:
                self.db.executemany(sql, rows)
            self.db.execute('COMMIT')
        except BaseException:
            self.db.execute('ROLLBACK')
            raise

    def commit_now(self):
        """Commit what is recorded, here and now (at start and at shutdown)."""
        statements, actions = self.take_batch()
        if statements:
            self.commit(statements)
        for action, args in actions:
            action(*args)

    # loading at start

    def load(self):
        """``(clusters, jobs, results)`` as rows: dicts for clusters and jobs, and
        ``(cid, message)`` for results."""
        clusters = []
        for row in self.db.execute('SELECT * FROM clusters ORDER BY cid'):
            (cid, name, code, patterns, reentrant, cleanup, allocate, files, node_files,
             directory, credential) = row
            clusters.append(dict(
                cid=cid, name=name, code=code, patterns=[tuple(p) for p in unpack(patterns)],
                reentrant=bool(reentrant), cleanup=bool(cleanup), allocate=bool(allocate),
                files=unpack(files), node_files=set(unpack(node_files)), directory=directory,
                credential=credential))
        jobs = []
        for row in self.db.execute('SELECT * FROM jobs ORDER BY jid'):
            (jid, cid, uid, args, priority, timeout, files, pinned, tag, node,
             lost_nodes) = row
            jobs.append(dict(jid=jid, cid=cid, uid=uid, args=args, priority=priority,
                             timeout=timeout, files=unpack(files), pinned=pinned, tag=tag,
                             node=node, lost_nodes=lost_nodes))
        results = [(cid, unpack(message)) for cid, message in
                   self.db.execute('SELECT cid, message FROM results ORDER BY cid, uid')]
        return clusters, jobs, results
