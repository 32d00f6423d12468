"""The scheduler's status over HTTP (``--httpd [HOST:]PORT``): JSON, Prometheus metrics, a page.

``GET /status`` is the scheduler at a glance (nodes, clusters, uptime) as JSON; ``GET /metrics``
is the Prometheus text exposition (prometheus_client); ``GET /`` is a page that shows the same
as ``/status``, refreshed every second, a node's row red when its pulse is late. Each shows
what every node has for jobs (CPUs, memory, GPUs, named resources) and how much of it the jobs
sent there hold, and what each cluster's jobs hold, memory in bytes (the page and
``dispyscheduler-status`` write it as ``16 GiB``). Read-only,
and bound to 127.0.0.1 unless told otherwise: it shows who runs what, so expose it only where
that is fine.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import json
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from .. import __version__
from ..constants import FINISHED, STATUS_NAMES
from ..resources import Held, Offer

if TYPE_CHECKING:
    from .model import Cluster, Node, State
    from .sessions import Peers

logger = logging.getLogger(__name__)

PLACEMENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                     5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """Counters kept as events happen, as plain numbers (a prometheus_client ``Counter`` or
    ``Histogram`` takes a lock on every update, a cost on every job's path); they and
    everything read from the state are turned into metric families only when scraped."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.registry = CollectorRegistry()
        self.submitted = 0
        self.finished = 0
        self.failed: collections.Counter[str] = collections.Counter()  # status name -> jobs
        self.placement_counts = [0] * (len(PLACEMENT_BUCKETS) + 1)  # the last one: +Inf
        self.placement_sum = 0.0
        self.registry.register(self)

    def job_submitted(self) -> None:
        self.submitted += 1

    def job_ended(self, status: int) -> None:
        if status == FINISHED:
            self.finished += 1
        else:
            self.failed[STATUS_NAMES.get(status, str(status))] += 1

    def job_placed(self, seconds: float) -> None:
        self.placement_counts[bisect.bisect_left(PLACEMENT_BUCKETS, seconds)] += 1
        self.placement_sum += seconds

    def collect(self) -> Iterator[Metric]:
        state = self.state
        now = time.monotonic()
        yield CounterMetricFamily('dispyscheduler_jobs_submitted', 'Jobs submitted',
                                  value=self.submitted)
        yield CounterMetricFamily('dispyscheduler_jobs_finished', 'Jobs that ended Finished',
                                  value=self.finished)
        failed = CounterMetricFamily(
            'dispyscheduler_jobs_failed',
            'Jobs that ended otherwise (Terminated, Cancelled, Abandoned)', labels=['status'])
        for name, count in sorted(self.failed.items()):
            failed.add_metric([name], count)
        yield failed
        cumulative = list(itertools.accumulate(self.placement_counts))
        yield HistogramMetricFamily(
            'dispyscheduler_placement_seconds', 'From submission to dispatch to a node',
            buckets=[(repr(float(bound)), count) for bound, count
                     in zip(PLACEMENT_BUCKETS, cumulative)] + [('+Inf', cumulative[-1])],
            sum_value=self.placement_sum)
        yield GaugeMetricFamily('dispyscheduler_jobs_queued', 'Jobs waiting for a node',
                                value=sum(cluster.queued for cluster in state.clusters.values()))
        yield GaugeMetricFamily('dispyscheduler_jobs_running', 'Jobs sent to nodes',
                                value=sum(len(node.jobs) for node in state.nodes.values()))
        yield GaugeMetricFamily('dispyscheduler_nodes', 'Nodes connected',
                                value=len(state.nodes))
        yield GaugeMetricFamily('dispyscheduler_clusters', 'Clusters', value=len(state.clusters))
        busy = GaugeMetricFamily('dispyscheduler_node_busy_cpus', 'CPUs running jobs',
                                 labels=['node'])
        cpus = GaugeMetricFamily('dispyscheduler_node_cpus', 'CPUs of a node', labels=['node'])
        pulse = GaugeMetricFamily('dispyscheduler_node_pulse_age_seconds',
                                  'Seconds since a node was last heard from', labels=['node'])
        has = GaugeMetricFamily(
            'dispyscheduler_node_resource',
            'What a node has for jobs, by resource (cpus, memory in bytes, gpus, named ones)',
            labels=['node', 'resource'])
        in_use = GaugeMetricFamily(
            'dispyscheduler_node_resource_in_use',
            'What the jobs sent to a node hold of it, by resource (memory in bytes)',
            labels=['node', 'resource'])
        for node in state.nodes.values():
            busy.add_metric([node.key], node_busy(node))
            cpus.add_metric([node.key], node.cpus)
            pulse.add_metric([node.key], now - node.last_heard)
            for resource, amount in node.offer.as_dict().items():
                has.add_metric([node.key, resource], amount)
            for resource, amount in held_of(node.held, node.offer).items():
                in_use.add_metric([node.key, resource], amount)
        yield busy
        yield cpus
        yield pulse
        yield has
        yield in_use
        held = GaugeMetricFamily(
            'dispyscheduler_cluster_resource_held',
            "What a cluster's jobs on nodes hold, by resource (memory in bytes); the cluster "
            'by its id', labels=['cluster', 'resource'])
        for cluster in state.clusters.values():
            for resource, amount in held_of(cluster.held, state.total).items():
                held.add_metric([str(cluster.cid), resource], amount)
        yield held


def node_busy(node: Node) -> int:
    """CPUs running jobs: jobs started there, at most its CPUs (the rest wait on the node)."""
    return min(node.cpus, sum(1 for job in node.jobs.values() if job.start_time is not None))


def held_of(held: Held, offer: Offer) -> dict[str, int]:
    """What ``held`` holds of each resource: every one ``offer`` has (0 where nothing is
    held, so a series does not vanish while a resource is idle), and any other it holds.
    CPUs at most ``offer``'s: jobs of one CPU sent ahead to a node wait their turn there."""
    amounts = dict.fromkeys(offer.as_dict(), 0)
    amounts.update(held.as_dict())
    amounts['cpus'] = min(amounts['cpus'], offer.cpus)
    return amounts


def reserved_for(node: Node) -> str | None:
    """``'<cluster id>/<job uid>'`` of the large job the node is kept free for, or None."""
    job = node.reserved
    return None if job is None else '%d/%d' % (job.cluster.cid, job.uid)


def status(state: State, peers: Peers, started: float, pulse_interval: float) -> dict[str, Any]:
    """The scheduler at a glance, for ``/status`` and ``dispyscheduler-status``.

    Besides counts, each node has ``resources`` (what it has for jobs), ``in_use`` (what
    the jobs sent there hold, CPUs up to its own: jobs of one CPU sent ahead wait there) and
    ``reserved_for``; each cluster ``needs`` (what its jobs need unless submitted with their
    own) and ``holds`` (what its jobs on nodes hold); the pool ``resources`` and ``in_use``,
    over all nodes. Amounts by name (``cpus``, ``memory`` in bytes, ``gpus``, named ones)."""
    now = time.monotonic()
    nodes = sorted(state.nodes.values(), key=lambda node: node.key)
    pool_in_use = dict.fromkeys(state.total.as_dict(), 0)
    for node in nodes:
        for resource, amount in held_of(node.held, node.offer).items():
            pool_in_use[resource] = pool_in_use.get(resource, 0) + amount
    return {
        'version': __version__,
        'uptime': time.time() - started,
        'pulse_interval': pulse_interval,
        'resources': state.total.as_dict(),
        'in_use': pool_in_use,
        'nodes': [{'address': node.key, 'ip_addr': node.ip_addr, 'name': node.name,
                   'cpus': node.cpus, 'busy': node_busy(node), 'jobs': len(node.jobs),
                   'jobs_done': node.jobs_done, 'pulse_age': now - node.last_heard,
                   'resources': node.offer.as_dict(),
                   'in_use': held_of(node.held, node.offer),
                   'reserved_for': reserved_for(node)}
                  for node in nodes],
        'clusters': [{'cid': cluster.cid, 'name': cluster.name,
                      'owner': owner(peers, cluster),
                      'queued': cluster.queued, 'running': cluster.in_flight,
                      'done': cluster.done, 'nodes': len(cluster.ready_nodes),
                      'undelivered': len(cluster.results), 'job_bytes': cluster.job_bytes,
                      'needs': cluster.need.as_dict(), 'holds': cluster.held.as_dict()}
                     for cluster in sorted(state.clusters.values(),
                                           key=lambda cluster: cluster.cid)],
    }


def owner(peers: Peers, cluster: Cluster) -> str | None:
    """Where a cluster's client is connected from, or None."""
    session = peers.client(cluster.cid)
    return session.peer if session is not None else None


class StatusServer:
    """Serves ``status()`` (a callable returning the status) and the metrics ``registry``."""

    def __init__(self, status: Callable[[], dict[str, Any]], registry: CollectorRegistry,
                 listener: socket.socket) -> None:
        self.status = status
        self.registry = registry
        self.server = WSGIServer(listener, self.application, log=None, error_log=logger)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(timeout=1)

    def application(self, environ: dict[str, Any],
                    start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get('PATH_INFO', '/')
        if environ.get('REQUEST_METHOD') not in ('GET', 'HEAD'):
            return self.reply(start_response, '405 Method Not Allowed', 'text/plain',
                              b'only GET\n')
        if path == '/status':
            body = json.dumps(self.status()).encode()
            return self.reply(start_response, '200 OK', 'application/json', body)
        if path == '/metrics':
            body = generate_latest(self.registry)
            return self.reply(start_response, '200 OK',
                              'text/plain; version=0.0.4; charset=utf-8', body)
        if path in ('/', '/index.html'):
            return self.reply(start_response, '200 OK', 'text/html; charset=utf-8', PAGE)
        return self.reply(start_response, '404 Not Found', 'text/plain', b'not found\n')

    @staticmethod
    def reply(start_response: Callable[..., Any], code: str, content_type: str,
              body: bytes) -> list[bytes]:
        start_response(code, [('Content-Type', content_type),
                              ('Content-Length', str(len(body))),
                              ('Cache-Control', 'no-store')])
        return [body]


PAGE = b'''<!doctype html>
<html><head><meta charset="utf-8"><title>dispyscheduler</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.late td { background: #fdd; color: #a00; }
#summary, #pool { color: #555; }
</style></head>
<body>
<h1>dispyscheduler</h1>
<p id="summary">loading&hellip;</p>
<p id="pool"></p>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>Node</th><th>Name</th><th>CPUs</th><th>Busy</th>
<th>Jobs</th><th>Jobs done</th><th>Last pulse</th><th>In use</th></tr></thead>
<tbody></tbody></table>
<h2>Clusters</h2>
<table id="clusters"><thead><tr><th>Cluster</th><th>Name</th><th>Client</th><th>Nodes</th>
<th>Queued</th><th>Running</th><th>Done</th><th>Holds</th></tr></thead><tbody></tbody></table>
<script>
var BUILT_IN = ['cpus', 'memory', 'gpus'];
var UNITS = [['PiB', Math.pow(2, 50)], ['TiB', Math.pow(2, 40)], ['GiB', Math.pow(2, 30)],
             ['MiB', Math.pow(2, 20)], ['KiB', Math.pow(2, 10)]];
function size(bytes) {  // as resources.format_size: 8589934592 -> '8 GiB'
  for (var i = 0; i < UNITS.length; i++) {
    if (bytes >= UNITS[i][1]) {
      return (bytes / UNITS[i][1]).toFixed(1).replace(/[.]0$/, '') + ' ' + UNITS[i][0];
    }
  }
  return bytes + ' bytes';
}
function plural(word, count) { return count === 1 ? word : word + 's'; }
function named(amounts, more) {  // named resources' names, sorted
  var names = Object.keys(amounts).concat(Object.keys(more || {}));
  return names.filter(function (name, i) {
    return BUILT_IN.indexOf(name) < 0 && names.indexOf(name) === i;
  }).sort();
}
// '2/4 CPUs, 3 GiB/16 GiB, 1/2 GPUs, licence 1/2': in use of what there is; memory and GPUs
// only where there are some
function usage(has, used) {
  has = has || {}; used = used || {};
  function amount(amounts, name) { return amounts[name] || 0; }
  var parts = [amount(used, 'cpus') + '/' + amount(has, 'cpus') + ' ' +
               plural('CPU', amount(has, 'cpus'))];
  if (amount(has, 'memory') || amount(used, 'memory')) {
    parts.push((amount(used, 'memory') ? size(used.memory) : '0') + '/' +
               size(amount(has, 'memory')));
  }
  if (amount(has, 'gpus') || amount(used, 'gpus')) {
    parts.push(amount(used, 'gpus') + '/' + amount(has, 'gpus') + ' ' +
               plural('GPU', amount(has, 'gpus')));
  }
  named(has, used).forEach(function (name) {
    parts.push(name + ' ' + amount(used, name) + '/' + amount(has, name));
  });
  return parts.join(', ');
}
// '2 CPUs, 1 GiB, 1 GPU, licence 1': what is held (CPUs always, the rest where some is)
function holding(held) {
  held = held || {};
  var cpus = held.cpus || 0, parts = [cpus + ' ' + plural('CPU', cpus)];
  if (held.memory) parts.push(size(held.memory));
  if (held.gpus) parts.push(held.gpus + ' ' + plural('GPU', held.gpus));
  named(held).forEach(function (name) {
    if (held[name]) parts.push(name + ' ' + held[name]);
  });
  return parts.join(', ');
}
function cell(row, text, cls) {
  var td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}
function fill(id, items, build) {
  var body = document.querySelector('#' + id + ' tbody');
  body.textContent = '';
  items.forEach(function (item) { body.appendChild(build(item)); });
}
function refresh() {
  fetch('status').then(function (reply) { return reply.json(); }).then(function (s) {
    document.getElementById('summary').textContent = 'version ' + s.version + ', up ' +
      Math.round(s.uptime) + ' s, ' + s.nodes.length + ' nodes, ' + s.clusters.length +
      ' clusters';
    document.getElementById('pool').textContent = s.resources ?
      'Pool in use: ' + usage(s.resources, s.in_use) : '';
    fill('nodes', s.nodes, function (n) {
      var row = document.createElement('tr');
      row.id = 'node-' + n.address;
      if (n.pulse_age > 2 * s.pulse_interval) row.className = 'late';
      cell(row, n.address); cell(row, n.name, 'text'); cell(row, n.cpus); cell(row, n.busy);
      cell(row, n.jobs); cell(row, n.jobs_done); cell(row, n.pulse_age.toFixed(1) + ' s ago');
      cell(row, usage(n.resources, n.in_use) +
           (n.reserved_for ? ' (kept for job ' + n.reserved_for + ')' : ''), 'text');
      return row;
    });
    fill('clusters', s.clusters, function (c) {
      var row = document.createElement('tr');
      cell(row, c.cid); cell(row, c.name, 'text'); cell(row, c.owner || '(gone)', 'text');
      cell(row, c.nodes); cell(row, c.queued); cell(row, c.running); cell(row, c.done);
      cell(row, holding(c.holds), 'text');
      return row;
    });
  }).catch(function (error) {
    document.getElementById('summary').textContent = 'cannot reach the scheduler: ' + error;
  });
}
refresh();
setInterval(refresh, 1000);
</script>
</body></html>
'''
