"""The scheduler's durable state: an SQLite database (WAL mode) in ``--state_dir``.

What is kept: each cluster (with its credential, so its client can resume it), each job not
yet ended (and the node it was sent to), and each result the client has not acknowledged.
What is not: anything that can be learned again (nodes, links, queue order beyond priority
and submission).

Each table's columns are named once (``Table``), and so is how a cluster or a job becomes a
row; the database keeps the version of this layout: one of an older version is brought up to
date (``MIGRATIONS``), one of another version refused with one line that says so.

Recording costs no I/O: changes are kept by row in a ``Batch``, so a job submitted and ended
(and its result acknowledged) within one batch costs the database nothing; ``commit`` writes a
batch in one transaction. Not thread-safe: ``commit`` runs on one thread at a time (the
flusher's, see ``durability.py``), everything else on the hub.
"""

from __future__ import annotations

import logging
import operator
import os
import sqlite3
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Optional, cast

import msgpack

from ..resources import ONE_CPU, Need
from ..wire.messages import JobEnd, from_wire

if TYPE_CHECKING:
    from .model import Cluster
    from .queues import Job

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
"""The layout below; a database of another version is refused (``StoreError``)."""


WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes of write-ahead log kept once a checkpoint has emptied it (SQLite truncates it to this;
without a limit it keeps its largest size)."""

COMPACT_FREE_BYTES = 64 * 1024 * 1024
"""Bytes of free pages in the database from which ``compact`` hands them back."""

LOAD_BATCH = 500
"""Results read back in one statement (SQLite allows 999 parameters by default)."""


class StoreError(Exception):
    """The state database cannot be used; the message says which file and why."""


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class Table:
    """One table: its columns, named once, and the statements that follow from them."""

    def __init__(self, name: str, columns: Iterable[tuple[str, str]], order: str,
                 key: tuple[str, ...]) -> None:
        self.name = name
        self.columns = tuple(column for column, _ in columns)
        getter = operator.itemgetter(*self.columns)
        self._getter: Callable[[dict[str, Any]], tuple] = (
            getter if len(self.columns) > 1 else lambda row: (getter(row),))
        definitions = ', '.join('%s %s' % pair for pair in columns)
        primary = ', PRIMARY KEY (%s)' % ', '.join(key) if len(key) > 1 else ''
        self.create = 'CREATE TABLE %s (%s%s)' % (name, definitions, primary)
        self.insert = 'INSERT OR REPLACE INTO %s (%s) VALUES (%s)' % (
            name, ', '.join(self.columns), ', '.join('?' * len(self.columns)))
        self.delete = 'DELETE FROM %s WHERE %s' % (
            name, ' AND '.join('%s = ?' % column for column in key))
        self.select = 'SELECT %s FROM %s ORDER BY %s' % (', '.join(self.columns), name, order)

    def values(self, row: dict[str, Any]) -> tuple:
        """The row's values in the columns' order (one call to a prepared getter: a batch
        writes a row for most jobs)."""
        return self._getter(row)

    def rows(self, db: sqlite3.Connection) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, values)) for values in db.execute(self.select)]


META = Table('meta', [('key', 'TEXT PRIMARY KEY'), ('value', 'BLOB')], 'key', ('key',))
CLUSTERS = Table('clusters', [
    ('cid', 'INTEGER PRIMARY KEY'), ('name', 'TEXT'), ('code', 'BLOB'), ('patterns', 'BLOB'),
    ('reentrant', 'INTEGER'), ('cleanup', 'INTEGER'), ('allocate', 'INTEGER'),
    ('files', 'BLOB'), ('uploads', 'BLOB'), ('directory', 'TEXT'), ('credential', 'BLOB'),
    ('need', 'BLOB'),
], 'cid', ('cid',))
JOBS = Table('jobs', [
    ('jid', 'INTEGER PRIMARY KEY'), ('cid', 'INTEGER'), ('uid', 'INTEGER'), ('args', 'BLOB'),
    ('priority', 'INTEGER'), ('timeout', 'REAL'), ('files', 'BLOB'), ('pinned', 'TEXT'),
    ('tag', 'BLOB'), ('node', 'TEXT'), ('lost_nodes', 'INTEGER'), ('refs', 'BLOB'),
    ('need', 'BLOB'),
], 'jid', ('jid',))
RESULTS = Table('results', [('cid', 'INTEGER'), ('uid', 'INTEGER'), ('message', 'BLOB')],
                'cid, uid', ('cid', 'uid'))
TABLES = (META, CLUSTERS, JOBS, RESULTS)
INDEXES = ('CREATE INDEX jobs_by_cluster ON jobs (cid)',)
MIGRATIONS = {
    2: ('ALTER TABLE jobs ADD COLUMN refs BLOB', 'ALTER TABLE jobs ADD COLUMN need BLOB',
        'ALTER TABLE clusters ADD COLUMN need BLOB'),
    3: ('ALTER TABLE jobs ADD COLUMN need BLOB', 'ALTER TABLE clusters ADD COLUMN need BLOB'),
}
"""Statements that bring a database of an older version to this one (a scheduler upgraded
in place keeps its clusters and jobs)."""


def cluster_row(cluster: Cluster) -> dict[str, Any]:
    return dict(cid=cluster.cid, name=cluster.name, code=cluster.code,
                patterns=pack([list(pattern) for pattern in cluster.patterns]),
                reentrant=int(cluster.reentrant), cleanup=int(cluster.cleanup),
                allocate=int(cluster.allocate), files=pack(cluster.files),
                uploads=pack([[ref, *spec] for ref, spec in cluster.uploads.items()]),
                directory=cluster.directory,
                credential=cluster.credential, need=pack_need(cluster.need))


def cluster_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A saved cluster as ``model.State.restore`` takes it."""
    return dict(row, patterns=[tuple(pattern) for pattern in unpack(row['patterns'])],
                reentrant=bool(row['reentrant']), cleanup=bool(row['cleanup']),
                allocate=bool(row['allocate']), files=unpack(row['files']),
                need=unpack_need(row['need']),
                uploads={ref: (name, size, mode)
                         for ref, name, size, mode in unpack(row['uploads'])})


