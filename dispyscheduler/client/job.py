"""``DispyJob``: one call of the computation, as the user's program sees it."""

import threading
import time

from ..constants import (
    ABANDONED,
    CANCELLED,
    CREATED,
    FINISHED,
    PROVISIONAL_RESULT,
    RUNNING,
    STATUS_NAMES,
    TERMINATED,
)


class DispyJob:
    """A submitted job. Its attributes fill in as the job runs; ``job()`` waits for the end
    and returns ``job.result``."""

    Created = CREATED
    Running = RUNNING
    ProvisionalResult = PROVISIONAL_RESULT
    Cancelled = CANCELLED
    Terminated = TERMINATED
    Abandoned = ABANDONED
    Finished = FINISHED

    def __init__(self, args, kwargs):
        self.id = None
        self.args = args
        self.kwargs = kwargs
        self.result = None
        self.stdout = None
        self.stderr = None
        self.exception = None
        self.status = CREATED
        self.submit_time = time.time()
        self.start_time = None
        self.end_time = None
        self.ip_addr = None
        self.finish = threading.Event()
        self._uid = None

    def __call__(self, clear=False):
        """Wait until the job ends and return its result (``clear`` drops it here)."""
        self.finish.wait()
        result = self.result
        if clear:
            self.result = None
        return result

    def __repr__(self):
        return '<DispyJob %s %s>' % (self.id, STATUS_NAMES.get(self.status, self.status))
