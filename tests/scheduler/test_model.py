"""Unit tests of the scheduler's bookkeeping (``State``): installs, dispatch, fair share,
cancellation, lost nodes and removed clusters. No I/O: every event's return value is checked.
"""

import collections

import pytest

from dispyscheduler.constants import CANCELLED, CREATED, FINISHED, RUNNING, TERMINATED
from dispyscheduler.scheduler.model import (FAILED, INSTALLING, READY, Cancellation, Placed,
                                            Rescheduled, State)

ALL = [('*', 0)]


def new_cluster(state, name='c', patterns=ALL, reentrant=False, cleanup=True,
                short_jobs=True):
    """A cluster; with ``short_jobs``, as once its jobs were seen to take under a second
    (two in flight per CPU: what most tests here place), else as new (one per CPU)."""
    cluster = state.add_cluster(name, b'code', patterns, reentrant, cleanup).cluster
    if short_jobs:
        cluster.ran(0.5)
    return cluster


def ready_node(state, key, cpus=1, ip_addr=None, name=None, port=51348):
    """A node that joined and finished installing every cluster it was given."""
    ip_addr = ip_addr or '10.0.0.%d' % (len(state.nodes) + 1)
    added = state.add_node(key, name or key, ip_addr, port, cpus)
    node, dispatches = added.node, []
    for cluster in added.clusters:
        dispatches += state.compute_ready(node, cluster.cid)
    return node, dispatches


def submit_many(state, cluster, count, start=0):
    jobs, dispatches = [], []
    for uid in range(start, start + count):
        placed = state.submit(cluster, uid, b'args')
        jobs.append(placed.job)
        dispatches += placed.dispatches
    return jobs, dispatches


def check_invariants(state):
    """Counters agree with the indexes they summarise."""
    for cluster in state.clusters.values():
        live_queued = cluster.queue.jobs()
        assert cluster.queued == len(live_queued)
        assert cluster.in_flight == sum(1 for job in cluster.jobs.values() if job.node)
    for node in state.nodes.values():
        assert len(node.jobs) <= node.slots or node.slots == 0  # 0: leaving, its jobs end
        assert (node in state.free_nodes) == (node.light_room() and node.reserved is None)
        for job in node.jobs.values():
            assert job.node is node and state.jobs[job.jid] is job
        per_cluster = collections.Counter(job.cluster.cid for job in node.jobs.values())
        assert +node.jobs_of == per_cluster


def test_a_new_clusters_first_jobs_go_one_per_cpu_and_spread_over_nodes_ready_later():
    """Before any job has ended, how long they take is unknown: each node gets one per CPU,
    so a node that finishes installing later still gets its share (it once got none: the
    first node ready took two per CPU, and jobs on a node stay there)."""
    state = State(max_depth=2)
    cluster = new_cluster(state, short_jobs=False)
    first, _ = ready_node(state, 'first', cpus=2)
    _, dispatches = submit_many(state, cluster, 4)
    assert [node for node, _ in dispatches] == [first, first]
    second, later = ready_node(state, 'second', cpus=2)
    assert [node for node, _ in later] == [second, second]


# installs

def test_install_lists_follow_node_patterns():
    state = State(max_depth=2)
    local = state.add_node('a', 'alpha', '127.0.0.1', 51348, 1).node
    remote = state.add_node('b', 'beta', '10.0.0.2', 51348, 1).node
    other_port = state.add_node('c', 'gamma', '127.0.0.3', 9000, 1).node
    added = state.add_cluster('local', b'', [('127.0.0.*', 51348)], False, True)
    cluster, nodes = added.cluster, added.nodes
    assert nodes == [local]
    assert local.clusters == {cluster.cid: INSTALLING}
    assert remote.clusters == {} and other_port.clusters == {}
    added = state.add_cluster('named', b'', [('beta', 0)], False, True)
    by_name, nodes = added.cluster, added.nodes
    assert nodes == [remote]
    added = state.add_cluster('all', b'', ALL, False, True)
    everywhere, nodes = added.cluster, added.nodes
    assert set(nodes) == {local, remote, other_port}
    # a node joining later gets exactly the clusters whose patterns it matches
    added = state.add_node('d', 'beta', '127.0.0.4', 51348, 2)
    late, clusters = added.node, added.clusters
    assert set(clusters) == {cluster, by_name, everywhere}
    assert late.clusters == {cluster.cid: INSTALLING, by_name.cid: INSTALLING,
                             everywhere.cid: INSTALLING}
    assert cluster.cid != by_name.cid != everywhere.cid


