"""``dispyscheduler-status``: a running scheduler's nodes and clusters, as tables.

It reads the scheduler's ``/status`` (so the scheduler must run with ``--httpd``), and prints
a table of nodes and one of clusters, in the manner of ``condor_status`` and ``condor_q``;
``--json`` prints the status as it came, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Sequence

DEFAULT_URL = 'http://127.0.0.1:8181'


def fetch(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url.rstrip('/') + '/status', timeout=timeout) as reply:
        return json.load(reply)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    widths = [max(len(str(value)) for value in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers] + rows:
        cells = [str(value).ljust(width) if n < 2 else str(value).rjust(width)
                 for n, (value, width) in enumerate(zip(row, widths))]
        lines.append('  '.join(cells).rstrip())
    return '\n'.join(lines)


def render(status: dict[str, Any]) -> str:
    late = 2 * status['pulse_interval']
    nodes = [[node['address'], node['name'], node['cpus'], node['busy'], node['jobs'],
              node['jobs_done'], '%.1fs%s' % (node['pulse_age'],
                                               ' LATE' if node['pulse_age'] > late else '')]
             for node in status['nodes']]
    clusters = [[cluster['cid'], cluster['name'], cluster['owner'] or '(gone)',
                 cluster['nodes'], cluster['queued'], cluster['running'], cluster['done']]
                for cluster in status['clusters']]
    return '\n\n'.join([
        table(['NODE', 'NAME', 'CPUS', 'BUSY', 'JOBS', 'DONE', 'PULSE'], nodes),
        table(['CLUSTER', 'NAME', 'CLIENT', 'NODES', 'QUEUED', 'RUNNING', 'DONE'], clusters),
        '%d nodes, %d CPUs (%d busy); %d clusters, %d jobs queued, %d running; up %ds' % (
            len(status['nodes']), sum(node['cpus'] for node in status['nodes']),
            sum(node['busy'] for node in status['nodes']), len(status['clusters']),
            sum(cluster['queued'] for cluster in status['clusters']),
            sum(cluster['running'] for cluster in status['clusters']), status['uptime'])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='dispyscheduler-status',
        description="Show a running scheduler's nodes and clusters (it must run with "
                    '--httpd).')
    parser.add_argument('url', nargs='?', default=DEFAULT_URL,
                        help='the scheduler\'s --httpd address (default %(default)s)')
    parser.add_argument('--json', action='store_true', help='print the status as JSON')
    parser.add_argument('--timeout', type=float, default=10.0, help='seconds to wait')
    options = parser.parse_args(argv)
    url = options.url if '://' in options.url else 'http://' + options.url
    try:
        status = fetch(url, options.timeout)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        sys.stderr.write('dispyscheduler-status: cannot read %s/status: %s\n' % (url, exc))
        return 1
    print(json.dumps(status, indent=2) if options.json else render(status))
    return 0


if __name__ == '__main__':
    sys.exit(main())
