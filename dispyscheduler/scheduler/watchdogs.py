"""The scheduler's periodic duties that watch for what does not happen: a node that falls
silent, nodes that do not come back after a restart, a cluster that no node sets up, a client
that never returns."""

from __future__ import annotations

import logging
import time

import gevent

from ..config import SchedulerConfig
from ..constants import (ABANDONED, IDLE_ORPHAN_PULSES, NO_NODE_PINGS, PULSES_MISSED_BEFORE_DEAD,
                         RESULT_RETENTION, UNMET_NEED_PULSES)
from ..resources import Need
from .clusters import ClusterService
from .model import Cluster, State
from .nodes import NodeService
from .router import Router

logger = logging.getLogger(__name__)


class Watchdogs:
    """Tunables are class attributes."""

    missed_pulses = PULSES_MISSED_BEFORE_DEAD
    """A node silent for this many pulse intervals is presumed dead; after a restart, nodes
    have as long to come back before the jobs they held are handled as lost."""

    def __init__(self, config: SchedulerConfig, state: State, nodes: NodeService,
                 clusters: ClusterService, router: Router) -> None:
        self.config = config
        self.state = state
        self.nodes = nodes
        self.clusters = clusters
        self.router = router
        self.awaiting_until = time.monotonic() + self.missed_pulses * config.pulse_interval
        self.nodeless_since: dict[int, float] = {}  # cid -> since when no node has set it up
        self.warned: set[int] = set()  # clusters whose clients were told so
        # (cid, need) -> since when its jobs wait for a node no connected one could be
        self.unmet_since: dict[tuple[int, Need], float] = {}
        self.unmet_warned: set[tuple[int, Need]] = set()  # their clients were told so

    def run(self) -> None:
        """Every pulse interval: presume silent nodes dead, give up on nodes that did not
        return after a restart, warn about clusters without nodes, clean up after clients
        that left long ago."""
        last = time.monotonic()
        while True:
            gevent.sleep(self.config.pulse_interval)
            now = time.monotonic()
            self.forgive_own_stall(now - last - self.config.pulse_interval)
            last = now
            self.presume_silent_nodes_dead(now)
            self.give_up_on_nodes_that_did_not_return(now)
            self.warn_clusters_without_nodes(now)
            self.warn_of_unmet_needs(now)
            self.clean_up_after_gone_clients(now)

    def forgive_own_stall(self, stall: float) -> None:
        """The scheduler itself was stopped (SIGSTOP, a suspended VM, swapping) for ``stall``
        seconds more than it meant to sleep: the pulses of that time wait unread in its
        sockets, so no node is judged on it (nodes were once presumed dead, their jobs run
        again, the moment a frozen scheduler went on)."""
        if stall < self.config.pulse_interval:
            return
        logger.warning('the scheduler was stalled for %.1f seconds; nodes are given that '
                       'time', stall)
        for node in self.state.nodes.values():
            node.last_heard += stall
        self.awaiting_until += stall

    def presume_silent_nodes_dead(self, now: float) -> None:
        silence = self.missed_pulses * self.config.pulse_interval
        for node in list(self.state.nodes.values()):
            if now - node.last_heard > silence:
                self.nodes.lose(node, 'no pulse for %d seconds' % (now - node.last_heard))

    def give_up_on_nodes_that_did_not_return(self, now: float) -> None:
        if not self.state.awaiting or now <= self.awaiting_until:
            return
        missing = ', '.join(sorted(self.state.awaiting))
        outcome = self.state.expire_awaiting()
        logger.warning('nodes %s did not come back after the restart (%d jobs requeued, %d '
                       'ended)', missing, len(outcome.requeued), len(outcome.ended))
        self.router.reschedule(outcome, 'the node running this job did not come back after '
                               'the scheduler restarted')

    def warn_clusters_without_nodes(self, now: float) -> None:
        """Tell a client whose cluster no node has set up for ``NO_NODE_PINGS`` discovery
        rounds (once), so that jobs waiting for ever are not a mystery; and when every node
        that tried to set it up failed and none is still trying, end its waiting jobs
        Abandoned with the nodes' reasons, rather than let them wait for nodes that will not
        come (dispy's most reported complaint)."""
        wait = NO_NODE_PINGS * self.config.ping_interval
        for cid in [cid for cid in self.nodeless_since if cid not in self.state.clusters]:
            del self.nodeless_since[cid]
            self.warned.discard(cid)
        for cluster in list(self.state.clusters.values()):
            since = self.nodeless_since.get(cluster.cid)
            if cluster.ready_nodes or cluster.dormant:
                self.nodeless_since.pop(cluster.cid, None)
                self.warned.discard(cluster.cid)
            elif since is None:
                self.nodeless_since[cluster.cid] = now
            elif now - since > wait:
                if cluster.cid not in self.warned and self.clusters.connected(cluster):
                    self.warned.add(cluster.cid)
                    self.router.warn_client(cluster, 'no node has set up this cluster in %d '
                                            'seconds; its nodes are %s; nodes known to the '
                                            'scheduler: %s' % (
                                                wait, describe_patterns(cluster),
                                                ', '.join(sorted(self.state.nodes)) or 'none'))
                if cluster.setup_failures and not self.state.setting_up(cluster):
                    self.abandon_waiting_jobs(cluster)

    def warn_of_unmet_needs(self, now: float) -> None:
        """Tell a client (once) whose jobs have waited ``UNMET_NEED_PULSES`` pulses for what
        no connected node it may use has (the only node with GPUs left, or none has joined
        yet): they wait for such a node, and the warning says what is missing. A need no
        node could meet when the job came was refused then (``ClusterService.unmet``)."""
        wait = UNMET_NEED_PULSES * self.config.pulse_interval
        waiting = set()
        for cluster in list(self.state.clusters.values()):
            for need, queue in cluster.queue.waiting():
                if need.light:
                    continue
                missing = need.shortfall(self.state.usable_offers(cluster))
                if not missing:
                    continue
                key = (cluster.cid, need)
                waiting.add(key)
                since = self.unmet_since.setdefault(key, now)
                if (now - since >= wait and key not in self.unmet_warned
                        and self.clusters.connected(cluster)):
                    self.unmet_warned.add(key)
                    self.router.warn_client(cluster, '%d jobs that each need %s have waited %d '
                                            'seconds for a node with %s' % (
                                                len(queue), need.describe(), now - since,
                                                '; '.join(missing)))
        for key in set(self.unmet_since).difference(waiting):
            del self.unmet_since[key]
            self.unmet_warned.discard(key)

    def abandon_waiting_jobs(self, cluster: Cluster) -> None:
        jobs = self.state.abandon_queued(cluster)
        if not jobs:
            return
        reason = 'the computation could not be set up on any node: %s' % '; '.join(
            '%s: %s' % (key, why) for key, why in sorted(cluster.setup_failures.items()))
        logger.warning('cluster %s: %d jobs abandoned: %s', cluster.cid, len(jobs), reason)
        for job in jobs:
            self.router.end_job(job, ABANDONED, reason)

    def clean_up_after_gone_clients(self, now: float) -> None:
        """A cluster whose client has been gone ``IDLE_ORPHAN_PULSES`` pulse intervals (or
        ``--zombie_interval``, if shorter) with nothing left to run frees its nodes, so a
        program killed mid-run leaves no worker processes behind for long; its undelivered
        results wait ``RESULT_RETENTION`` zombie intervals for a client to collect them, then
        the cluster is removed."""
        zombie_after = self.config.zombie_interval * 60
        retire_after = min(zombie_after, IDLE_ORPHAN_PULSES * self.config.pulse_interval)
        for cluster in list(self.state.clusters.values()):
            if (cluster.orphaned_since is None or self.clusters.connected(cluster)
                    or cluster.in_flight or cluster.queued):
                continue
            gone = now - cluster.orphaned_since
            if gone > zombie_after * RESULT_RETENTION or (gone > zombie_after
                                                          and not cluster.results):
                logger.info('cluster %s: client gone for %d minutes; removing it',
                            cluster.cid, gone // 60)
                self.clusters.close_cluster(cluster)
            elif gone > retire_after and not cluster.dormant:
                logger.info('cluster %s: client gone for %d seconds with nothing left to run; '
                            'freeing its nodes, keeping %d results for it', cluster.cid, gone,
                            len(cluster.results))
                self.clusters.retire(cluster)


def describe_patterns(cluster: Cluster) -> str:
    return ', '.join('%s%s' % (pattern, ':%d' % port if port else '')
                     for pattern, port in cluster.patterns)
