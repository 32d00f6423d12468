"""A scheduler or a node run for one program, in a child process (``JobCluster``'s own
scheduler, the nodes its ``local`` option starts): ``python -m dispyscheduler.runtime.child``.

The parent writes one line of JSON to the child's standard input: ``{"role": "scheduler" or
"node", "config": {...}, "log_file": ..., "remove_on_exit": DIRECTORY}``, ``config`` holding
the fields of ``SchedulerConfig`` or ``NodeConfig`` (no command line: the typed
configuration). The child binds its sockets and answers with one line: ``{"port": ...,
"scheduler_port": ...}`` (a node: ``{"port": ...}``), or ``{"error": "..."}``. It then serves
until its standard input ends: the parent closed it, or the parent died (a pipe's end is
closed with its process, ``kill -9`` included), and stops as it does on SIGTERM. Only this
process is monkey-patched; the program's never is.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any, Callable


def serve(request: dict[str, Any], answer: Callable[[dict[str, Any]], None]) -> int:
    import gevent
    from gevent.os import make_nonblocking, nb_read

    from ..config import NodeConfig, SchedulerConfig, from_fields
    from ..runtime.daemonize import configure_logging, prepare_directory, raise_file_limit

    configure_logging(request.get('debug', False), request.get('log_file'))
    raise_file_limit()
    if request['role'] == 'scheduler':
        from ..scheduler.server import Listeners, Scheduler
        from ..scheduler.store import Store
        config = from_fields(SchedulerConfig, request['config']).check()
        try:
            prepare_directory(config.dest_path_prefix)
            prepare_directory(config.state_path)
            listeners = Listeners(config)
            store = Store(config.state_path)
        except Exception as exc:  # what cannot start is told to the parent, who raises it
            answer({'error': '%s: %s' % (type(exc).__name__, exc)})
            return 2
        daemon: Any = Scheduler(config, store, listeners)
        answer({'port': listeners.node_port, 'scheduler_port': listeners.client_port})
    else:
        from ..node.daemon import NodeDaemon
        node_config = from_fields(NodeConfig, request['config']).check()
        node_config.cpus = node_config.cpu_count()
        daemon = NodeDaemon(node_config)
        try:
            daemon.bind()
        except OSError as exc:
            answer({'error': 'cannot listen: %s' % (exc,)})
            return 2
        answer({'port': node_config.node_port})

    def parent_watch() -> None:
        make_nonblocking(0)
        while nb_read(0, 4096):
            pass
        daemon.stopped.set()  # the parent closed our standard input, or died

    gevent.spawn(parent_watch)
    try:
        return int(daemon.run())
    finally:
        if request.get('remove_on_exit'):  # its files, once it has stopped using them
            shutil.rmtree(request['remove_on_exit'], ignore_errors=True)


def main() -> int:
    from gevent import monkey
    monkey.patch_all()
    request = json.loads(sys.stdin.buffer.readline())

    def answer(reply: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(reply) + '\n')
        sys.stdout.flush()

    return serve(request, answer)


if __name__ == '__main__':
    sys.exit(main())
