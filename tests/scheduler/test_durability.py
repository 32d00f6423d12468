"""``Durability``: commits run on a thread of their own, so name lookups (which gevent does on
the hub's thread pool) never wait in front of them (issue 17, 7). Run in a gevent process of
its own, so that this one is not monkey-patched."""

import subprocess
import sys
import textwrap

from daemons import REPO

SCRIPT = textwrap.dedent('''
    import gevent.monkey
    gevent.monkey.patch_all()
    import os, sys, tempfile
    import gevent
    from gevent.monkey import get_original
    from dispyscheduler.scheduler.durability import Durability
    from dispyscheduler.scheduler.model import State
    from dispyscheduler.scheduler.store import Store

    store = Store(tempfile.mkdtemp())
    durability = Durability(store)
    gevent.spawn(durability.run_flusher)
    pool = gevent.get_hub().threadpool
    blocking_sleep = get_original('time', 'sleep')
    for _ in range(pool.maxsize):  # every thread of the hub's pool busy for a long time
        pool.spawn(blocking_sleep, 60)
    gevent.sleep(0.1)
    cluster = State().add_cluster('c', b'code', [('*', 0)], False, True).cluster
    durability.put_cluster(cluster)
    with gevent.Timeout(30, AssertionError('the commit waited for the busy pool')):
        durability.wait_until_durable()
    print('OK', flush=True)
    os._exit(0)  # without waiting for the sleeping threads
''')


def test_commits_do_not_wait_for_the_hubs_busy_thread_pool():
    done = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == 'OK', done.stderr[-3000:]


def test_payload_files_are_made_durable_before_the_commit_that_refers_to_them(tmp_path,
                                                                              monkeypatch,
                                                                              caplog):
    """A payload file named by ``sync_file`` is fsynced on the committer's thread just before
    the batch's transaction; one already removed (its result delivered) costs nothing; one
    that cannot be made durable is logged, and the commit goes on (the scheduler serves on)."""
    from dispyscheduler.scheduler import durability as module
    from dispyscheduler.scheduler.store import Store

    (tmp_path / 'state').mkdir()
    durability = module.Durability(Store(str(tmp_path / 'state')))
    events = []
    real_fsync = module.os.fsync

    def fsync(fd):
        events.append(('fsync', module.os.readlink('/proc/self/fd/%d' % fd)))
        real_fsync(fd)

    def failing_fsync(fd):
        raise OSError(5, 'Input/output error')

    monkeypatch.setattr(module.os, 'fsync', fsync)
    monkeypatch.setattr(durability.store, 'try_commit',
                        lambda statements: events.append(('commit', statements)))
    kept, gone = tmp_path / 'kept', tmp_path / 'gone'
    kept.write_bytes(b'x' * 1000)
    try:
        assert durability.commit_batch(['statement'], [str(kept), str(gone)]) is None
        assert events == [('fsync', str(kept)), ('commit', ['statement'])]
        events.clear()
        monkeypatch.setattr(module.os, 'fsync', failing_fsync)
        assert durability.commit_batch(['statement'], [str(kept)]) is None
        assert events == [('commit', ['statement'])]
        assert 'cannot make %s durable (a power cut could lose it): Input/output error' % kept \
            in caplog.text
    finally:
        durability.close()
