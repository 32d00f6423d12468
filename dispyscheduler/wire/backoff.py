"""Pauses between attempts to reach a peer that is not there (yet): a node reconnecting to its
scheduler, a client to its scheduler after the link broke."""

from ..constants import RECONNECT_DELAY_RANGE


class Backoff:
    """Delays that double from ``first`` up to ``largest``, and start over at ``first`` after
    a success: a peer that comes back is reached again at once, and one that stays away is
    not asked ten times a second."""

    def __init__(self, first: float = RECONNECT_DELAY_RANGE[0],
                 largest: float = RECONNECT_DELAY_RANGE[1]) -> None:
        self.first = first
        self.largest = largest
        self.delay = first

    def next_delay(self) -> float:
        """The pause before the next attempt (each call doubles the one after it)."""
        delay = self.delay
        self.delay = min(2 * delay, self.largest)
        return delay

    def reset(self) -> None:
        """The peer was reached: the next failure waits ``first`` again."""
        self.delay = self.first
