"""Unit tests of placement with resources (``State`` with ``Need`` and ``Offer``): a job runs
only where all it needs is free, what it holds comes back when it ends, a large job is not
starved by small ones, fair share counts what clusters hold. No I/O."""

import random

from dispyscheduler.constants import FINISHED
from dispyscheduler.resources import ONE_CPU, Need, Offer
from dispyscheduler.scheduler.model import State

from test_model import check_invariants

ALL = [('*', 0)]
GIB = 1 << 30


def cluster_of(state, name='c', need=ONE_CPU, depth_known=True):
    cluster = state.add_cluster(name, b'code', ALL, False, True, need=need).cluster
    if depth_known:
        cluster.ran(0.5)  # jobs of under a second: two in flight per CPU (max_depth 2)
    return cluster


def node_of(state, key, cpus, memory=0, gpus=0, named=None):
    added = state.add_node(key, key, '10.0.0.%d' % (len(state.nodes) + 1), 51348, cpus,
                           Offer(cpus, memory, gpus, named))
    dispatches = []
    for cluster in added.clusters:
        dispatches += state.compute_ready(added.node, cluster.cid)
    return added.node, dispatches


def check_holdings(state):
    """What nodes and clusters hold is what their jobs need, and never more than a node has
    (jobs of one CPU may wait their turn: only larger ones are held to the CPUs)."""
    check_invariants(state)
    for node in state.nodes.values():
        free = node.cpus - node.held.cpus
        assert state.roomy.where.get(node) == (free if node in state.free_nodes and free > 0
                                               else None)
        jobs = list(node.jobs.values())
        assert node.held.cpus == sum(job.need.cpus for job in jobs)
        assert node.heavy_cpus == sum(job.need.cpus for job in jobs if not job.need.light)
        assert node.heavy_cpus <= node.cpus
        assert node.held.memory == sum(job.need.memory for job in jobs) <= node.offer.memory
        assert node.held.gpus == sum(job.need.gpus for job in jobs) <= node.offer.gpus
        for name, amount in node.offer.named.items():
            assert node.held.named.get(name, 0) <= amount
    for cluster in state.clusters.values():
        on_nodes = [job for job in cluster.jobs.values() if job.node is not None]
        assert cluster.held.cpus == sum(job.need.cpus for job in on_nodes)
        assert cluster.held.memory == sum(job.need.memory for job in on_nodes)


def finish(state, job):
    return state.job_done(job.node, job.jid, FINISHED, 0.5).dispatches


def test_a_job_goes_only_where_everything_it_needs_is_free():
    state = State(max_depth=2)
    cluster = cluster_of(state)
    small, _ = node_of(state, 'small', cpus=2, memory=4 * GIB)
    gpu, _ = node_of(state, 'gpu', cpus=4, memory=16 * GIB, gpus=1)
    placed = state.submit(cluster, 1, b'', need=Need(2, memory=8 * GIB))
    assert placed.dispatches == [(gpu, placed.job)]  # the small node has 4 GiB
    again = state.submit(cluster, 2, b'', need=Need(1, gpus=1))
    assert again.dispatches == [(gpu, again.job)]  # 2 CPUs and the GPU free there
    third = state.submit(cluster, 3, b'', need=Need(1, gpus=1))
    assert third.dispatches == []  # the only GPU is held
    assert gpu.held.as_dict() == {'cpus': 3, 'memory': 8 * GIB, 'gpus': 1}
    assert [job for _, job in finish(state, again.job)] == [third.job]
    check_holdings(state)


def test_a_gpu_is_never_held_by_two_jobs():
    state = State(max_depth=2)
    cluster = cluster_of(state)
    node, _ = node_of(state, 'gpu', cpus=8, memory=64 * GIB, gpus=2)
    placed = [state.submit(cluster, uid, b'', need=Need(1, gpus=1)) for uid in range(5)]
    running = [p.job for p in placed if p.dispatches]
    assert len(running) == 2 and node.held.gpus == 2
    dispatches = finish(state, running[0])
    assert [job.uid for _, job in dispatches] == [2]  # the next in order takes the GPU
    assert node.held.gpus == 2
    check_holdings(state)