def job_row(job: Job) -> dict[str, Any]:
    return dict(jid=job.jid, cid=job.cluster.cid, uid=job.uid, args=job.args,
                priority=job.priority, timeout=job.timeout, files=pack(job.files),
                pinned=job.pinned, tag=job.tag, node=job.node.key if job.node else None,
                lost_nodes=job.lost_nodes, refs=pack(list(job.refs)) if job.refs else None,
                need=pack_need(job.need))


def job_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A saved job as ``model.State.restore`` takes it."""
    return dict(row, files=unpack(row['files']),
                refs=tuple(unpack(row['refs'])) if row['refs'] else (),
                need=unpack_need(row['need']))


def pack_need(need: Need) -> Optional[bytes]:
    """A job's or a cluster's need as saved: None for one CPU, as rows saved before
    resources were known."""
    return None if need.light else pack(need.to_wire())


def unpack_need(data: Optional[bytes]) -> Need:
    return Need.from_wire([tuple(pair) for pair in unpack(data)]) if data else ONE_CPU


Action = tuple[Callable[..., Any], tuple]


class Batch:
    """Changes recorded since the last commit, kept by row, so that a job submitted and ended
    (and its result acknowledged) within one batch costs the database nothing."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}  # jid -> Job whose row to write as it is at the commit
        self.new_jobs: set[int] = set()  # jids first saved in this batch
        self.ended_jobs: set[int] = set()  # jids whose rows go
        self.results: dict[tuple[int, int], JobEnd] = {}  # (cid, uid) -> final message
        self.acknowledged: set[tuple[int, int]] = set()  # (cid, uid) the client has now
        self.clusters: list[tuple[str, tuple]] = []  # (sql, values), in order, after the rest
        self.actions: list[Action] = []  # to run once the batch is committed
        self.acknowledgements: dict[Hashable, tuple[Callable[[list], Any], list]] = {}


