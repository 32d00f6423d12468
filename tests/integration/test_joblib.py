"""joblib's 'dispyscheduler' backend (client/joblib_backend.py) against the real daemons:
joblib's ``Parallel`` and scikit-learn's ``GridSearchCV`` run their calls on the nodes and give
what they give in this process; a call's exception comes back with its type; one cluster
serves a ``parallel_backend`` block and is closed when the block ends. joblib and scikit-learn
are test requirements (requirements-test.txt), so these run in CI."""

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import weakref

import pytest
from daemons import REPO, free_ports, wait_for

joblib = pytest.importorskip('joblib')
pytest.importorskip('sklearn')

from joblib import Parallel, delayed, parallel_backend  # noqa: E402

from dispyscheduler.client import joblib_backend  # noqa: E402

DEADLINE = 60


@pytest.fixture
def start(daemons):
    """``start(*scheduler_options, nodes=...)``: a scheduler (its status page on
    ``daemons.http_port``) and nodes of 2 CPUs each; the backend's options for them. After
    the test, every cluster must have been closed (once the garbage collector has freed
    what is left of the test)."""
    def start(*extra, nodes=('127.0.0.2', '127.0.0.3')):
        (daemons.http_port,) = free_ports(1)
        daemons.start_scheduler('--httpd', '127.0.0.1:%d' % daemons.http_port, *extra,
                                nodes=nodes)
        for ip in nodes:
            daemons.start_node(ip)
        joblib_backend.register()  # once joblib is imported the package does it too
        return daemons.client_options()
    yield start
    if daemons.scheduler is not None and daemons.scheduler.alive():
        gc.collect()
        wait_for(lambda: not clusters(daemons), DEADLINE, 'every cluster to be closed')


@pytest.fixture
def options(start):
    """The backend's options for a scheduler and two nodes of 2 CPUs each."""
    return start()


def clusters(daemons):
    """The clusters the scheduler holds (its status page)."""
    url = 'http://127.0.0.1:%d/status' % daemons.http_port
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read().decode())['clusters']


def square(n):
    return n * n


def square_and_pid(n):
    return n * n, os.getpid()


class OddInput(Exception):
    pass


def fails_on(n, bad):
    if n == bad:
        raise OddInput('input %d refused' % n)
    return n


def gated(i, directory):
    """Says where it runs (its node's directory), then waits for the test to release it."""
    with open(os.path.join(directory, 'started-%d' % i), 'w') as marker:
        marker.write(os.getcwd())
    while not os.path.exists(os.path.join(directory, 'release')):
        time.sleep(0.01)
    return i


def started_on(directory, node):
    names = [name for name in os.listdir(directory) if name.startswith('started-')]
    return any(node in (directory / name).read_text() for name in names)


def closed_after_the_block(executor, daemons, collect=False):
    """The backend's cluster is closed once joblib has let go of the backend: as the block
    ends, or when joblib's callback thread returns from the last batch's callback. With
    ``collect``, a garbage collection is allowed to be what lets go of it (as documented,
    after a ``Parallel`` call raised)."""
    def closed():
        if collect:
            gc.collect()
        return refuses(executor)

    wait_for(closed, DEADLINE, 'the executor to refuse calls')
    wait_for(lambda: not clusters(daemons), DEADLINE, 'the cluster to be closed')


def refuses(executor):
    try:
        executor.submit(square, 2)
    except RuntimeError as exc:
        assert 'after shutdown' in str(exc)
        return True
    return False


def nodes_of(backend):
    return backend.executor.cluster.status().nodes


def both_nodes_serve(backend):
    wait_for(lambda: len(nodes_of(backend)) == 2, DEADLINE,
             "both nodes to set the cluster's computation up")