def test_compute_ready_only_for_an_installing_cluster():
    state = State(max_depth=2)
    cluster = new_cluster(state, patterns=[('10.0.0.1', 0)])
    node = state.add_node('a', 'a', '10.0.0.1', 1, 1).node
    outsider = state.add_node('b', 'b', '10.0.0.2', 1, 1).node
    state.submit(cluster, 0, b'')
    assert state.compute_ready(outsider, cluster.cid) == []  # never asked to install it
    assert state.compute_ready(node, 999) == []  # unknown cluster
    assert len(state.compute_ready(node, cluster.cid)) == 1
    assert node.clusters[cluster.cid] == READY
    assert state.compute_ready(node, cluster.cid) == []  # repeated report


def test_no_dispatch_before_compute_ready():
    state = State(max_depth=2)
    cluster = new_cluster(state)
    added = state.add_node('a', 'a', '10.0.0.1', 1, 2)
    node, clusters = added.node, added.clusters
    assert clusters == [cluster]
    jobs, dispatches = submit_many(state, cluster, 3)
    assert dispatches == []
    assert cluster.queued == 3 and node.jobs == {}
    assert state.compute_ready(node, cluster.cid) == [(node, job) for job in jobs]
    assert cluster.queued == 0 and cluster.in_flight == 3
    check_invariants(state)


def test_failed_install_gets_no_jobs():
    state = State(max_depth=2)
    cluster = new_cluster(state)
    node = state.add_node('a', 'a', '10.0.0.1', 1, 2).node
    assert state.compute_failed(node, cluster.cid) == Rescheduled([], [], [])
    assert node.clusters[cluster.cid] == FAILED
    _, dispatches = submit_many(state, cluster, 2)
    assert dispatches == [] and cluster.queued == 2


# dispatch

def test_submit_dispatches_to_the_least_loaded_node():
    """Load is jobs per CPU: a 4-CPU node takes four jobs for every one of a 1-CPU node."""
    state = State(max_depth=2)
    cluster = new_cluster(state)
    small, _ = ready_node(state, 'small', cpus=1)  # 2 slots
    big, _ = ready_node(state, 'big', cpus=4)  # 8 slots
    placed = []
    for uid in range(10):
        free = [node for node in (small, big) if len(node.jobs) < node.slots]
        lowest = min(node.load for node in free)
        ((node, job),) = state.submit(cluster, uid, b'').dispatches
        assert node.load - 1 / node.cpus == lowest  # its load before this job was minimal
        placed.append(node)
    assert placed.count(small) == 2 and placed.count(big) == 8
    assert placed[:5] == [big, small, big, big, big]  # the tie at 0: the node ready last
    check_invariants(state)


def test_two_equal_nodes_share_a_batch_evenly():
    """Each job goes to a least loaded node; of two equally loaded ones, to the one whose load
    changed last."""
    state = State(max_depth=2)
    cluster = new_cluster(state)
    first, _ = ready_node(state, 'first', cpus=2)
    second, _ = ready_node(state, 'second', cpus=2)
    _, dispatches = submit_many(state, cluster, 8)
    assert [node for node, _ in dispatches] == [second, first, first, second] * 2
    assert len(first.jobs) == len(second.jobs) == 4


def test_one_job_at_a_time_stays_on_the_node_that_ran_the_last():
    """Jobs that come one at a time (each submitted when the previous ended) keep going to
    the node that finished the previous one while it is as little loaded as any: it is awake
    and its worker warm, rather than each node being woken in turn."""
    state = State(max_depth=2)
    cluster = new_cluster(state)
    first, _ = ready_node(state, 'first', cpus=2)
    second, _ = ready_node(state, 'second', cpus=2)
    used = []
    for uid in range(6):
        placed = state.submit(cluster, uid, b'')
        job, ((node, _),) = placed.job, placed.dispatches
        used.append(node)
        state.job_done(node, job.jid, FINISHED, runtime=0.001)
    assert used == [second] * 6
    check_invariants(state)


