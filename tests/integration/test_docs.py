"""The README's commands and the dispy migration guide's program, run as printed.

The daemons run with the README's one-host command lines on the default ports (51347-51349);
the tests skip only when another program already holds those ports.
"""

import os
import re
import subprocess
import sys

import pytest

from daemons import REPO, Cluster, port_free

ADDRESSES = ('127.0.0.1', '127.0.0.2', '127.0.0.3')


@pytest.fixture(scope='module')
def readme_setup(tmp_path_factory):
    if not all(port_free(address, port) for address in ADDRESSES
               for port in (51347, 51348, 51349)):
        pytest.skip('default ports 51347-51349 are in use by another program on this host')
    directory = tmp_path_factory.mktemp('readme')
    daemons = Cluster(directory)
    scheduler = daemons.spawn('scheduler', [
        os.path.join(REPO, 'bin', 'dispyscheduler'), '-i', '127.0.0.1', '--node_secret', 's',
        '--cluster_secret', 'c', '-n', '127.0.0.2', '-n', '127.0.0.3',
        '--dest_path_prefix', str(directory / 'scheduler')])
    try:
        scheduler.wait_log('serving nodes')
        for address in ADDRESSES[1:]:
            daemons.spawn('node-' + address, [
                os.path.join(REPO, 'bin', 'dispynode'), '-i', address, '--cpus', '2', '-s', 's',
                '--scheduler_node', '127.0.0.1', '--dest_path_prefix', str(directory / address)])
        for address in ADDRESSES[1:]:
            scheduler.wait_log(r'node %s:51348 .* joined' % address)
        yield directory
    finally:
        daemons.stop_and_check()


def run_program(path, cwd):
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=str(cwd), env=dict(os.environ, PYTHONPATH=REPO))


def test_readme_setup_serves_a_plain_script(readme_setup, tmp_path):
    program = tmp_path / 'program.py'
    program.write_text(
        'from dispyscheduler import SharedJobCluster\n'
        'def compute(n):\n'
        '    return n + 1\n'
        'if __name__ == "__main__":\n'
        '    cluster = SharedJobCluster(compute, scheduler_node="127.0.0.1", secret="c")\n'
        '    jobs = [cluster.submit(n) for n in range(10)]\n'
        '    print(sum(job() for job in jobs))\n'
        '    cluster.close()\n')
    result = run_program(program, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sum(range(1, 11)))


def test_migration_guide_program_runs_as_printed(readme_setup, tmp_path):
    with open(os.path.join(REPO, 'docs', 'moving-from-dispy.md')) as handle:
        blocks = re.findall(r'```python\n(.*?)```', handle.read(), re.S)
    assert len(blocks) == 1
    program = tmp_path / 'guide.py'
    program.write_text(blocks[0])
    result = run_program(program, tmp_path)
    assert result.returncode == 0, result.stderr
    for n in range(8):
        assert 'job %d: %d from 127.0.0.' % (n, n * 10) in result.stdout
        with open(tmp_path / ('job-%d.txt' % n)) as handle:  # sent back by dispy_send_file
            assert handle.read().startswith('job %d ran on ' % n)
    assert 'node 127.0.0.2 ready' in result.stdout and 'node 127.0.0.3 ready' in result.stdout
    assert 'Sec/Job' in result.stdout


def test_readme_first_program_runs_with_nothing_started_beforehand(tmp_path):
    """The README's first program (a JobCluster with ``local=True``) as printed: no daemon
    started by hand."""
    with open(os.path.join(REPO, 'README.md')) as handle:
        readme = handle.read()
    running_it = readme[readme.index('## Running it'):]
    match = re.search(r'\n\n((?:    .*\n|\n)+?)\n(?! )', running_it)
    program = tmp_path / 'first.py'
    program.write_text(re.sub(r'^    ', '', match.group(1), flags=re.M))
    assert 'JobCluster(compute, local=True)' in program.read_text()
    result = run_program(program, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sum(n * n for n in range(1000)))


def habits_programs():
    """The fenced programs of the README's "Python's habits" section."""
    with open(os.path.join(REPO, 'README.md')) as handle:
        readme = handle.read()
    section = readme[readme.index("## Python's habits"):]
    section = section[:section.index('\n## ')]
    return re.findall(r'```python\n(.*?)```', section, re.S)


def has_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def test_readme_habits_programs_run_as_printed(readme_setup, tmp_path):
    programs = habits_programs()
    assert len(programs) == 3
    outputs = []
    for number, text in enumerate(programs):
        if 'sklearn' in text and not has_sklearn():
            outputs.append(None)  # an optional package
            continue
        program = tmp_path / ('habit%d.py' % number)
        program.write_text(text)
        result = run_program(program, tmp_path)
        assert result.returncode == 0, result.stderr
        assert 'recover_jobs' not in result.stderr  # each closed its cluster
        outputs.append(result.stdout)
    executor, joblib, asyncio = outputs
    assert sorted(line for line in executor.splitlines() if line.startswith('strike')) == \
        sorted('strike %d price %r' % (strike, max(0.0, 100 * 0.2 - strike))
               for strike in range(10))
    assert 'total %r' % sum(max(0.0, 100 * 0.3 - strike) for strike in range(1000)) in executor
    if joblib is not None:  # the same search in this process, without the cluster
        from sklearn.datasets import load_iris
        from sklearn.model_selection import GridSearchCV
        from sklearn.svm import SVC
        search = GridSearchCV(SVC(), {'C': [0.1, 1, 10], 'gamma': ['scale', 0.1]}, cv=3)
        search.fit(*load_iris(return_X_y=True))
        assert 'best %r' % (search.best_params_,) in joblib
    assert 'sum %d' % sum(n * n for n in range(200)) in asyncio
    assert sorted(line for line in asyncio.splitlines() if line.startswith('job')) == \
        sorted('job %d gave %d' % (uid, (uid - 201) ** 2) for uid in range(201, 211))


def test_readme_resources_program_runs_as_printed(readme_setup, tmp_path):
    with open(os.path.join(REPO, 'README.md')) as handle:
        readme = handle.read()
    section = readme[readme.index('## Resources per job'):]
    section = section[:section.index('\n## ')]
    (text,) = re.findall(r'```python\n(.*?)```', section, re.S)
    program = tmp_path / 'resources.py'
    program.write_text(text)
    result = run_program(program, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == ['cpus 2, pinned to them: True'] * 4 + ['cpus 1, pinned to them: True']
    assert 'no node this cluster may use could ever run the job' in lines[5]
    assert '64 CPUs (the largest node has 2)' in lines[5]
