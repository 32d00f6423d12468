"""Daemons a program runs for itself, in child processes (``runtime/child.py``): a
``JobCluster``'s own scheduler, and the nodes on this host its ``local`` option starts.

Plain ``subprocess``: the program is never monkey-patched. A child serves until its standard
input closes: ``stop()``, the program's exit, or the program killed (its end of the pipe closes
with it), so that nothing outlives the program.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
from typing import Any, Optional

from ..config import NodeConfig, SchedulerConfig, fields_of

logger = logging.getLogger('dispyscheduler')

CHILD_START_TIMEOUT = 30.0
"""Seconds a child daemon may take to bind its sockets and answer."""

CHILD_STOP_TIMEOUT = 15.0
"""Seconds a child daemon may take to stop (saving its state) before it is killed."""


class ChildDaemonError(RuntimeError):
    """A child daemon could not start; the message says why."""


class ChildDaemon:
    """A scheduler or node in a child process; ``ports`` are those it bound."""

    def __init__(self, role: str, config: SchedulerConfig | NodeConfig, log_file: str,
                 debug: bool = False, remove_on_exit: Optional[str] = None) -> None:
        self.role = role
        self.log_file = log_file
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [package_root,
                                                          env.get('PYTHONPATH')]))
        with open(log_file, 'ab') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'dispyscheduler.runtime.child'], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, env=env,
                start_new_session=True)  # Ctrl-C in the program's terminal is the program's
        request = {'role': role, 'config': fields_of(config), 'log_file': log_file,
                   'debug': debug, 'remove_on_exit': remove_on_exit}
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request).encode() + b'\n')
            self.process.stdin.flush()
            answer = self._read_answer()
        except BaseException:
            self.stop()
            raise
        if 'error' in answer:
            self.stop()
            raise ChildDaemonError('%s could not start: %s' % (role, answer['error']))
        self.ports: dict[str, int] = answer

    def _read_answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(CHILD_START_TIMEOUT):
                raise ChildDaemonError('%s did not start within %d seconds (see %s)'
                                       % (self.role, CHILD_START_TIMEOUT, self.log_file))
        line = self.process.stdout.readline()
        if not line:
            raise ChildDaemonError('%s exited at start (status %s; see %s)'
                                   % (self.role, self.process.wait(), self.log_file))
        answer: dict[str, Any] = json.loads(line)
        return answer

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: Optional[float] = CHILD_STOP_TIMEOUT) -> Optional[int]:
        """Close its input (it stops as on SIGTERM) and wait; killed after ``timeout``."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning('%s (pid %d) did not stop in %g s; killed', self.role,
                           self.process.pid, timeout)
            self.process.kill()
            return self.process.wait()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
