"""``JobEnd`` (``job.finish``): a one-shot event that any number of threads wait on."""

import threading
import time

from dispyscheduler.client.job import JobEnd


def test_wait_times_out_until_set():
    end = JobEnd()
    started = time.monotonic()
    assert end.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    assert not end.is_set()
    assert end.wait(0) is False


def test_every_waiter_wakes_and_later_waits_return_at_once():
    end = JobEnd()
    woke = []
    threads = [threading.Thread(target=lambda: woke.append(end.wait(10))) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    assert woke == []
    end.set()
    end.set()  # a second set changes nothing
    for thread in threads:
        thread.join(5)
    assert woke == [True] * 5
    assert end.is_set() and end.isSet()
    assert end.wait() is True and end.wait(0) is True
