"""Durability: what the scheduler records, committed in batches, and what waits for a commit.

Handlers record changes (a job saved, moved, ended; a result acknowledged; a cluster added or
removed) with the calls below, which cost no I/O; the flusher greenlet commits everything
recorded since its last pass in one transaction, off the hub (on a thread of its own, so that
name lookups, which gevent does on the hub's thread pool, never wait in front of it), and only
then runs what had to wait for durability: acknowledging submissions to a client and results
to a node, one message per peer per batch. So a submission is acknowledged once its batch is
on disk, never one fsync per job.

Payload files (a large argument uploaded, a large result streamed from a node) join the batch
the same way: ``sync_file`` names one, and the committer makes it durable just before the
transaction that refers to it. The readers that wrote them never wait for a disk, and a file
gone by then (its result delivered and acknowledged within the batch) costs no disk write.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Hashable, Optional

import gevent
import gevent.event
import gevent.threadpool

from ..constants import COMMIT_INTERVAL, MAX_UNSAVED_BYTES
from ..wire.messages import JobEnd
from ..runtime.duties import Fatal
from ..runtime.memory import trim
from .store import Store, StoreError

if TYPE_CHECKING:
    from .model import Cluster
    from .queues import Job

logger = logging.getLogger(__name__)


class Durability:
    """The store and its flusher. Tunables are class attributes."""

    commit_interval = COMMIT_INTERVAL
    """Seconds the flusher lets a batch of state changes grow before committing it."""

    max_unsaved_bytes = MAX_UNSAVED_BYTES
    """Bytes of results recorded and not yet committed past which nodes wait
    (``wait_for_room``): results arrive faster than a disk saves them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dirty = gevent.event.Event()
        self.unsaved_bytes = 0  # of results recorded, not committed yet
        self.batch_bytes = 0  # of those, recorded since the last batch was taken
        self.committed = gevent.event.Event()  # set (and replaced) at each commit
        self.compact_wanted = False  # a cluster was removed: its pages and memory may go
        self.unsynced: list[str] = []  # payload files to make durable with the next commit
        self.committer = gevent.threadpool.ThreadPool(1)
        """The one thread commits run on: not the hub's pool, which slow name lookups can
        fill (issue 17, 7)."""

    # what handlers record (no I/O until the next commit)

    def put_cluster(self, cluster: Cluster) -> None:
        self.store.put_cluster(cluster)
        self.dirty.set()

    def delete_cluster(self, cid: int) -> None:
        self.store.delete_cluster(cid)
        self.compact_wanted = True
        self.dirty.set()

    def put_job(self, job: Job) -> None:
        self.store.put_job(job)
        self.dirty.set()

    def job_moved(self, job: Job) -> None:
        """The job was sent to a node, or came back from one."""
        self.store.job_moved(job)
        self.dirty.set()

    def job_ended(self, cid: int, jid: int | None, message: JobEnd, size: int) -> None:
        """A job ended (or a submission was refused: no ``jid``): its row goes, its final
        message (of ``message_size`` ``size``) is kept until the client acknowledges it."""
        self.store.job_ended(cid, jid, message)
        self.unsaved_bytes += size
        self.batch_bytes += size
        self.dirty.set()

    def result_acknowledged(self, cid: int, uid: int) -> None:
        self.store.result_acknowledged(cid, uid)
        self.dirty.set()

    def sync_file(self, path: str) -> None:
        """A payload file just written: durable before the next commit (and so before any
        acknowledgement that depends on it), on the committer's thread."""
        self.unsynced.append(path)
        self.dirty.set()

    def when_durable(self, action: Callable[..., Any], *args: Any) -> None:
        """Run ``action(*args)`` once everything recorded so far is committed."""
        self.store.when_durable(action, *args)
        self.dirty.set()

    def acknowledge_when_durable(self, peer: Hashable, send: Callable[[list], Any],
                                 item: Any) -> None:
        """Add ``item`` to the acknowledgement ``send(items)`` that goes to ``peer`` once
        everything recorded so far is committed: one message per peer per batch."""
        self.store.acknowledge_when_durable(peer, send, item)
        self.dirty.set()

    def wait_for_room(self) -> None:
        """Block this greenlet (a node's reader) while more than ``max_unsaved_bytes`` of
        results wait for their commit: the node keeps its results until they are saved, so
        they wait there, not in the scheduler's memory."""
        while self.unsaved_bytes > self.max_unsaved_bytes:
            self.committed.wait()

    def wait_until_durable(self) -> None:
        """Block this greenlet until what was recorded so far is committed."""
        done = gevent.event.Event()
        self.when_durable(done.set)
        done.wait()

    # the flusher

    def run_flusher(self) -> None:
        """Commit what handlers recorded, in batches, off the hub; then run what waited for
        it. A commit that fails (a full disk, say) ends this duty, and so the scheduler,
        before anything that depended on it is acknowledged: it raises ``Fatal`` with the
        database's own reason ("database or disk is full"), and the scheduler exits with
        status 1."""
        while True:
            self.dirty.wait()
            self.dirty.clear()
            gevent.sleep(self.commit_interval)
            statements, actions = self.store.take_batch()
            files, self.unsynced = self.unsynced, []
            saving, self.batch_bytes = self.batch_bytes, 0
            if statements or files:
                failure = self.committer.apply(self.commit_batch, (statements, files))
                if failure is not None:
                    raise Fatal(failure)
            del statements  # results leave memory as soon as they are saved
            self.unsaved_bytes -= saving
            committed, self.committed = self.committed, gevent.event.Event()
            committed.set()
            for action, args in actions:
                action(*args)
            if self.compact_wanted:
                self.compact_wanted = False
                self.committer.apply(self.compact)

    def commit_batch(self, statements: list[tuple[str, list]], files: list[str]
                     ) -> Optional[str]:
        """The batch's payload files made durable, then its transaction committed (on the
        committer's thread); why the commit failed, if it did."""
        sync_files(files)
        return self.store.try_commit(statements) if statements else None

    def compact(self) -> None:
        """After a cluster is removed: free database pages and freed memory go back to the
        system (on the committer's thread: both can take a while after a big cluster)."""
        freed = self.store.compact()
        if freed:
            logger.info('state database: %d MB of free pages handed back', freed >> 20)
        trim()

    def load_results(self, cid: int, uids: list[int]) -> dict[int, JobEnd]:
        """Results of cluster ``cid`` kept only in the store, by uid (read on the committer's
        thread, after the commit under way)."""
        return self.committer.apply(self.store.load_results, (cid, uids))

    def commit_now(self) -> Optional[str]:
        """Commit what is recorded, here and now (at shutdown); why it could not, if not."""
        files, self.unsynced = self.unsynced, []
        sync_files(files)
        try:
            self.store.commit_now()
        except StoreError as exc:
            logger.error('%s', exc)
            return str(exc)
        return None

    def close(self) -> None:
        self.committer.kill()
        self.store.close()


def sync_files(paths: list[str]) -> None:
    """``fsync`` each payload file. One already removed needs nothing (its result was
    delivered and acknowledged, its value forgotten). One that cannot be made durable (an
    I/O error, or a file system that reports a full disk only now) is logged and the batch
    goes on: its bytes are in the page cache, safe from ``kill -9`` though not from a power
    cut, and the job they belong to has already gone on its way (a result to its client, an
    argument to its node); stopping the scheduler for it, as for a commit that fails, would
    end every other user's work for one file."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.error('cannot open %s to make it durable: %s', path, exc.strerror)
            continue
        try:
            os.fsync(fd)
        except OSError as exc:
            logger.error('cannot make %s durable (a power cut could lose it): %s', path,
                         exc.strerror)
        finally:
            os.close(fd)