def test_slots_cap_jobs_in_flight_per_node():
    """A cluster starts one deep per CPU; short jobs make it deeper, up to the node's slots."""
    state = State(max_depth=3)
    cluster = new_cluster(state, short_jobs=False)
    node, _ = ready_node(state, 'a', cpus=2)
    assert node.slots == 6
    jobs, dispatches = submit_many(state, cluster, 10)
    assert [job for _, job in dispatches] == jobs[:2]
    assert len(node.jobs) == 2 and cluster.in_flight == 2 and cluster.queued == 8
    refill = state.job_done(node, jobs[0].jid, FINISHED, runtime=0.001).dispatches
    assert cluster.depth == 8  # millisecond jobs: as deep as it goes
    assert [job for _, job in refill] == jobs[2:7]  # the node's 6 slots are the limit now
    assert len(node.jobs) == 6 and node not in state.free_nodes
    check_invariants(state)


def test_long_jobs_go_one_per_cpu():
    """Jobs of a second or more never wait on a busy node while another node is free."""
    state = State()
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a', cpus=2)
    jobs, dispatches = submit_many(state, cluster, 6)
    assert len(dispatches) == 4
    refill = state.job_done(node, jobs[0].jid, FINISHED, runtime=30.0).dispatches
    assert cluster.depth == 1 and refill == []  # 3 in flight already, over the new limit
    other, dispatches = ready_node(state, 'b', cpus=2)
    assert [node for node, _ in dispatches] == [other, other]
    check_invariants(state)


def test_job_done_frees_a_slot_and_fills_it_from_the_queue():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a', cpus=1)
    jobs, _ = submit_many(state, cluster, 3)
    assert state.job_started(node, jobs[0].jid, 12.5) is jobs[0]
    assert jobs[0].status == RUNNING and jobs[0].start_time == 12.5
    ended = state.job_done(node, jobs[0].jid, FINISHED)
    done, dispatches = ended.job, ended.dispatches
    assert done is jobs[0] and done.status == FINISHED and done.node is None
    assert dispatches == [(node, jobs[1])]
    assert jobs[0].jid not in state.jobs and 0 not in cluster.jobs
    assert node.jobs_done == 1 and cluster.queued == 1
    check_invariants(state)


def test_job_done_with_empty_queue_returns_node_to_free_index():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a', cpus=1)
    (job,), _ = submit_many(state, cluster, 1)
    assert node not in state.free_nodes
    assert state.job_done(node, job.jid, FINISHED) == Placed(job, [])
    assert node in state.free_nodes
    (job2,), dispatches = submit_many(state, cluster, 1, start=1)
    assert dispatches == [(node, job2)]


def test_fifo_within_a_cluster():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a', cpus=1)
    jobs, dispatches = submit_many(state, cluster, 50)
    order = [job for _, job in dispatches]
    while node.jobs:
        (jid,) = node.jobs
        dispatches = state.job_done(node, jid, FINISHED).dispatches
        order += [job for _, job in dispatches]
    assert order == jobs


def test_job_started_for_a_job_not_on_that_node_is_ignored():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a')
    other, _ = ready_node(state, 'b')
    (job,), _ = submit_many(state, cluster, 1)
    assert job.node is other  # the node ready last, of two equally loaded ones
    assert state.job_started(node, job.jid, 1.0) is None
    assert job.status == CREATED


# fair share

