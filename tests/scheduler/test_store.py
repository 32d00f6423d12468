"""The state database: what is saved comes back the same after a restart, a batch writes only
what outlived it, and a database of another layout version is refused with one clear line."""

import sqlite3

import pytest

from dispyscheduler.resources import ONE_CPU, Need
from dispyscheduler.wire.messages import JobEnd
from dispyscheduler.scheduler.model import State
from dispyscheduler.scheduler.store import CLUSTERS, JOBS, SCHEMA_VERSION, Store, StoreError


def new_state(store):
    return State(max_depth=2, epoch=store.epoch, next_cid=store.meta('next_cid') or 1)


def add_cluster(state):
    cluster = state.add_cluster('c', b'code', [('127.0.0.*', 0), ('node', 9000)], True, False,
                                allocate=True).cluster
    cluster.files = [['data.txt', 4, 0o600]]
    cluster.uploads = {'ab12': ('data.txt', 4, 0o600)}
    cluster.directory = '/tmp/c'
    cluster.credential = b'\x01' * 16
    return cluster


def test_clusters_jobs_and_results_come_back_after_a_restart(tmp_path):
    store = Store(str(tmp_path))
    state = new_state(store)
    cluster = add_cluster(state)
    store.put_cluster(cluster)
    jobs = [state.submit(cluster, uid, b'args%d' % uid, priority=uid, timeout=2.5,
                         files=[['f', b'x', 0o600]], tag=b'tag').job for uid in range(3)]
    for job in jobs:
        store.put_job(job)
    ended = jobs[2]
    message = JobEnd.failure(ended.uid, 11, 'reason', ip_addr='10.0.0.1', tag=b't')
    store.job_ended(cluster.cid, ended.jid, message)
    store.commit_now()
    store.close()

    again = Store(str(tmp_path))
    assert again.epoch == store.epoch + 1 and again.scheduler_id == store.scheduler_id
    clusters, rows, results = again.load()
    restored = new_state(again)
    restored.restore(clusters, rows)
    copy = restored.clusters[cluster.cid]
    for name in ('name', 'code', 'patterns', 'reentrant', 'cleanup', 'allocate', 'files',
                 'uploads', 'directory', 'credential'):
        assert getattr(copy, name) == getattr(cluster, name), name
    assert sorted(copy.jobs) == [0, 1]  # the one that ended is kept as its result only
    assert [(cid, uid) for cid, uid, _ in results] == [(cluster.cid, message.uid)]
    assert again.load_results(cluster.cid, [message.uid, 999]) == {message.uid: message}
    job = copy.jobs[1]
    assert (job.jid, job.args, job.priority, job.timeout, job.files, job.tag) == (
        jobs[1].jid, b'args1', 1, 2.5, [['f', b'x', 0o600]], b'tag')
    assert again.meta('next_cid') == cluster.cid + 1
    again.close()


def test_a_job_that_comes_and_goes_within_a_batch_costs_no_row(tmp_path):
    store = Store(str(tmp_path))
    state = new_state(store)
    cluster = add_cluster(state)
    store.put_cluster(cluster)
    store.commit_now()
    job = state.submit(cluster, 1, b'').job
    store.put_job(job)
    store.job_ended(cluster.cid, job.jid, JobEnd.failure(1, 11, ''))
    store.result_acknowledged(cluster.cid, 1)
    statements, _ = store.take_batch()
    assert statements == []


def test_acknowledgements_wait_for_the_commit_and_go_once_per_peer(tmp_path):
    store = Store(str(tmp_path))
    sent = []
    for item in (1, 2, 3):
        store.acknowledge_when_durable('peer', sent.append, item)
    store.acknowledge_when_durable('other', sent.append, 9)
    assert sent == []
    store.commit_now()
    assert sorted(sent) == [[1, 2, 3], [9]]


def test_a_jobs_uploads_come_back_after_a_restart(tmp_path):
    store = Store(str(tmp_path))
    state = new_state(store)
    cluster = add_cluster(state)
    store.put_cluster(cluster)
    with_refs = state.submit(cluster, 1, b'a', refs=('ab12', 'cd34')).job
    without = state.submit(cluster, 2, b'b').job
    store.put_job(with_refs)
    store.put_job(without)
    store.commit_now()
    store.close()
    again = Store(str(tmp_path))
    restored = new_state(again)
    restored.restore(*again.load()[:2])
    jobs = restored.clusters[cluster.cid].jobs
    assert (jobs[1].refs, jobs[2].refs) == (('ab12', 'cd34'), ())
    again.close()


