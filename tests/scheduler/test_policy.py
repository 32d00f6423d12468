"""Unit tests of placement policy: node patterns, the load index, fair share."""

import random
from types import SimpleNamespace

import pytest

from dispyscheduler.resources import Held, Need, Offer
from dispyscheduler.scheduler.policy import (FreeCpuIndex, LoadIndex, fair_share_pick,
                                             node_matches)

# node_matches

@pytest.mark.parametrize('patterns, ip_addr, name, port, expected', [
    ([('*', 0)], '10.1.2.3', 'host-a', 51348, True),
    ([('127.0.0.*', 0)], '127.0.0.9', 'host-a', 51348, True),
    ([('127.0.0.*', 0)], '127.0.1.9', 'host-a', 51348, False),
    ([('10.0.0.5', 0)], '10.0.0.5', 'host-a', 51348, True),
    ([('10.0.0.5', 0)], '10.0.0.50', 'host-a', 51348, False),   # no prefix match
    ([('host-a', 0)], '10.0.0.5', 'host-a', 51348, True),       # by name
    ([('host-*', 0)], '10.0.0.5', 'host-b', 51348, True),
    ([('host-a', 0)], '10.0.0.5', 'host-b', 51348, False),
    ([('HOST-A', 0)], '10.0.0.5', 'host-a', 51348, False),      # case-sensitive
    ([('10.0.0.5', 9000)], '10.0.0.5', 'host-a', 9000, True),   # port filter
    ([('10.0.0.5', 9000)], '10.0.0.5', 'host-a', 51348, False),
    ([('*', 9000)], '10.0.0.5', 'host-a', 51348, False),
    ([('10.0.0.6', 0), ('10.0.0.5', 0)], '10.0.0.5', 'host-a', 1, True),  # any pattern
    ([('10.0.0.5', 1), ('*', 2)], '10.0.0.5', 'host-a', 2, True),
    ([], '10.0.0.5', 'host-a', 1, False),
])
def test_node_matches(patterns, ip_addr, name, port, expected):
    assert node_matches(patterns, ip_addr, name, port) is expected


# LoadIndex

def accept_all(node):
    return True


def test_empty_index_has_no_least_loaded():
    index = LoadIndex()
    assert index.least_loaded(accept_all) is None
    assert len(index) == 0


def test_least_loaded_and_ties_go_to_the_latest_update():
    """Among equally loaded nodes, the one updated last: it has just finished a job."""
    index = LoadIndex()
    index.update('a', 0.5)
    index.update('b', 0.25)
    index.update('c', 0.75)
    index.update('d', 0.25)
    assert index.least_loaded(accept_all) == 'd'
    index.update('b', 0.25)
    assert index.least_loaded(accept_all) == 'b'
    assert len(index) == 4 and 'c' in index and 'z' not in index


def test_update_replaces_a_nodes_load():
    index = LoadIndex()
    index.update('a', 0.1)
    index.update('b', 0.5)
    index.update('a', 0.9)
    assert index.least_loaded(accept_all) == 'b'
    index.update('b', 1.0)
    assert index.least_loaded(accept_all) == 'a'
    assert len(index) == 2


def test_discarded_node_is_never_returned():
    index = LoadIndex()
    index.update('a', 0)
    index.update('b', 1)
    index.discard('a')
    index.discard('missing')  # harmless
    assert 'a' not in index
    assert index.least_loaded(accept_all) == 'b'
    index.discard('b')
    assert index.least_loaded(accept_all) is None


def test_rediscovered_node_is_back():
    index = LoadIndex()
    index.update('a', 0)
    index.discard('a')
    index.update('a', 2)
    assert index.least_loaded(accept_all) == 'a'


def test_accept_filter_skips_but_keeps_skipped_nodes():
    """Entries passed over for one cluster must still be there for the next question."""
    index = LoadIndex()
    for load, node in enumerate(['a', 'b', 'c', 'd']):
        index.update(node, load)
    assert index.least_loaded(lambda node: node in ('c', 'd')) == 'c'
    assert index.least_loaded(lambda node: False) is None
    assert index.least_loaded(accept_all) == 'a'
    index.discard('a')
    assert index.least_loaded(accept_all) == 'b'
    assert sorted(index.current) == ['b', 'c', 'd']


def test_least_loaded_does_not_remove_the_node():
    index = LoadIndex()
    index.update('a', 0)
    assert index.least_loaded(accept_all) == 'a'
    assert index.least_loaded(accept_all) == 'a'
    assert 'a' in index


def test_heap_stays_bounded_after_thousands_of_updates():
    index = LoadIndex()
    nodes = ['node%d' % number for number in range(50)]
    rng = random.Random(7)
    for _ in range(20000):
        index.update(rng.choice(nodes), rng.random())
        assert len(index.heap) <= 2 * len(index.current) + 33
    assert len(index) == 50