def test_fair_share_small_cluster_not_stuck_behind_a_big_one():
    """Cluster A queues 10,000 jobs, then B queues 10; jobs complete oldest first.

    Bound: 30 completions. With 2 nodes of 2 CPUs at depth 2 there are S = 8 slots. Every slot
    freed while B has fewer jobs in flight than A goes to B, so after S/2 = 4 completions each
    has 4 in flight. Then the next S/2 completions are A's older jobs (refilled by A), after
    which completions alternate between the clusters and each B completion dispatches B's next
    job: the remaining 10 - S/2 = 6 B jobs need at most 2 * 6 completions. In all at most
    4 + 4 + 12 = 20 (18 today); 30 leaves room for tie-break details. Strict FIFO across
    clusters would need 10,000 completions, so this fails if fair share breaks."""
    state = State(max_depth=2)
    a = new_cluster(state, 'a')
    b = new_cluster(state, 'b')
    nodes = [ready_node(state, key, cpus=2)[0] for key in ('n1', 'n2')]
    in_flight = collections.deque()  # oldest dispatch first
    _, dispatches = submit_many(state, a, 10000)
    in_flight.extend(dispatches)
    assert len(in_flight) == 8
    b_jobs, dispatches = submit_many(state, b, 10)
    assert dispatches == []  # every slot is taken
    b_dispatched = set()
    completions = 0
    while len(b_dispatched) < 10:
        node, job = in_flight.popleft()
        ended = state.job_done(node, job.jid, FINISHED)
        done, dispatches = ended.job, ended.dispatches
        assert done is job
        completions += 1
        assert len(dispatches) == 1
        in_flight.extend(dispatches)
        b_dispatched.update(job.uid for _, job in dispatches if job.cluster is b)
        assert completions <= 30, 'B still waiting after %d completions' % completions
    assert b_dispatched == {job.uid for job in b_jobs}
    assert a.queued == 10000 - 8 - (completions - 10)
    assert sum(len(node.jobs) for node in nodes) == 8
    check_invariants(state)


def test_freed_slots_go_to_a_cluster_that_became_ready_later():
    state = State(max_depth=1)
    a = new_cluster(state, 'a')
    b = new_cluster(state, 'b')
    node = state.add_node('n', 'n', '10.0.0.1', 1, 4).node
    submit_many(state, a, 8)
    submit_many(state, b, 8)
    dispatches = state.compute_ready(node, a.cid) + state.compute_ready(node, b.cid)
    # a is ready first and fills the node; b is ready but the node is then full
    assert [job.cluster for _, job in dispatches] == [a] * 4
    refills = []
    for _, job in dispatches:
        refills += state.job_done(node, job.jid, FINISHED).dispatches
    # each freed slot goes to whichever has fewer in flight: b (0 < 3), b (1 < 2), then a's
    # own completions leave a behind (1 < 2) twice; the node ends shared 2 / 2
    assert [job.cluster for _, job in refills] == [b, b, a, a]
    assert a.in_flight == b.in_flight == 2


def test_two_busy_clusters_share_each_node_instead_of_owning_one():
    """A got node n1 to itself and B got n2 (each was ready on only one node when it
    submitted). Once both are ready everywhere, each freed slot goes to the cluster with the
    fewest jobs on that node, so within one round of completions every node runs both."""
    state = State(max_depth=2)
    a = new_cluster(state, 'a')
    b = new_cluster(state, 'b')
    n1 = state.add_node('n1', 'n1', '10.0.0.1', 1, 2).node
    n2 = state.add_node('n2', 'n2', '10.0.0.2', 1, 2).node
    state.compute_ready(n1, a.cid)
    in_flight = collections.deque(submit_many(state, a, 100)[1])
    state.compute_ready(n2, b.cid)
    in_flight.extend(submit_many(state, b, 100, start=1000)[1])
    assert state.compute_ready(n1, b.cid) == state.compute_ready(n2, a.cid) == []  # full
    assert {job.cluster for job in n1.jobs.values()} == {a}
    assert {job.cluster for job in n2.jobs.values()} == {b}
    for step in range(40):
        node, job = in_flight.popleft()
        in_flight.extend(state.job_done(node, job.jid, FINISHED).dispatches)
        if step >= 8:
            for node in (n1, n2):
                shares = collections.Counter(job.cluster for job in node.jobs.values())
                assert shares == {a: 2, b: 2}, (step, node, shares)
    check_invariants(state)


# cancel