def test_parallel_gives_what_it_gives_in_this_process(options):
    expected = Parallel(n_jobs=1)(delayed(square)(i) for i in range(200))
    with parallel_backend('dispyscheduler', **options) as (backend, n_jobs):
        assert isinstance(backend, joblib_backend.DispyBackend) and n_jobs == -1
        assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(200)) == expected
        # the calls ran in the nodes' worker processes, not here
        results = Parallel(n_jobs=-1)(delayed(square_and_pid)(i) for i in range(200))
        assert [value for value, _ in results] == expected
        assert os.getpid() not in {pid for _, pid in results}
        # closures and lambdas travel too, in batches of any size
        offset = 7
        assert Parallel(n_jobs=-1, batch_size=13)(
            delayed(lambda x: x + offset)(i) for i in range(50)) == [i + 7 for i in range(50)]
        both_nodes_serve(backend)
        nodes = nodes_of(backend)
        assert sum(node.jobs_done for node in nodes) > 0
        assert backend.effective_n_jobs(-1) == 4  # 2 nodes of 2 CPUs
        assert backend.effective_n_jobs(-2) == 3
        assert backend.effective_n_jobs(3) == 3
        assert joblib.effective_n_jobs() == 4  # as scikit-learn asks it
        del backend


def test_grid_search_finds_what_it_finds_in_this_process(options):
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = {'C': [0.1, 1, 10], 'gamma': ['scale', 0.1]}
    here = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)
    with parallel_backend('dispyscheduler', **options) as (backend, _):
        there = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(X, y)
        jobs_done = sum(node.jobs_done for node in nodes_of(backend))
        del backend
    assert there.best_params_ == here.best_params_
    assert list(there.cv_results_['mean_test_score']) == list(
        here.cv_results_['mean_test_score'])
    assert there.score(X, y) == here.score(X, y)
    assert jobs_done > 0  # the fits ran on the nodes


def test_batches_wait_for_room_when_the_scheduler_holds_few_jobs(start):
    """joblib keeps 2 * n_jobs batches going; a scheduler that holds 2 jobs of a cluster makes
    their submissions wait for room, in this thread and in the backend's callback thread."""
    with parallel_backend('dispyscheduler', **start('--max_cluster_jobs', '2')):
        assert Parallel(n_jobs=-1, batch_size=1, timeout=DEADLINE)(
            delayed(square)(i) for i in range(100)) == [i * i for i in range(100)]


def test_calls_lost_with_their_node_run_again_on_another(options, daemons, tmp_path):
    """The backend's cluster is reentrant: ``Parallel`` gives every value though a node
    running some of its calls is killed."""
    gate = tmp_path / 'gate'
    gate.mkdir()
    outcome = {}

    def run():  # joblib's backend is per thread: the block is the thread's
        try:
            with parallel_backend('dispyscheduler', **options):
                outcome['values'] = Parallel(n_jobs=-1, batch_size=1, timeout=DEADLINE)(
                    delayed(gated)(i, str(gate)) for i in range(8))
        except Exception as exc:  # its traceback would keep the backend (and the cluster)
            outcome['error'] = '%s: %s' % (type(exc).__name__, exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: started_on(gate, 'node-127.0.0.3'), DEADLINE,
                 'a call to run on 127.0.0.3')
        daemons.daemons[-1].kill()  # 127.0.0.3, its worker processes with it
    finally:
        (gate / 'release').touch()
        thread.join(DEADLINE)
    assert 'error' not in outcome, outcome['error']
    assert outcome['values'] == list(range(8))


def test_an_exception_comes_back_with_its_type_and_the_cluster_goes_on(options, daemons):
    with parallel_backend('dispyscheduler', **options) as (backend, _):
        executor = backend.executor
        del backend
        try:
            Parallel(n_jobs=-1)(delayed(fails_on)(i, 13) for i in range(100))
        except OddInput as exc:
            assert str(exc) == 'input 13 refused'
            assert 'fails_on' in str(exc.__cause__)  # the node's traceback
        else:
            raise AssertionError('no exception')
        with pytest.raises(ZeroDivisionError):
            Parallel(n_jobs=-1)(delayed(lambda: 1 / 0)() for _ in range(3))
        # the same cluster takes the next call
        assert Parallel(n_jobs=-1)(delayed(fails_on)(i, -1) for i in range(20)) == list(
            range(20))
    # two calls raised: once (two test runs at a time on two vCPUs) the backend was still
    # held 60 s after the block and a garbage collection freed it, a reference cycle formed
    # only in some timing (not found; joblib's callback thread is the suspect). The
    # cycle-free case is test_a_call_that_raised_leaves_the_cluster_closed_as_the_block_ends
    closed_after_the_block(executor, daemons, collect=True)