def test_heap_bounded_with_churn_and_matches_a_reference_model():
    """Random updates, discards and queries agree with a dict-based model, and after every
    update the heap holds at most about twice the live entries."""
    index = LoadIndex()
    model = {}
    rng = random.Random(11)
    for step in range(5000):
        node = 'n%d' % rng.randrange(30)
        action = rng.random()
        if action < 0.6:
            load = rng.randrange(10) / 4
            index.update(node, load)
            model[node] = (load, step)
            assert len(index.heap) <= 2 * len(index.current) + 33
        elif action < 0.8:
            index.discard(node)
            model.pop(node, None)
        else:
            allowed = set(rng.sample(sorted(model), k=len(model) // 2)) if model else set()
            expected = min(((load, -step), name) for name, (load, step) in model.items()
                           if name in allowed)[1] if allowed else None
            assert index.least_loaded(lambda node, allowed=allowed: node in allowed) == expected
        assert set(index.current) == set(model)


# fair share

POOL = Offer(16, memory=64 << 30, gpus=4)


def cluster(cid, cpus=0, last_served=0, need=None, count=1):
    """A stand-in cluster holding ``count`` jobs of ``need`` (``cpus`` one-CPU jobs if none
    given)."""
    held = Held()
    for _ in range(count if need is not None else cpus):
        held.take(need or Need())
    return SimpleNamespace(cid=cid, held=held, last_served=last_served)


def pick(candidates, on_node=None):
    """The cluster ``fair_share_pick`` chooses of clusters whose queues head with job 0."""
    chosen = fair_share_pick([(c, (0, 0), None) for c in candidates], on_node or {}, POOL)
    return chosen and chosen[0]


def test_fair_share_prefers_the_smallest_share_held():
    big = cluster(1, cpus=8, last_served=1)
    small = cluster(2, cpus=1, last_served=2)
    assert pick([big, small]) is small
    assert pick([small, big]) is small


def test_fair_share_counts_what_clusters_hold_not_how_many_jobs():
    """Dominant shares: 2 jobs holding all 4 GPUs weigh more than 6 one-CPU jobs (6/16 of the
    CPUs); 1 job of 12 CPUs more than 6 of one."""
    gpus = cluster(1, need=Need(1, gpus=2), count=2)
    cpus = cluster(2, cpus=6)
    wide = cluster(3, need=Need(12), count=1)
    assert pick([gpus, cpus]) is cpus
    assert pick([wide, cpus]) is cpus
    memory = cluster(4, need=Need(1, memory=48 << 30), count=1)  # 3/4 of the memory
    assert pick([memory, cpus]) is cpus


def test_fair_share_breaks_ties_by_longest_unserved_then_by_the_first_job():
    a = cluster(1, cpus=2, last_served=9)
    b = cluster(2, cpus=2, last_served=3)
    assert pick([a, b]) is b
    assert pick([a, b], {1: 1, 2: 1}) is b
    first = fair_share_pick([(a, (-5, 10), 'urgent'), (a, (0, 3), 'old')], {}, POOL)
    assert first[2] == 'urgent'  # higher priority first, then lower job id


def test_fair_share_prefers_fewest_cpus_held_on_this_node_first():
    """A cluster holding fewer CPUs on the node asking wins even with more held overall, so
    two busy clusters share every node instead of each owning one."""
    spread = cluster(1, cpus=6, last_served=1)
    local = cluster(2, cpus=2, last_served=2)
    assert pick([spread, local]) is local  # no per-node counts: overall shares
    assert pick([spread, local], {1: 0, 2: 2}) is spread
    assert pick([spread, local], {2: 2}) is spread  # a missing cid counts as 0
    assert pick([spread, local], {1: 2, 2: 2}) is local


def test_fair_share_of_nothing_is_none():
    assert fair_share_pick([], {}, POOL) is None


def test_dispatch_depth_by_run_time():
    from dispyscheduler.scheduler.policy import dispatch_depth
    assert dispatch_depth(None) == 1  # until a job ends: one per CPU, so first jobs spread
    assert dispatch_depth(0.0001) == dispatch_depth(0.004) == 8
    assert dispatch_depth(0.01) == 4
    assert dispatch_depth(0.5) == 2
    assert dispatch_depth(1.0) == dispatch_depth(3600) == 1


def test_free_cpu_index_finds_the_best_fit_with_what_else_is_needed():
    index = FreeCpuIndex()
    index.update('a', 8, 0.1)
    index.update('b', 2, 0.5)
    index.update('c', 4, 0.0)
    index.update('d', 2, 0.0)
    assert index.best_fit(2, lambda node: True) == 'd'  # fewest free, then least loaded
    assert index.best_fit(3, lambda node: True) == 'c'
    assert index.best_fit(3, lambda node: node != 'c') == 'a'  # passed over: no GPU, say
    assert index.best_fit(9, lambda node: True) is None
    index.update('d', 0, 0.0)  # all held: out
    index.update('c', 8, 0.0)
    assert 'd' not in index and index.counts == [2, 8]
    assert index.best_fit(1, lambda node: True) == 'b'
    index.discard('b')
    assert index.counts == [8] and index.best_fit(1, lambda node: True) == 'c'