def test_cancel_queued_job():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a', cpus=1)
    jobs, _ = submit_many(state, cluster, 4)  # jobs[0] on the node, 1..3 queued
    assert state.cancel(cluster, jobs[2].uid) == Cancellation(jobs[2], None)
    assert jobs[2].status == CANCELLED
    assert cluster.queued == 2
    assert jobs[2].jid not in state.jobs and jobs[2].uid not in cluster.jobs
    check_invariants(state)
    order = []
    while node.jobs:
        (jid,) = node.jobs
        dispatches = state.job_done(node, jid, FINISHED).dispatches
        order += [job for _, job in dispatches]
    assert order == [jobs[1], jobs[3]]  # the cancelled one is skipped
    assert cluster.queued == 0


def test_cancel_dispatched_job_names_its_node():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a', cpus=1)
    (job,), _ = submit_many(state, cluster, 1)
    assert state.cancel(cluster, job.uid) == Cancellation(job, node)
    assert job.jid in node.jobs  # ends when the node reports it
    assert state.job_done(node, job.jid, TERMINATED) == Placed(job, [])
    assert job.status == TERMINATED


def test_cancel_unknown_job():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    assert state.cancel(cluster, 12345) == Cancellation(None, None)


def test_cancel_all_queued_then_place_dispatches_nothing():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node = state.add_node('a', 'a', '10.0.0.1', 1, 2).node
    jobs, _ = submit_many(state, cluster, 3)
    for job in jobs:
        state.cancel(cluster, job.uid)
    assert cluster.queued == 0
    assert state.compute_ready(node, cluster.cid) == []


# lost nodes

def test_remove_node_requeues_reentrant_jobs_in_order_at_the_front():
    state = State(max_depth=2)
    cluster = new_cluster(state, reentrant=True)
    big, _ = ready_node(state, 'big', cpus=2)  # 4 slots
    jobs, _ = submit_many(state, cluster, 6)  # 0..3 on big, 4 and 5 queued
    assert all(job.node is big for job in jobs[:4])
    for job in jobs[:4]:
        state.job_started(big, job.jid, 1.0)
    small, dispatches = ready_node(state, 'small', cpus=1)  # 2 slots: takes 4 and 5
    assert [job for _, job in dispatches] == jobs[4:6]
    state.job_done(small, jobs[4].jid, FINISHED)  # one slot free on small, queue empty
    outcome = state.remove_node(big)
    dispatches = outcome.dispatches
    assert outcome.requeued == jobs[:4] and outcome.ended == []
    assert dispatches == [(small, jobs[0])]
    assert [job.status for job in jobs[1:4]] == [CREATED] * 3
    assert all(job.node is None and job.start_time is None for job in jobs[1:4])
    assert big.key not in state.nodes and big not in state.free_nodes
    assert big not in cluster.ready_nodes
    check_invariants(state)
    # the rest of the requeued jobs come before a job submitted now
    (late,), _ = submit_many(state, cluster, 1, start=100)
    order = []
    for _ in range(5):
        (jid, *_) = sorted(small.jobs)
        dispatches = state.job_done(small, jid, FINISHED).dispatches
        order += [job for _, job in dispatches]
    assert order == [jobs[1], jobs[2], jobs[3], late]


def test_remove_node_loses_non_reentrant_jobs():
    state = State(max_depth=2)
    cluster = new_cluster(state, reentrant=False)
    node, _ = ready_node(state, 'a', cpus=1)
    other, _ = ready_node(state, 'b', cpus=1)
    jobs, _ = submit_many(state, cluster, 3)
    on_node = [job for job in jobs if job.node is node]
    outcome = state.remove_node(node)
    assert outcome.requeued == [] and outcome.dispatches == []
    assert sorted(outcome.ended, key=lambda job: job.jid) == on_node
    for job in outcome.ended:
        assert job.status == CANCELLED
        assert job.jid not in state.jobs and job.uid not in cluster.jobs
    assert cluster.in_flight == len(other.jobs)
    check_invariants(state)


