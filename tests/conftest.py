import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daemons import Cluster  # noqa: E402

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # started in the background by a shell (``cmd &``), which ignores SIGINT for it: Python
    # then installs no handler, and the Ctrl-C tests would see none
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def in_temporary_directory(tmp_path, monkeypatch):
    """Each test runs in a directory of its own: files clients write there (recovery files,
    files jobs send back) never land in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def daemons(tmp_path, request):
    """Real daemons on loopback for one test; every process they started must be gone after."""
    cluster = Cluster(tmp_path)
    yield cluster
    failed = getattr(request.node, 'rep_call', None)
    if failed is not None and failed.failed:
        for daemon in cluster.daemons:
            sys.stderr.write('----- %s log -----\n%s\n' % (daemon.name, daemon.log()[-5000:]))
    cluster.stop_and_check()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, 'rep_' + report.when, report)
