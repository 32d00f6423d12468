"""A cluster's results on their way to its client: few in memory, the rest on disk.

Every result is kept (saved in the store) until the client acknowledges it. A client that stops
reading, or is away, must not make the scheduler hold its results in memory: a few hundred
results of a megabyte once took a gigabyte. So a cluster's ``Outbox`` holds a result's message
only until it is saved, and then only its size; and at most ``window`` bytes of results are
sent to the client and not yet acknowledged. The rest wait, in order, and are read back from the
store when the client's acknowledgements make room, or when it comes back.

Pure bookkeeping, no I/O: the router sends what ``add`` and ``take`` return and reads from the
store what ``take`` says is only there.
"""

from __future__ import annotations

from typing import Iterator, Optional

from ..constants import RESULT_WINDOW
from ..wire.messages import JobEnd

MESSAGE_OVERHEAD = 100
"""Bytes a result's message costs beyond its variable fields (a rough figure, for counting)."""


def message_size(message: JobEnd) -> int:
    """Roughly how many bytes ``message`` takes in memory and on the wire (most fields are
    empty: tested before they are measured, for this runs for every result)."""
    size = MESSAGE_OVERHEAD
    if message.result:
        size += len(message.result)
    if message.exception:
        size += len(message.exception)
    if message.stdout:
        size += len(message.stdout)
    if message.stderr:
        size += len(message.stderr)
    if message.tag:
        size += len(message.tag)
    return size


class Outbox:
    """One cluster's results not yet acknowledged by its client."""

    def __init__(self, window: int = RESULT_WINDOW) -> None:
        self.window = window
        """Bytes of results sent to the client and not yet acknowledged, at most (one result
        may pass it)."""
        self.messages: dict[int, Optional[JobEnd]] = {}  # uid -> message; None once saved
        self.sizes: dict[int, int] = {}  # uid -> message_size, of every result held
        self.waiting: dict[int, None] = {}  # uids not sent on the current link, in order
        self.in_flight: dict[int, int] = {}  # uid -> size, sent and not acknowledged
        self.in_flight_bytes = 0
        self.attached = False  # a client's link is there to send to
        self.generation = 0  # counts attachments: a read from the store for an earlier
        # link is of no use to the next one

    def __len__(self) -> int:
        return len(self.sizes)

    def __contains__(self, uid: int) -> bool:
        return uid in self.sizes

    def __iter__(self) -> Iterator[int]:
        return iter(self.sizes)

    @property
    def resident_bytes(self) -> int:
        """Bytes of messages held in memory (those not saved yet)."""
        return sum(self.sizes[uid] for uid, message in self.messages.items()
                   if message is not None)

    def restored(self, uid: int, size: int) -> None:
        """A result saved before a restart: in the store only, waiting for its client."""
        self.messages[uid] = None
        self.sizes[uid] = size
        self.waiting[uid] = None

    def add(self, message: JobEnd, size: int) -> bool:
        """A job's end (of ``message_size`` ``size``), to hold until acknowledged. True if it
        is to be sent now; else it waits (the client is away, or results before it wait)."""
        uid = message.uid
        if uid in self.sizes:  # replaced (never happens for a job that ended once)
            self._forget(uid)
        self.messages[uid] = message
        self.sizes[uid] = size
        if self.attached and not self.waiting and self.in_flight_bytes < self.window:
            self.in_flight[uid] = size
            self.in_flight_bytes += size
            return True
        self.waiting[uid] = None
        return False

    def saved(self, uid: int) -> None:
        """The result is in the store now: its message leaves memory."""
        if uid in self.messages:
            self.messages[uid] = None

    def acknowledged(self, uid: int) -> bool:
        """The client has the result; False if it was not held (acknowledged before)."""
        if uid not in self.sizes:
            return False
        self._forget(uid)
        return True

    def _forget(self, uid: int) -> None:
        del self.sizes[uid]
        del self.messages[uid]
        self.waiting.pop(uid, None)
        size = self.in_flight.pop(uid, None)
        if size is not None:
            self.in_flight_bytes -= size

    def attach(self) -> None:
        """A client's link now serves the cluster: every result is to be sent on it, those
        sent on an earlier link first."""
        self.generation += 1
        self.attached = True
        self.waiting = dict.fromkeys(list(self.in_flight) + list(self.waiting))
        self.in_flight.clear()
        self.in_flight_bytes = 0

    def detach(self) -> None:
        """The client's link ended: nothing is sent until one is attached again."""
        self.attached = False

    def take(self) -> list[tuple[int, Optional[JobEnd]]]:
        """Waiting results that fit in the window now, in order, as ``(uid, message)``
        (message None: read it from the store); counted as sent."""
        taken: list[tuple[int, Optional[JobEnd]]] = []
        while self.attached and self.waiting and self.in_flight_bytes < self.window:
            uid = next(iter(self.waiting))
            del self.waiting[uid]
            size = self.sizes[uid]
            self.in_flight[uid] = size
            self.in_flight_bytes += size
            taken.append((uid, self.messages[uid]))
        return taken
