"""``dispyscheduler-status``: a running scheduler's nodes and clusters, as tables.

It reads the scheduler's ``/status`` (so the scheduler must run with ``--httpd``), and prints
a table of nodes and one of clusters, in the manner of ``condor_status`` and ``condor_q``;
``--json`` prints the status as it came, for scripts. Each node's row ends with what of it is
in use (``2/4 CPUs, 3 GiB/16 GiB, 1/2 GPUs, licence 1/2``), each cluster's with what its jobs
hold (``2 CPUs, 1 GiB``), and a last line says the same of the whole pool.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Mapping, Optional, Sequence

from ..resources import BUILT_IN, CPUS, GPUS, MEMORY, format_size

DEFAULT_URL = 'http://127.0.0.1:8181'


def fetch(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url.rstrip('/') + '/status', timeout=timeout) as reply:
        return json.load(reply)


def table(headers: list[str], rows: list[list[Any]], texts: int = 0) -> str:
    """Columns aligned: the first two and the last ``texts`` to the left, numbers right."""
    widths = [max(len(str(value)) for value in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers] + rows:
        cells = [str(value).ljust(width) if n < 2 or n >= len(row) - texts
                 else str(value).rjust(width)
                 for n, (value, width) in enumerate(zip(row, widths))]
        lines.append('  '.join(cells).rstrip())
    return '\n'.join(lines)


def _plural(word: str, count: int) -> str:
    return word if count == 1 else word + 's'


def _named(*amounts: Mapping[str, int]) -> list[str]:
    """The named resources (not CPUs, memory, GPUs) among ``amounts``, sorted."""
    return sorted({name for each in amounts for name in each if name not in BUILT_IN})


def usage(has: Optional[Mapping[str, int]], used: Optional[Mapping[str, int]]) -> str:
    """``'2/4 CPUs, 3 GiB/16 GiB, 1/2 GPUs, licence 1/2'``: what is in use of what there is
    (``resources`` and ``in_use`` of ``/status``); memory and GPUs only where there are
    some."""
    has, used = has or {}, used or {}
    cpus = has.get(CPUS, 0)
    parts = ['%d/%d %s' % (used.get(CPUS, 0), cpus, _plural('CPU', cpus))]
    if has.get(MEMORY) or used.get(MEMORY):
        memory = used.get(MEMORY, 0)
        parts.append('%s/%s' % (format_size(memory) if memory else '0',
                                format_size(has.get(MEMORY, 0))))
    if has.get(GPUS) or used.get(GPUS):
        gpus = has.get(GPUS, 0)
        parts.append('%d/%d %s' % (used.get(GPUS, 0), gpus, _plural('GPU', gpus)))
    parts.extend('%s %d/%d' % (name, used.get(name, 0), has.get(name, 0))
                 for name in _named(has, used))
    return ', '.join(parts)


def holding(held: Optional[Mapping[str, int]]) -> str:
    """``'2 CPUs, 1 GiB, 1 GPU, licence 1'``: what a cluster's jobs hold (its ``holds``);
    CPUs always, the rest where some is held."""
    held = held or {}
    cpus = held.get(CPUS, 0)
    parts = ['%d %s' % (cpus, _plural('CPU', cpus))]
    if held.get(MEMORY):
        parts.append(format_size(held[MEMORY]))
    if held.get(GPUS):
        parts.append('%d %s' % (held[GPUS], _plural('GPU', held[GPUS])))
    parts.extend('%s %d' % (name, held[name]) for name in _named(held) if held[name])
    return ', '.join(parts)


def node_usage(node: Mapping[str, Any]) -> str:
    """A node's ``usage``, and the job it is kept free for, if any."""
    if 'resources' not in node:  # a scheduler of before resources were counted
        return ''
    text = usage(node['resources'], node.get('in_use'))
    if node.get('reserved_for'):
        text += ' (kept for job %s)' % node['reserved_for']
    return text


def render(status: dict[str, Any]) -> str:
    late = 2 * status['pulse_interval']
    nodes = [[node['address'], node['name'], node['cpus'], node['busy'], node['jobs'],
              node['jobs_done'], '%.1fs%s' % (node['pulse_age'],
                                               ' LATE' if node['pulse_age'] > late else ''),
              node_usage(node)]
             for node in status['nodes']]
    clusters = [[cluster['cid'], cluster['name'], cluster['owner'] or '(gone)',
                 cluster['nodes'], cluster['queued'], cluster['running'], cluster['done'],
                 holding(cluster['holds']) if 'holds' in cluster else '']
                for cluster in status['clusters']]
    summary = '%d nodes, %d CPUs (%d busy); %d clusters, %d jobs queued, %d running; up %ds' % (
        len(status['nodes']), sum(node['cpus'] for node in status['nodes']),
        sum(node['busy'] for node in status['nodes']), len(status['clusters']),
        sum(cluster['queued'] for cluster in status['clusters']),
        sum(cluster['running'] for cluster in status['clusters']), status['uptime'])
    if 'resources' in status:
        summary += '\npool in use: %s' % usage(status['resources'], status.get('in_use'))
    return '\n\n'.join([
        table(['NODE', 'NAME', 'CPUS', 'BUSY', 'JOBS', 'DONE', 'PULSE', 'IN USE'], nodes,
              texts=1),
        table(['CLUSTER', 'NAME', 'CLIENT', 'NODES', 'QUEUED', 'RUNNING', 'DONE', 'HOLDS'],
              clusters, texts=1),
        summary])


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