def test_a_four_cpu_job_waits_while_one_cpu_jobs_keep_flowing():
    """The 4-CPU job does not hold up the 1-CPU jobs behind it (in its own cluster too), and
    once its turn comes a node is kept for it: it runs, and nothing runs beside it there
    beyond its free CPUs."""
    state = State(max_depth=2)
    cluster = cluster_of(state)
    node, _ = node_of(state, 'n', cpus=4)
    first = [state.submit(cluster, uid, b'').job for uid in range(8)]  # 2 per CPU
    assert all(job.node is node for job in first)
    big = state.submit(cluster, 100, b'', need=Need(4))
    assert big.dispatches == [] and big.job.node is None
    later = [state.submit(cluster, uid, b'') for uid in range(200, 204)]
    assert all(not p.dispatches for p in later)  # the node is full: they wait too
    # one ends: it is the big job's turn (it was submitted before the later ones)
    assert finish(state, first[0]) == []
    assert node.reserved is big.job  # kept for it: the later 1-CPU jobs do not take it
    for job in first[1:-1]:
        assert finish(state, job) == []
    dispatches = finish(state, first[-1])
    assert dispatches[0] == (node, big.job)
    assert node.reserved is None and node.heavy_cpus == 4
    assert [job for _, job in dispatches[1:]] == []  # all 4 CPUs are the big job's
    dispatches = finish(state, big.job)
    assert sorted(job.uid for _, job in dispatches) == [200, 201, 202, 203]
    check_holdings(state)


def test_small_jobs_flow_on_other_nodes_while_a_large_one_waits_for_its_node():
    state = State(max_depth=1)
    small_jobs = cluster_of(state, 'small')
    large_jobs = cluster_of(state, 'large')
    wide, _ = node_of(state, 'wide', cpus=4)
    narrow, _ = node_of(state, 'narrow', cpus=2)
    running = [state.submit(small_jobs, uid, b'').job for uid in range(6)]
    assert {job.node for job in running} == {wide, narrow}
    queued = [state.submit(small_jobs, uid, b'').job for uid in range(6, 40)]
    big = state.submit(large_jobs, 1, b'', need=Need(4)).job
    # whatever ends on the narrow node goes on taking small jobs (the big job cannot run
    # there); the wide node is kept for the big job once a job of its ends
    done_small = 0
    for _ in range(10):
        on_narrow = next(job for job in narrow.jobs.values())
        dispatches = finish(state, on_narrow)
        assert [(n, j.cluster) for n, j in dispatches] == [(narrow, small_jobs)]
        done_small += 1
    on_wide = list(wide.jobs.values())
    finish(state, on_wide[0])
    assert wide.reserved is big and big.node is None
    for job in on_wide[1:-1]:
        assert finish(state, job) == []
    assert finish(state, on_wide[-1])[0] == (wide, big)
    assert queued[-1].node is None  # still small jobs waiting: they were not starved either
    check_holdings(state)


def test_a_cancelled_job_frees_the_node_kept_for_it():
    state = State(max_depth=1)
    cluster = cluster_of(state)
    node, _ = node_of(state, 'n', cpus=2)
    a, b = (state.submit(cluster, uid, b'').job for uid in range(2))
    big = state.submit(cluster, 10, b'', need=Need(2)).job
    small = [state.submit(cluster, uid, b'').job for uid in range(20, 23)]
    finish(state, a)
    assert node.reserved is big
    cancellation = state.cancel(cluster, big.uid)
    assert cancellation.node is None
    assert [job for _, job in cancellation.dispatches] == [small[0]]
    assert node.reserved is None
    check_holdings(state)


