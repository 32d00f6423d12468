"""``DispyHTTPServer``: a program's own status page of its clusters, in its own process.

dispy programs start it with ``dispy.httpd.DispyHTTPServer(cluster)`` and point a browser at
port 8181: a page with each cluster's nodes (CPUs, jobs running and done, time used) and jobs
counts, refreshed every ``poll_sec`` seconds. The same is served as JSON, with dispy's paths:
``/cluster_status`` (every node), ``/cluster_updates`` (nodes changed since the last call),
``/nodes``, and, beyond dispy, ``/jobs`` (the jobs running, with their arguments unless
``show_job_args`` is false). It reads the cluster objects as they are when asked, so it needs
no ``cluster_status`` callback and misses nothing; it only reads, so any browser on the
network may look (bind ``host`` to 127.0.0.1 to keep it on this host).
"""

from __future__ import annotations

import http.server
import json
import logging
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from ..constants import DEFAULT_HTTP_PORT, RUNNING

if TYPE_CHECKING:
    from .cluster import SharedJobCluster
    from .job import DispyNode

logger = logging.getLogger('dispyscheduler')

class DispyHTTPServer:
    """Serve the status of ``cluster`` (and of any added with ``add_cluster``) over HTTP on
    ``host``:``port`` from a thread of this process, until ``shutdown``."""

    def __init__(self, cluster: Optional[SharedJobCluster], host: str = '',
                 port: int = DEFAULT_HTTP_PORT, poll_sec: float = 10,
                 DocumentRoot: Optional[str] = None, keyfile: Optional[str] = None,
                 certfile: Optional[str] = None, show_job_args: bool = True) -> None:
        del DocumentRoot  # dispy's own page files; this page is built in
        self._clusters: dict[str, SharedJobCluster] = {}
        self._lock = threading.Lock()
        self._last_update: dict[str, float] = {}  # cluster name -> time of the last update
        self._poll_sec = max(1.0, float(poll_sec))
        self._show_args = bool(show_job_args)
        if cluster is not None:
            self.add_cluster(cluster)
        self._server = http.server.ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        if certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile, keyfile)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name='dispy-httpd', daemon=True)
        self._thread.start()
        logger.info('status page at http%s://%s:%d/', 's' if certfile else '',
                    *self._server.server_address[:2])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def add_cluster(self, cluster: SharedJobCluster) -> None:
        with self._lock:
            if cluster.name in self._clusters:
                logger.warning('cluster "%s" is already shown', cluster.name)
                return
            self._clusters[cluster.name] = cluster

    def del_cluster(self, cluster: SharedJobCluster) -> None:
        with self._lock:
            self._clusters.pop(cluster.name, None)

    def shutdown(self, wait: bool = True) -> None:
        """Stop serving; with ``wait``, first give browsers one more ``poll_sec`` to fetch
        the final state (as dispy does)."""
        if wait:
            time.sleep(self._poll_sec)
        self._server.shutdown()
        self._server.server_close()

    # what is served

    def cluster_status(self, updates_only: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            clusters = list(self._clusters.items())
        now = time.time()
        answer = []
        for name, cluster in clusters:
            since = self._last_update.get(name, 0.0) if updates_only else 0.0
            nodes = [node_json(node) for node in list(cluster._nodes.values())
                     if node.update_time >= since]
            if updates_only:
                self._last_update[name] = now
            answer.append({'name': name, 'jobs': {'submitted': cluster._jobs_submitted,
                                                  'done': cluster._jobs_done},
                           'nodes': nodes})
        return answer

    def running_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            clusters = list(self._clusters.items())
        jobs = []
        for name, cluster in clusters:
            for job in list(cluster._jobs.values()):
                if job.status != RUNNING:
                    continue
                jobs.append({'cluster': name, 'id': str(job.id), 'ip_addr': job.ip_addr,
                             'start_time': job.start_time,
                             'args': repr(job.args) if self._show_args else '',
                             'kwargs': repr(job.kwargs) if self._show_args else ''})
        return jobs

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split('?', 1)[0]
                if path == '/cluster_status':
                    self.send_json(server.cluster_status())
                elif path == '/cluster_updates':
                    self.send_json(server.cluster_status(updates_only=True))
                elif path == '/nodes':
                    self.send_json([{'name': cluster['name'], 'nodes': cluster['nodes']}
                                    for cluster in server.cluster_status()])
                elif path == '/jobs':
                    self.send_json(server.running_jobs())
                elif path in ('/', '/index.html', '/monitor.html'):
                    page = PAGE.replace('POLL_MS', str(int(server._poll_sec * 1000)))
                    self.send_body(page.encode(), 'text/html; charset=utf-8')
                else:
                    self.send_error(404)

            def send_json(self, value: Any) -> None:
                self.send_body(json.dumps(value).encode(), 'application/json; charset=utf-8')

            def send_body(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header('Content-Type', content_type)
                self.send_header('Content-Length', str(len(body)))
                self.send_header('Cache-Control', 'no-store')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug('status page: ' + format, *args)

        return Handler


def node_json(node: DispyNode) -> dict[str, Any]:
    info = node.avail_info
    return {'ip_addr': node.ip_addr, 'name': node.name, 'cpus': node.cpus,
            'busy': node.busy, 'jobs_done': node.jobs_done, 'cpu_time': node.cpu_time,
            'update_time': node.update_time, 'platform': node.platform,
            'closed': node.closed, 'tx': node.tx, 'rx': node.rx,
            'avail_info': None if info is None else {
                'cpu': info.cpu, 'memory': info.memory, 'disk': info.disk, 'swap': info.swap}}


PAGE = '''<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>dispyscheduler: cluster status</title>
<style>
body { font-family: sans-serif; margin: 1em 2em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.closed { color: #999; }
</style></head>
<body><h1>Cluster status</h1><div id="clusters">loading...</div>
<script>
function cell(row, text) { var td = document.createElement('td');
  td.textContent = text; row.appendChild(td); }
function show(clusters) {
  var root = document.getElementById('clusters'); root.textContent = '';
  clusters.forEach(function (cluster) {
    var title = document.createElement('h2');
    title.textContent = cluster.name + ': ' + cluster.jobs.done + ' of ' +
      cluster.jobs.submitted + ' jobs done';
    root.appendChild(title);
    var table = document.createElement('table');
    var head = table.insertRow();
    ['Node', 'CPUs', 'Running', 'Jobs done', 'Sec/job', 'Node time (s)'].forEach(
      function (name) { var th = document.createElement('th'); th.textContent = name;
        head.appendChild(th); });
    cluster.nodes.forEach(function (node) {
      var row = table.insertRow(); if (node.closed) { row.className = 'closed'; }
      cell(row, node.ip_addr + (node.name ? ' (' + node.name + ')' : ''));
      cell(row, node.cpus); cell(row, node.busy); cell(row, node.jobs_done);
      cell(row, node.jobs_done ? (node.cpu_time / node.jobs_done).toFixed(3) : '-');
      cell(row, node.cpu_time.toFixed(3));
    });
    root.appendChild(table);
  });
}
function poll() {
  fetch('/cluster_status').then(function (answer) { return answer.json(); })
    .then(show).catch(function () {})
    .then(function () { setTimeout(poll, POLL_MS); });
}
poll();
</script></body></html>
'''
