"""Ctrl-C for tests: SIGINT to the main thread once it is blocked waiting for a job."""

import signal
import sys
import threading
import time

from dispyscheduler.client.job import JobEnd


class Interrupter:
    """Sends SIGINT (Ctrl-C) to the main thread once that is blocked in ``JobEnd.wait``,
    unless ``stop`` came first; gives up after ``deadline`` seconds."""

    def __init__(self, deadline=60.0):
        self.deadline = deadline
        self.main = threading.main_thread().ident
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._interrupt, name='interrupter', daemon=True)
        self.thread.start()

    def _main_thread_waits(self):
        frame = sys._current_frames().get(self.main)
        while frame is not None:
            if frame.f_code is JobEnd.wait.__code__:
                return True
            frame = frame.f_back
        return False

    def _interrupt(self):
        deadline = time.monotonic() + self.deadline
        while not self._main_thread_waits():  # polling to see it block, not a hand-off
            if self.stopped.wait(0.001) or time.monotonic() > deadline:
                return
        signal.pthread_kill(self.main, signal.SIGINT)

    def stop(self):
        self.stopped.set()
        self.thread.join(self.deadline)
        assert not self.thread.is_alive()