@pytest.mark.parametrize('version', [2, 3])
def test_a_database_of_an_older_version_is_brought_up_to_date(tmp_path, version):
    """A scheduler upgraded in place keeps the clusters and jobs of the one before (version 3
    knew no resources, version 2 no uploads either)."""
    store = Store(str(tmp_path))
    state = new_state(store)
    cluster = add_cluster(state)
    store.put_cluster(cluster)
    store.put_job(state.submit(cluster, 1, b'args').job)
    store.commit_now()
    store.close()
    db = sqlite3.connect(str(tmp_path / 'state.sqlite'))  # as that version left it
    db.execute('ALTER TABLE jobs DROP COLUMN need')
    db.execute('ALTER TABLE clusters DROP COLUMN need')
    if version == 2:
        db.execute('ALTER TABLE jobs DROP COLUMN refs')
    db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (version,))
    db.commit()
    db.close()
    again = Store(str(tmp_path))
    assert again.meta('version') == SCHEMA_VERSION
    restored = new_state(again)
    restored.restore(*again.load()[:2])
    job = restored.clusters[cluster.cid].jobs[1]
    assert (job.args, job.refs, job.need) == (b'args', (), ONE_CPU)
    again.close()


def test_what_jobs_and_clusters_need_survives_a_restart(tmp_path):
    store = Store(str(tmp_path))
    state = new_state(store)
    cluster = state.add_cluster('c', b'code', [('*', 0)], False, True,
                                need=Need(2, memory=1 << 30)).cluster
    store.put_cluster(cluster)
    store.put_job(state.submit(cluster, 1, b'args').job)
    store.put_job(state.submit(cluster, 2, b'args', need=Need(4, gpus=1,
                                                              named=[('licence', 1)])).job)
    store.commit_now()
    store.close()
    again = Store(str(tmp_path))
    restored = new_state(again)
    restored.restore(*again.load()[:2])
    back = restored.clusters[cluster.cid]
    assert back.need == Need(2, memory=1 << 30)
    assert back.jobs[1].need == Need(2, memory=1 << 30)
    assert back.jobs[2].need == Need(4, gpus=1, named=[('licence', 1)])
    assert back.queued == 2
    again.close()


def test_columns_are_named_once():
    for table in (CLUSTERS, JOBS):
        assert table.insert.count('?') == len(table.columns)
        assert all(column in table.create for column in table.columns)


def test_a_database_of_another_version_is_refused_with_one_line(tmp_path):
    Store(str(tmp_path)).close()
    db = sqlite3.connect(str(tmp_path / 'state.sqlite'))
    db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError) as info:
        Store(str(tmp_path))
    text = str(info.value)
    assert '\n' not in text
    assert 'state version %d' % (SCHEMA_VERSION + 1) in text
    assert 'reads version %d' % SCHEMA_VERSION in text


def test_a_file_that_is_no_database_is_refused_with_one_line(tmp_path):
    (tmp_path / 'state.sqlite').write_bytes(b'not a database at all' * 100)
    with pytest.raises(StoreError) as info:
        Store(str(tmp_path))
    assert '\n' not in str(info.value) and 'state.sqlite' in str(info.value)


def test_a_removed_clusters_pages_go_back_to_the_file_system(tmp_path):
    """200,000 jobs once left a 277 MB database and a 163 MB log after their cluster closed."""
    import os
    store = Store(str(tmp_path))
    state = new_state(store)
    cluster = add_cluster(state)
    store.put_cluster(cluster)
    for uid in range(80000):
        store.put_job(state.submit(cluster, uid, b'x' * 1000).job)
    store.commit_now()
    assert os.path.getsize(store.path) > 64 * 1024 * 1024
    store.delete_cluster(cluster.cid)
    store.commit_now()
    assert store.compact() > 64 * 1024 * 1024
    assert os.path.getsize(store.path) < 1024 * 1024
    assert os.path.getsize(store.path + '-wal') < 1024 * 1024
    assert store.compact() == 0  # nothing more to hand back