def test_cancelled_running_job_is_not_requeued_when_its_node_is_lost():
    """Regression: ``cancel`` of a dispatched job once recorded nothing, so a node lost before
    it reported the job's end had ``remove_node`` requeue the job of a reentrant cluster and
    run it again, and its client never heard it was cancelled. It must end as cancelled."""
    state = State(max_depth=1)
    cluster = new_cluster(state, reentrant=True)
    ready_node(state, 'a')
    ready_node(state, 'b')
    (job,), _ = submit_many(state, cluster, 1)
    doomed = job.node
    assert state.cancel(cluster, job.uid) == Cancellation(job, doomed)
    outcome = state.remove_node(doomed)
    assert job not in outcome.requeued
    assert [placed for _, placed in outcome.dispatches if placed is job] == []
    assert outcome.ended == [job] and job.status == CANCELLED
    assert job.uid not in cluster.jobs and cluster.queued == 0


def test_remove_node_twice_is_harmless():
    state = State(max_depth=1)
    cluster = new_cluster(state, reentrant=True)
    node, _ = ready_node(state, 'a')
    submit_many(state, cluster, 1)
    assert len(state.remove_node(node).requeued) == 1
    assert state.remove_node(node) == Rescheduled([], [], [])
    assert cluster.queued == 1 and cluster.in_flight == 0


def test_replaced_node_is_not_removed_by_the_old_ones_removal():
    """A node that reconnected under the same key must survive removal of its old object."""
    state = State(max_depth=1)
    new_cluster(state)
    old, _ = ready_node(state, 'a')
    new, _ = ready_node(state, 'a')
    state.remove_node(old)
    assert state.nodes['a'] is new


# removed clusters

def test_remove_cluster_returns_everything_and_frees_slots_for_others():
    state = State(max_depth=2)
    a = new_cluster(state, 'a')
    b = new_cluster(state, 'b')
    node, _ = ready_node(state, 'n', cpus=1)  # 2 slots
    idle = state.add_node('m', 'm', '10.0.0.9', 1, 1).node  # installing a and b, never ready
    a_jobs, _ = submit_many(state, a, 3)  # 2 running, 1 queued
    b_jobs, dispatches = submit_many(state, b, 3)
    assert dispatches == []
    removed = state.remove_cluster(a)
    assert set(removed.nodes) == {node, idle}
    assert removed.cancelled == [a_jobs[2]] and a_jobs[2].status == CANCELLED
    assert sorted(removed.interrupted, key=lambda pair: pair[1].jid) == [(node, a_jobs[0]),
                                                                         (node, a_jobs[1])]
    assert removed.dispatches == [(node, b_jobs[0]), (node, b_jobs[1])]
    assert a.cid not in state.clusters
    assert a.cid not in node.clusters and a.cid not in idle.clusters
    assert all(job.jid not in state.jobs for job in a_jobs)
    assert a.queued == a.in_flight == 0 and a.jobs == {}
    check_invariants(state)
    # the node's late reports of the removed cluster's jobs are ignored
    assert state.job_done(node, a_jobs[0].jid, FINISHED) == Placed(None, [])
    assert len(node.jobs) == 2


def test_late_job_done_for_unknown_jid():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a')
    assert state.job_done(node, 424242, FINISHED) == Placed(None, [])
    (job,), _ = submit_many(state, cluster, 1)
    assert state.job_done(node, job.jid, FINISHED).job is job
    assert state.job_done(node, job.jid, FINISHED) == Placed(None, [])  # repeated report
    assert node.jobs_done == 1


@pytest.mark.parametrize('reentrant', [True, False])
def test_random_event_sequences_keep_counters_consistent(reentrant):
    """Interleaved submits, completions, cancels and node losses never leave a counter out of
    step with the queues and node tables."""
    import random
    rng = random.Random(reentrant)
    state = State(max_depth=2)
    clusters = [new_cluster(state, name, reentrant=reentrant) for name in 'abc']
    uid = 0
    for step in range(3000):
        action = rng.random()
        nodes = list(state.nodes.values())
        if action < 0.05 or not nodes:
            ready_node(state, 'n%d' % step, cpus=rng.randint(1, 3))
        elif action < 0.45:
            state.submit(rng.choice(clusters), uid, b'')
            uid += 1
        elif action < 0.8:
            node = rng.choice(nodes)
            if node.jobs:
                state.job_done(node, rng.choice(sorted(node.jobs)), FINISHED)
        elif action < 0.95:
            cluster = rng.choice(clusters)
            if cluster.jobs:
                state.cancel(cluster, rng.choice(sorted(cluster.jobs)))
        elif len(nodes) > 1:
            state.remove_node(rng.choice(nodes))
        check_invariants(state)
        for cluster in clusters:
            # nothing waits while a ready node has a free slot
            if cluster.queued:
                assert not any(node.clusters.get(cluster.cid) == READY
                               and len(node.jobs) < node.slots
                               for node in state.nodes.values())