def test_a_lost_node_kept_for_a_job_lets_another_be_kept():
    state = State(max_depth=1)
    cluster = cluster_of(state)
    first, _ = node_of(state, 'first', cpus=2)
    second, _ = node_of(state, 'second', cpus=2)
    fillers = [state.submit(cluster, uid, b'').job for uid in range(4)]
    big = state.submit(cluster, 10, b'', need=Need(2)).job
    for uid in range(20, 30):
        state.submit(cluster, uid, b'')
    on_first = [job for job in fillers if job.node is first]
    finish(state, on_first[0])
    assert first.reserved is big
    state.remove_node(first)
    assert big.reserved_on is None and big.node is None
    on_second = [job for job in fillers if job.node is second]
    finish(state, on_second[0])
    assert second.reserved is big
    assert finish(state, on_second[1])[0] == (second, big)
    check_holdings(state)


def test_memory_and_named_resources_are_held_and_given_back():
    state = State(max_depth=2)
    cluster = cluster_of(state)
    node, _ = node_of(state, 'n', cpus=8, memory=10 * GIB, named={'licence': 2})
    jobs = [state.submit(cluster, uid, b'', need=Need(1, 4 * GIB, named=[('licence', 1)]))
            for uid in range(3)]
    assert [bool(p.dispatches) for p in jobs] == [True, True, False]  # 2 licences, 8 GiB
    assert node.held.named == {'licence': 2} and node.held.memory == 8 * GIB
    dispatches = finish(state, jobs[0].job)
    assert [job for _, job in dispatches] == [jobs[2].job]
    for placed in jobs[1:]:
        finish(state, placed.job)
    assert node.held.named == {} and node.held.memory == 0 and node.held.cpus == 0
    check_holdings(state)


def test_a_clusters_jobs_need_what_it_says_unless_a_job_says_otherwise():
    state = State(max_depth=2)
    cluster = cluster_of(state, need=Need(2))
    node, _ = node_of(state, 'n', cpus=4)
    placed = [state.submit(cluster, uid, b'') for uid in range(3)]
    assert [bool(p.dispatches) for p in placed] == [True, True, False]
    assert placed[0].job.need == Need(2)
    one = state.submit(cluster, 10, b'', need=ONE_CPU)
    assert not one.dispatches  # all 4 CPUs held by the two 2-CPU jobs
    check_holdings(state)


def test_a_cluster_holding_more_of_the_pool_does_not_keep_nodes_from_one_holding_less():
    """Cluster "wide" holds a whole 4-CPU node with one job; "narrow" holds one CPU of the
    other node. When a CPU frees there, wide's next 4-CPU job has fewer CPUs on that node,
    but a larger share of the pool (half, against an eighth): the node is not kept for it,
    narrow's jobs take the CPU."""
    state = State(max_depth=1)
    wide_jobs = cluster_of(state, 'wide', need=Need(4))
    narrow_jobs = cluster_of(state, 'narrow')
    nodes = [node_of(state, key, cpus=4)[0] for key in ('a', 'b')]
    first = state.submit(wide_jobs, 1, b'').job
    big_node = first.node
    (other,) = [node for node in nodes if node is not big_node]
    smalls = [state.submit(narrow_jobs, uid, b'').job for uid in range(4)]
    assert all(job.node is other for job in smalls)
    waiting = state.submit(wide_jobs, 2, b'').job
    for uid in range(10, 14):
        state.submit(narrow_jobs, uid, b'')
    for job in smalls[:3]:
        dispatches = finish(state, job)
        assert [(node, job.cluster) for node, job in dispatches] == [(other, narrow_jobs)]
    assert other.reserved is None and waiting.node is None
    # the wide cluster's job ends: now it holds nothing, and its next job takes its node
    assert finish(state, first) == [(big_node, waiting)]
    check_holdings(state)


