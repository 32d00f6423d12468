"""A cluster's results on their way to its client: at most a window of them sent ahead of the
client's acknowledgements, the rest waiting in order; saved ones leave memory."""

from dispyscheduler.scheduler.outbox import Outbox, message_size
from dispyscheduler.wire.messages import JobEnd


def result(uid, size=1000):
    return JobEnd(uid=uid, status=5, result=b'r' * size, exception=None, stdout='', stderr='',
                  start_time=None, end_time=None, ip_addr=None, tag=None)


def add(outbox, message):
    return outbox.add(message, message_size(message))


def test_results_beyond_the_window_wait_for_acknowledgements_in_order():
    outbox = Outbox(window=3 * message_size(result(0)))
    outbox.attach()
    sent = [uid for uid in range(10) if add(outbox, result(uid))]
    assert sent == [0, 1, 2]
    assert outbox.take() == []  # no room
    assert outbox.acknowledged(0) and outbox.acknowledged(1)
    assert not outbox.acknowledged(1)  # a repeated acknowledgement
    assert [uid for uid, _ in outbox.take()] == [3, 4]
    assert not add(outbox, result(10))  # behind those that wait, though there may be room
    assert len(outbox) == 9 and 10 in outbox and 0 not in outbox


def test_saved_results_leave_memory_and_are_read_back_when_sent():
    outbox = Outbox(window=2 * message_size(result(0, 10 ** 6)))
    outbox.attach()
    for uid in range(5):
        add(outbox, result(uid, 10 ** 6))
        outbox.saved(uid)
    assert outbox.resident_bytes == 0
    for uid in (0, 1):
        outbox.acknowledged(uid)
    assert outbox.take() == [(2, None), (3, None)]  # None: read it from the store


def test_a_client_away_gets_everything_when_it_comes_back_first_what_it_was_sent():
    outbox = Outbox(window=2 * message_size(result(0)))
    outbox.attach()
    for uid in range(4):
        add(outbox, result(uid))
    outbox.detach()
    assert not add(outbox, result(4))
    assert outbox.take() == []  # nobody to send to
    generation = outbox.generation
    outbox.attach()
    assert outbox.generation != generation  # reads for the old link are dropped
    assert [uid for uid, _ in outbox.take()] == [0, 1]
    outbox.acknowledged(0)
    outbox.acknowledged(1)
    assert [uid for uid, _ in outbox.take()] == [2, 3]


def test_results_restored_after_a_restart_wait_for_their_client():
    outbox = Outbox(window=100)
    outbox.restored(7, 60)
    outbox.restored(8, 60)
    outbox.attach()
    assert outbox.take() == [(7, None), (8, None)]  # one may pass the window
    assert outbox.take() == []