class Store:
    """One scheduler's state database."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, 'state.sqlite')
        self.batch = Batch()
        try:
            fresh = not os.path.exists(self.path)
            self.db = sqlite3.connect(self.path, check_same_thread=False,
                                      isolation_level=None)
            if fresh:  # before any table: free pages can then be handed back (``compact``)
                self.db.execute('PRAGMA auto_vacuum=INCREMENTAL')
            # one scheduler per database (``--state_dir`` is locked): its WAL index lives in
            # memory, not in a mapped -shm file, whose pages kill the process with SIGBUS
            # when the file becomes unwritable (``chattr +i``)
            self.db.execute('PRAGMA locking_mode=EXCLUSIVE')
            self.db.execute('PRAGMA journal_mode=WAL')
            self.db.execute('PRAGMA synchronous=FULL')
            self.db.execute('PRAGMA journal_size_limit=%d' % WAL_SIZE_LIMIT)
            if fresh:
                self.db.executescript('BEGIN;' + ';'.join(
                    [table.create for table in TABLES] + list(INDEXES)) + ';COMMIT;')
                self.db.execute(META.insert, ('version', SCHEMA_VERSION))
            version = self.meta('version')
            if version in MIGRATIONS:
                with self.db:
                    self.db.execute('BEGIN')
                    for statement in MIGRATIONS[version]:
                        self.db.execute(statement)
                    self.db.execute(META.insert, ('version', SCHEMA_VERSION))
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
                self.db.execute(META.insert, ('epoch', self.epoch))
                self.db.execute(META.insert, ('scheduler_id', self.scheduler_id))
        except sqlite3.Error as exc:
            raise StoreError('cannot use state database %s: %s' % (self.path, self.why(exc))) \
                from None

    def close(self) -> None:
        self.db.close()

    def why(self, exc: sqlite3.Error) -> str:
        """SQLite's reason, and which file cannot be written if one cannot (SQLite says
        only "disk I/O error" for a file made immutable)."""
        for path in (self.path, self.path + '-wal', os.path.dirname(self.path)):
            if os.path.exists(path) and not os.access(path, os.W_OK):
                return '%s (%s cannot be written)' % (exc, path)
        return str(exc)

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute('SELECT value FROM meta WHERE key = ?', (key,)).fetchone()
        return default if row is None else row[0]

    # recording (no I/O until the next commit)

    def when_durable(self, action: Callable[..., Any], *args: Any) -> None:
        """Run ``action(*args)`` once everything recorded so far is committed."""
        self.batch.actions.append((action, args))

    def acknowledge_when_durable(self, peer: Hashable, send: Callable[[list], Any],
                                 item: Any) -> None:
        """Add ``item`` to the acknowledgement ``send(items)`` that goes to ``peer`` once
        everything recorded so far is committed: one message per peer per batch."""
        group = self.batch.acknowledgements.get(peer)
        if group is None:
            group = self.batch.acknowledgements[peer] = (send, [])
        group[1].append(item)

    def put_cluster(self, cluster: Cluster) -> None:
        self.batch.clusters.append((CLUSTERS.insert, CLUSTERS.values(cluster_row(cluster))))
        self.batch.clusters.append((META.insert, ('next_cid', cluster.cid + 1)))

    def delete_cluster(self, cid: int) -> None:
        self.batch.clusters.extend([(CLUSTERS.delete, (cid,)),
                                    ('DELETE FROM jobs WHERE cid = ?', (cid,)),
                                    ('DELETE FROM results WHERE cid = ?', (cid,))])

    def put_job(self, job: Job) -> None:
        self.batch.jobs[job.jid] = job
        self.batch.new_jobs.add(job.jid)

    def job_moved(self, job: Job) -> None:
        """The job was sent to a node, or came back from one."""
        self.batch.jobs[job.jid] = job

    def job_ended(self, cid: int, jid: int | None, message: JobEnd) -> None:
        """A job ended (or a submission was refused, ``jid`` None): its row goes, its final
        message waits for the client's acknowledgement."""
        batch = self.batch
        if jid is not None:
            batch.jobs.pop(jid, None)
            batch.ended_jobs.add(jid)
        batch.results[(cid, message.uid)] = message
        batch.acknowledged.discard((cid, message.uid))

    def result_acknowledged(self, cid: int, uid: int) -> None:
        if self.batch.results.pop((cid, uid), None) is None:
            self.batch.acknowledged.add((cid, uid))

    # committing

    def take_batch(self) -> tuple[list[tuple[str, list]], list[Action]]:
        """What was recorded since the last batch, as ``(statements, actions)``: the SQL to
        commit (rows that came and went within the batch are left out) and what waits for
        it. Runs on the hub, so the rows are read from the jobs as they are now."""
        batch, self.batch = self.batch, Batch()
        statements: list[tuple[str, list]] = []
        if batch.jobs:
            statements.append((JOBS.insert, [JOBS.values(job_row(job))
                                             for job in batch.jobs.values()]))
        saved_before = batch.ended_jobs - batch.new_jobs  # rows written by an earlier batch
        if saved_before:
            statements.append((JOBS.delete, [(jid,) for jid in saved_before]))
        if batch.results:
            statements.append((RESULTS.insert, [
                RESULTS.values(dict(cid=cid, uid=uid, message=pack(message.body())))
                for (cid, uid), message in batch.results.items()]))
        if batch.acknowledged:
            statements.append((RESULTS.delete, list(batch.acknowledged)))
        statements.extend((sql, [values]) for sql, values in batch.clusters)
        actions = batch.actions + [(send, (items,)) for send, items
                                   in batch.acknowledgements.values()]
        return statements, actions

    def commit(self, statements: list[tuple[str, list]]) -> None:
        """Apply ``statements`` in one transaction (called on a threadpool thread); raises
        ``StoreError`` with the database's reason if it cannot."""
        try:
            self.db.execute('BEGIN')
            try:
                for sql, rows in statements:
                    self.db.executemany(sql, rows)
                self.db.execute('COMMIT')
            except BaseException:
                if self.db.in_transaction:  # SQLite ends it itself on some errors (disk full)
                    self.db.execute('ROLLBACK')
                raise
        except sqlite3.Error as exc:
            raise StoreError('cannot write the state database %s: %s'
                             % (self.path, self.why(exc))) from None

    def try_commit(self, statements: list[tuple[str, list]]) -> Optional[str]:
        """``commit``, returning why it failed (None if it did not): for a thread pool, which
        would report an exception as a bug."""
        try:
            self.commit(statements)
        except StoreError as exc:
            return str(exc)
        return None

    def compact(self) -> int:
        """Hand free pages back to the file system if they are many (a cluster with many
        jobs was removed); returns the bytes handed back (0 if too few were free). Runs on the
        committer's thread, between commits."""
        try:
            page_size = self.db.execute('PRAGMA page_size').fetchone()[0]
            free = self.db.execute('PRAGMA freelist_count').fetchone()[0] * page_size
            if free < COMPACT_FREE_BYTES:
                return 0
            # run to its end (execute() would free one page: it steps once)
            self.db.executescript('PRAGMA incremental_vacuum;')
            self.db.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchall()
        except sqlite3.Error as exc:  # tried again after the next cluster closes
            logger.warning('could not compact %s: %s', self.path, exc)
            return 0
        return free

    def commit_now(self) -> None:
        """Commit what is recorded, here and now (at shutdown)."""
        statements, actions = self.take_batch()
        if statements:
            self.commit(statements)
        for action, args in actions:
            action(*args)

    # loading at start

    def load(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                            list[tuple[int, int, int]]]:
        """``(clusters, jobs, results)``: clusters and jobs as ``model.State.restore`` takes
        them, results as ``(cid, uid, size)``: their messages stay here until they are sent
        (``load_results``)."""
        clusters = [cluster_from_row(row) for row in CLUSTERS.rows(self.db)]
        jobs = [job_from_row(row) for row in JOBS.rows(self.db)]
        results = [(cid, uid, size) for cid, uid, size in self.db.execute(
            'SELECT cid, uid, length(message) FROM results ORDER BY cid, uid')]
        return clusters, jobs, results

    def load_results(self, cid: int, uids: list[int]) -> dict[int, JobEnd]:
        """The saved results ``uids`` of cluster ``cid`` (those found), by uid."""
        found: dict[int, JobEnd] = {}
        for start in range(0, len(uids), LOAD_BATCH):
            chunk = uids[start:start + LOAD_BATCH]
            rows = self.db.execute(
                'SELECT uid, message FROM results WHERE cid = ? AND uid IN (%s)'
                % ','.join('?' * len(chunk)), [cid] + chunk)
            for uid, message in rows:
                # from_wire of a job_end body is a JobEnd
                found[uid] = cast(JobEnd, from_wire(JobEnd.kind, unpack(message)))
        return found
