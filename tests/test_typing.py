"""The installed package carries its type hints (``py.typed``): a type checker sees the public
API's types in a user's program, not ``Any``."""

import os
import subprocess
import sys
import venv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = '''
import concurrent.futures
import dispyscheduler
from dispyscheduler import DispyExecutor, SharedJobCluster

def compute(n: int) -> int:
    return n

cluster = SharedJobCluster(compute, scheduler_port='51349')
future: concurrent.futures.Future = cluster.submit(1).future
reveal_type(DispyExecutor(secret='c').submit(compute, 1))
reveal_type(dispyscheduler.as_completed_async)
'''


def test_a_users_type_checker_sees_the_api(tmp_path):
    # what ``pip install`` would put in site-packages (setup.py's packages and package_data),
    # in an environment of its own (no pip needed: nothing else is installed)
    subprocess.run([sys.executable, 'setup.py', '-q', 'build', '--build-base',
                    str(tmp_path / 'build'), '--build-lib', str(tmp_path / 'lib')],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    assert (tmp_path / 'lib' / 'dispyscheduler' / 'py.typed').exists()
    environment = tmp_path / 'env'
    venv.create(environment, with_pip=False)
    python = environment / 'bin' / 'python'
    site = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()'
                           '["purelib"])'], capture_output=True, text=True,
                          check=True).stdout.strip()
    os.rename(tmp_path / 'lib' / 'dispyscheduler', os.path.join(site, 'dispyscheduler'))
    (tmp_path / 'program.py').write_text(PROGRAM)
    result = subprocess.run([sys.executable, '-m', 'mypy', '--python-executable', str(python),
                             '--no-incremental', 'program.py'], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=300)
    lines = result.stdout.splitlines()
    assert any('"scheduler_port" to "SharedJobCluster" has incompatible type "str"; expected '
               '"int"' in line for line in lines), result.stdout
    assert any('Revealed type is "concurrent.futures._base.Future[Any]"' in line
               for line in lines), result.stdout
    assert any('Revealed type is "def (jobs: typing.Iterable[dispyscheduler.client.job.DispyJob]'
               in line for line in lines), result.stdout
    assert 'import-not-found' not in result.stdout