def test_random_events_keep_what_is_held_consistent():
    rng = random.Random(7)
    state = State(max_depth=3)
    clusters = [cluster_of(state, 'c%d' % i) for i in range(3)]
    needs = [ONE_CPU, ONE_CPU, Need(2), Need(4), Need(1, 2 * GIB), Need(1, gpus=1),
             Need(2, named=[('licence', 1)])]
    for i in range(6):
        node_of(state, 'n%d' % i, cpus=rng.choice([2, 4, 8]), memory=rng.choice([4, 16]) * GIB,
                gpus=rng.choice([0, 1, 2]), named=rng.choice([{}, {'licence': 1}]))
    uid = 0
    for _ in range(3000):
        action = rng.random()
        if action < 0.45:
            uid += 1
            state.submit(rng.choice(clusters), uid, b'', need=rng.choice(needs))
        elif action < 0.85:
            running = [job for job in state.jobs.values() if job.node is not None]
            if running:
                finish(state, rng.choice(running))
        elif action < 0.92:
            cluster = rng.choice(clusters)
            if cluster.jobs:
                state.cancel(cluster, rng.choice(list(cluster.jobs)))
        else:
            node = rng.choice(list(state.nodes.values()))
            state.remove_node(node)
            node_of(state, node.key, cpus=rng.choice([2, 4, 8]), memory=16 * GIB, gpus=1,
                    named={'licence': 1})
        check_holdings(state)
    # nothing that could run is left waiting while every node is idle
    while any(job.node is not None for job in state.jobs.values()):
        for job in [job for job in state.jobs.values() if job.node is not None]:
            if job.node is not None:
                finish(state, job)
    for cluster in clusters:
        for need, _ in cluster.queue.waiting():
            assert not any(node.offer.covers(need) for node in state.nodes.values()), need
    check_holdings(state)


def test_a_node_kept_for_a_job_that_can_no_longer_run_there_takes_other_jobs():
    """The node kept for a 2-CPU job stops running its cluster (setup failed there, say):
    the node is no longer kept; the next job to end there lets others in."""
    state = State(max_depth=1)
    large_jobs = cluster_of(state, 'large')
    small_jobs = cluster_of(state, 'small')
    node, _ = node_of(state, 'n', cpus=2)
    first = state.submit(small_jobs, 1, b'').job
    second = state.submit(small_jobs, 2, b'').job
    big = state.submit(large_jobs, 1, b'', need=Need(2)).job
    waiting = [state.submit(small_jobs, uid, b'').job for uid in range(3, 6)]
    finish(state, first)
    assert node.reserved is big
    state.compute_failed(node, large_jobs.cid, 'setup failed')
    assert node.reserved is None and big.reserved_on is None
    assert waiting[0].node is node
    finish(state, second)
    assert waiting[1].node is node and big.node is None
    check_holdings(state)


def test_a_node_kept_for_a_job_that_leaves_lets_the_job_be_placed_elsewhere():
    state = State(max_depth=1)
    cluster = cluster_of(state)
    leaving, _ = node_of(state, 'leaving', cpus=2)
    fillers = [state.submit(cluster, uid, b'').job for uid in range(2)]
    big = state.submit(cluster, 10, b'', need=Need(2)).job
    finish(state, fillers[0])
    assert leaving.reserved is big
    outcome = state.node_leaving(leaving, [])
    assert leaving.reserved is None and big.reserved_on is None
    other, dispatches = node_of(state, 'other', cpus=2)
    assert (other, big) in dispatches
    assert outcome.requeued == []
    check_holdings(state)


def test_a_larger_job_goes_to_the_node_it_fits_best():
    """Best fit: a 2-CPU job goes to the node with 2 free CPUs, not to the one with 16, which
    stays free for a 16-CPU job."""
    state = State(max_depth=1)
    cluster = cluster_of(state)
    big, _ = node_of(state, 'big', cpus=16)
    small, _ = node_of(state, 'small', cpus=2)
    two = state.submit(cluster, 1, b'', need=Need(2))
    assert two.dispatches == [(small, two.job)]
    sixteen = state.submit(cluster, 2, b'', need=Need(16))
    assert sixteen.dispatches == [(big, sixteen.job)]
    check_holdings(state)