def test_a_call_that_raised_leaves_the_cluster_closed_as_the_block_ends(options, daemons):
    gc.collect()
    gc.disable()
    try:
        with parallel_backend('dispyscheduler', **options) as (backend, _):
            backend = weakref.ref(backend)
            with pytest.raises(OddInput):
                Parallel(n_jobs=-1)(delayed(fails_on)(i, 3) for i in range(10))
        # joblib's callback thread may hold the backend a moment longer
        wait_for(lambda: backend() is None, 5, 'the backend to be freed')
    finally:
        gc.enable()


def test_one_cluster_per_block_closed_when_the_block_ends(options, daemons):
    gc.collect()
    gc.disable()  # freed as the block ends, not by the garbage collector
    try:
        with joblib.parallel_config(backend='dispyscheduler', **options) as config:
            executor = config['backend'].executor
            Parallel()(delayed(square)(i) for i in range(10))
            Parallel(n_jobs=-1)(delayed(square)(i) for i in range(10))
            assert config['backend'].executor is executor
            assert len(clusters(daemons)) == 1
            del config
        closed_after_the_block(executor, daemons)
    finally:
        gc.enable()
    # a backend of the program's own, closed explicitly: later calls raise
    with joblib_backend.DispyBackend(**options) as backend:
        with joblib.parallel_config(backend=backend):
            assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(5)) == [
                0, 1, 4, 9, 16]
    assert not clusters(daemons)  # close() returns once closed
    with pytest.raises(RuntimeError, match='closed'):
        with joblib.parallel_config(backend=backend):
            Parallel(n_jobs=-1)(delayed(square)(i) for i in range(5))


def test_a_program_that_exits_in_the_block_closes_its_cluster(options, daemons, tmp_path):
    """The backend still held at exit (here by ``backend``): the cluster is closed as the
    program exits, its unfinished calls cancelled."""
    program = tmp_path / 'program.py'
    program.write_text(textwrap.dedent('''
        import sys, time
        import joblib
        import dispyscheduler

        def square(n):
            return n * n

        def slow(n):
            time.sleep(60)

        options = dict(scheduler_node='127.0.0.1', scheduler_port=int(sys.argv[1]),
                       secret=sys.argv[2])
        with joblib.parallel_backend('dispyscheduler', **options) as (backend, _):
            print(joblib.Parallel(n_jobs=-1)(joblib.delayed(square)(i) for i in range(10)))
            # calls left running: a generator never read to its end
            results = joblib.Parallel(n_jobs=-1, return_as='generator')(
                joblib.delayed(slow)(i) for i in range(4))
            sys.exit(0)
        '''))
    result = subprocess.run([sys.executable, str(program), str(options['scheduler_port']),
                             options['secret']], capture_output=True, text=True,
                            timeout=DEADLINE, cwd=str(tmp_path),
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str([n * n for n in range(10)])]
    # joblib may warn of the calls it cancelled; the cluster says nothing (it would say that
    # the program ended without closing it, and how to collect its jobs' results)
    assert 'dispyscheduler' not in result.stderr and 'Traceback' not in result.stderr, \
        result.stderr
    assert not clusters(daemons)


def test_a_cluster_with_no_node_says_so_after_the_timeout(start):
    with parallel_backend('dispyscheduler', wait_for_nodes_timeout=0.5, **start(nodes=())):
        with pytest.raises(TimeoutError, match='no node after 0.5 seconds'):
            Parallel(n_jobs=-1)(delayed(square)(i) for i in range(5))


def test_importing_the_package_imports_no_joblib_and_joblib_finds_the_backend():
    program = ('import sys, dispyscheduler, dispyscheduler.client.executor\n'
               'assert "joblib" not in sys.modules\n'
               'import joblib.parallel\n'
               'assert "dispyscheduler" in joblib.parallel.BACKENDS\n')
    result = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True,
                            timeout=DEADLINE, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
