"""Results too large to travel inline, kept by the scheduler as files.

A node streams such a result (``PayloadPart`` chunks, then the ``JobDone`` that names it); the
scheduler writes the chunks to the cluster's directory as they come, never holding more than
one in memory; the ``JobDone`` that names the file hands it to ``Durability.sync_file``, so
that it is durable before the result is acknowledged to the node. The file is streamed on to
the client before the ``JobEnd`` that names it (``ClientSession``), and removed once the
client acknowledges it. A provisional result travels the same way, and is removed once sent
(it was never durable).

A stream cut short (the link broke, the scheduler was killed) leaves a partial file that no
saved result names: the node sends the whole stream again on its next link, and such files
are removed at restart.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Callable

from ..runtime.duties import in_background
from ..wire import messages as m
from ..wire.files import IncomingPayloads, remove_file

if TYPE_CHECKING:
    from .model import Cluster

RESULTS_DIRECTORY = 'results'
"""Where in a cluster's directory its large results are kept."""

FINAL_RESULT = re.compile(r'_dispyscheduler_result_[0-9]+\.pickle')
"""A final result's payload (``serialize.RESULT_FILE``), not a provisional one's."""


def cluster_directory(cluster: Cluster, prefix: str) -> bool:
    """Make the cluster's directory in ``prefix`` if it has none yet; True if it was made
    (the cluster is to be saved again: its row names the directory)."""
    if cluster.directory is not None:
        return False
    cluster.directory = os.path.join(prefix, str(cluster.cid))
    os.makedirs(cluster.directory, mode=0o700, exist_ok=True)
    return True


def payload_file(uid: int, name: str) -> str:
    """A payload's file name at the scheduler: the job's uid first, so that a restart finds
    which results its files belong to."""
    return '%d-%s' % (uid, name)


def receive_part(payloads: IncomingPayloads, cluster: Cluster, uid: int,
                 part: m.PayloadPart) -> None:
    """One chunk of a payload of job ``uid`` of ``cluster``, to the cluster's results."""
    assert cluster.directory is not None  # ``cluster_directory`` made it
    payloads.part(os.path.join(cluster.directory, RESULTS_DIRECTORY),
                  payload_file(uid, part.name), part)


def forget_result(cluster: Cluster, uid: int) -> None:
    """The client has the result: its file goes (in the background: no other file will ever
    have its name, a job's uid being its own)."""
    path = cluster.stored_results.pop(uid, None)
    if path is not None:
        in_background(remove_file, path)


def restore_results(cluster: Cluster, kept: Callable[[int], bool]) -> None:
    """After a restart: the files of results still to deliver (``kept(uid)``) are the
    cluster's again; any other (a stream cut short, a result delivered) is removed."""
    if cluster.directory is None:
        return
    directory = os.path.join(cluster.directory, RESULTS_DIRECTORY)
    try:
        files = os.listdir(directory)
    except FileNotFoundError:
        return
    for file in files:
        uid, _, name = file.partition('-')
        path = os.path.join(directory, file)
        if uid.isdigit() and FINAL_RESULT.fullmatch(name) and kept(int(uid)):
            cluster.stored_results[int(uid)] = path
        else:
            remove_file(path)