# computation failures, priorities, pinned jobs

def test_failed_computation_puts_unstarted_jobs_back_and_places_them_elsewhere():
    """A node whose computation failed (its host died) keeps its running jobs (the node ends
    them) but the jobs it had not started go to another node."""
    state = State(max_depth=2)
    cluster = new_cluster(state)
    sick, _ = ready_node(state, 'sick', cpus=1)
    jobs, dispatches = submit_many(state, cluster, 2)
    assert [node for node, _ in dispatches] == [sick, sick]
    state.job_started(sick, jobs[0].jid, 1.0)
    healthy, _ = ready_node(state, 'healthy', cpus=1)
    outcome = state.compute_failed(sick, cluster.cid)
    assert outcome.ended == [] and outcome.requeued == [jobs[1]]
    assert outcome.dispatches == [(healthy, jobs[1])]
    assert list(sick.jobs.values()) == [jobs[0]]
    check_invariants(state)
    assert state.job_done(sick, jobs[0].jid, 9).job is jobs[0]
    assert state.job_done(sick, jobs[1].jid, 9) == Placed(None, [])  # its late report is dropped
    check_invariants(state)


def test_priority_then_submission_order():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    jobs = [state.submit(cluster, uid, b'', priority=priority).job
            for uid, priority in enumerate((0, 5, 0, 5, 9))]
    node, dispatches = ready_node(state, 'a', cpus=5)
    assert [job.uid for _, job in dispatches] == [4, 1, 3, 0, 2]
    assert {job for _, job in dispatches} == set(jobs)


def test_pinned_jobs_wait_for_their_node_and_end_with_it():
    state = State(max_depth=1)
    cluster = new_cluster(state)
    node, _ = ready_node(state, 'a', cpus=1)
    other, _ = ready_node(state, 'b', cpus=1)
    pinned = [state.submit(cluster, uid, b'', pinned='a').job for uid in range(3)]
    assert pinned[0].node is node and pinned[1].node is None
    assert other.jobs == {}  # pinned jobs never go elsewhere
    outcome = state.remove_node(node)
    assert outcome.requeued == [] and set(outcome.ended) == set(pinned)
    assert all(job.status == CANCELLED for job in pinned)
    check_invariants(state)


def test_a_node_presumed_lost_that_returns_keeps_the_jobs_still_waiting_for_it():
    """A node falls silent (frozen), is presumed lost, its jobs are requeued; it returns
    still running them. Those still in their queue go back to it (their work is not lost, and
    they are not sent to it a second time, where the copy it runs would be taken for them);
    one already running elsewhere is not its own any more."""
    state = State(max_depth=1)
    cluster = new_cluster(state, reentrant=True)
    frozen, _ = ready_node(state, 'frozen', cpus=2)
    jobs, _ = submit_many(state, cluster, 3)  # two on the node, one queued
    on_node = sorted(frozen.jobs)
    outcome = state.remove_node(frozen)
    assert sorted(job.jid for job in outcome.requeued) == on_node
    other, dispatches = ready_node(state, 'other', cpus=1)  # takes one of the requeued
    (moved,) = [job for _, job in dispatches]
    returned = state.add_node('frozen', 'frozen', '10.0.0.1', 1, 2).node
    outcome = state.reattach(returned, on_node)
    kept = [job for job in jobs if job.jid in on_node and job is not moved]
    assert outcome.kept == kept and outcome.dispatches == []
    assert set(returned.jobs) == {job.jid for job in kept}
    assert all(job.node is returned and job.status == RUNNING for job in kept)
    assert moved.node is other and moved.jid not in returned.jobs
    assert cluster.queue.pop() is jobs[2]  # the one never sent; a kept job is not taken twice
    assert cluster.queue.pop() is None
    check_invariants(state)
