"""Running a program's callbacks: one at a time, in order, on a thread of their own."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

logger = logging.getLogger('dispyscheduler')


class CallbackRunner:
    """A queue of calls and the thread that makes them; ``join`` waits for it to empty."""

    def __init__(self) -> None:
        self.calls: collections.deque[tuple[Callable[..., Any], tuple]] = collections.deque()
        self.pending = 0  # queued or running
        self.condition = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name='dispyscheduler-callbacks')

    def start(self) -> None:
        self.thread.start()

    def put(self, function: Callable[..., Any], *args: Any) -> None:
        with self.condition:
            self.calls.append((function, args))
            self.pending += 1
            self.condition.notify_all()

    def run(self) -> None:
        while True:
            with self.condition:
                while not self.calls and not self.stopping:
                    self.condition.wait()
                if not self.calls:
                    return
                function, args = self.calls.popleft()
            try:
                function(*args)
            except Exception:
                logger.exception('callback %s raised', getattr(function, '__name__', function))
            finally:
                with self.condition:
                    self.pending -= 1
                    self.condition.notify_all()

    def join(self, deadline: float | None = None) -> bool:
        """Wait until every queued call has run (``deadline``: ``time.monotonic()`` value);
        False on timeout. From a callback itself it returns at once: waiting there would
        wait for itself."""
        if threading.current_thread() is self.thread:
            return True
        with self.condition:
            while self.pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.condition.wait(remaining)
        return True

    def stop(self) -> None:
        """Run what is queued, then end the thread."""
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        if threading.current_thread() is not self.thread:
            self.thread.join(5)
