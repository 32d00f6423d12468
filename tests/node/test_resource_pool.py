"""The node's ``ResourcePool``: jobs wait for what they need in turn; a job of four CPUs is
not passed by one-CPU jobs that came after it; a job killed while it waits gives its turn on.
Greenlets, no sockets."""

import gevent
import gevent.event

from dispyscheduler.node.computation import ResourcePool
from dispyscheduler.node.grants import Grants, MemoryLimits, RLIMIT
from dispyscheduler.resources import Need

DEADLINE = 10


def pool(cpus=4, gpus=()):
    return ResourcePool(Grants(cpus, 1 << 30, gpus, {}, os_cpus=[0, 1]),
                        MemoryLimits(RLIMIT, 'tests'))


def holder(resources, need, log, name, release):
    """A job: takes its grant, says so, holds it until ``release`` is set."""
    with resources.held(need) as grant:
        log.append((name, len(grant.slots)))
        release.wait(DEADLINE)


def test_a_large_job_waiting_is_not_passed_by_small_ones_that_came_after_it():
    resources, log = pool(), []
    first, wide, small = gevent.event.Event(), gevent.event.Event(), gevent.event.Event()
    running = [gevent.spawn(holder, resources, Need(1), log, 'first', first)]
    gevent.sleep(0)
    waiting = [gevent.spawn(holder, resources, Need(4), log, 'wide', wide),
               gevent.spawn(holder, resources, Need(1), log, 'small', small)]
    gevent.sleep(0)
    assert log == [('first', 1)]  # 3 CPUs free: the small job would fit, but it is not its turn
    first.set()
    with gevent.Timeout(DEADLINE):
        while len(log) < 2:
            gevent.sleep(0.01)
    assert log == [('first', 1), ('wide', 4)]
    assert resources.busy == 4
    wide.set()
    small.set()
    gevent.joinall(running + waiting, timeout=DEADLINE, raise_error=True)
    assert log == [('first', 1), ('wide', 4), ('small', 1)]
    assert resources.busy == 0


def test_a_job_killed_while_it_waits_gives_its_turn_on():
    resources, log = pool(cpus=2), []
    first, later = gevent.event.Event(), gevent.event.Event()
    running = gevent.spawn(holder, resources, Need(2), log, 'first', first)
    gevent.sleep(0)
    killed = gevent.spawn(holder, resources, Need(2), log, 'killed', gevent.event.Event())
    after = gevent.spawn(holder, resources, Need(1), log, 'after', later)
    gevent.sleep(0)
    killed.kill()
    first.set()
    later.set()
    gevent.joinall([running, after], timeout=DEADLINE, raise_error=True)
    assert log == [('first', 2), ('after', 1)]
    assert resources.busy == 0 and resources.grants.free()['cpus'] == 2


def test_no_gpu_is_held_by_two_jobs_at_once():
    resources, seen, holding = pool(cpus=8, gpus=('0', '1')), [], set()

    def gpu_job(index):
        with resources.held(Need(1, gpus=1)) as grant:
            (gpu,) = grant.gpu_ids
            assert gpu not in holding
            holding.add(gpu)
            seen.append(gpu)
            gevent.sleep(0.001 * (index % 3))
            holding.discard(gpu)

    jobs = [gevent.spawn(gpu_job, index) for index in range(12)]
    gevent.joinall(jobs, timeout=DEADLINE, raise_error=True)
    assert len(seen) == 12 and set(seen) == {'0', '1'}
