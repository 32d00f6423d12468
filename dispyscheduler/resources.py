"""What a job needs and what a node has: CPUs, memory, GPUs and named resources.

Plain values, no I/O, shared by the three parties: the client reads a user's request
(``resources={'cpus': 4, 'memory': '8G', 'gpus': 1, 'licence': 1}``), the scheduler places
jobs where what they need is free (``Need.fits``), the node hands each job its own CPUs and
GPUs (``node/grants.py``). On the wire both a need and a node's offer are lists of
``(name, amount)`` pairs, memory in bytes: a peer that knows no resources sends none.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

CPUS = 'cpus'
MEMORY = 'memory'
GPUS = 'gpus'
BUILT_IN = (CPUS, MEMORY, GPUS)

Amounts = list[tuple[str, int]]
"""A need or an offer as it travels: ``[(name, amount), ...]``."""

SIZE_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40, 'P': 1 << 50}
_SIZE = re.compile(r'^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGTP]?)(?:I?B)?\s*$', re.IGNORECASE)
_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_.-]{0,63}$')


class ResourceError(ValueError):
    """A request or an offer that makes no sense (a negative count, an unknown unit)."""


def parse_size(value: Any, what: str = MEMORY) -> int:
    """Bytes of ``value``: an int (bytes), or a string such as ``'8G'``, ``'512M'``,
    ``'1.5GiB'``, ``'64g'`` (units are powers of 1024, as Slurm and HTCondor read them)."""
    if isinstance(value, bool):
        raise ResourceError('%s: %r is not a size' % (what, value))
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value == value:
        size = int(value)
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ResourceError("%s: %r is not a size (say '8G', '512M' or a number of bytes)"
                                % (what, value))
        size = int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])
    else:
        raise ResourceError('%s: %r is not a size' % (what, value))
    if size < 0:
        raise ResourceError('%s cannot be negative: %r' % (what, value))
    return size


def format_size(size: int) -> str:
    """``8589934592`` -> ``'8 GiB'``; the largest unit that keeps a short number."""
    for unit in ('PiB', 'TiB', 'GiB', 'MiB', 'KiB'):
        scale = SIZE_UNITS[unit[0]]
        if size >= scale:
            return ('%.1f' % (size / scale)).rstrip('0').rstrip('.') + ' ' + unit
    return '%d bytes' % size


def memory_exceeded(limit: int) -> str:
    """How a job that went over its memory limit ends: its reason."""
    return 'job exceeded its memory limit of %s' % format_size(limit)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResourceError('%s: %r is not a whole number' % (name, value))
    if value < 0:
        raise ResourceError('%s cannot be negative: %d' % (name, value))
    return value


def check_name(name: Any) -> str:
    """A named resource's name: letters, digits, ``_.-``; not one of the built-in ones."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ResourceError('%r is not a resource name (letters, digits, _ . -)' % (name,))
    return name


class Need:
    """What one job holds while it runs: CPUs (at least one), bytes of memory (0: none
    counted, no limit), GPUs, and named resources (a licence, a disk). Immutable and
    hashable: the scheduler queues jobs of one need together."""

    __slots__ = ('cpus', 'memory', 'gpus', 'named', 'light', '_hash')

    def __init__(self, cpus: int = 1, memory: int = 0, gpus: int = 0,
                 named: Iterable[tuple[str, int]] = ()) -> None:
        self.cpus = cpus
        self.memory = memory
        self.gpus = gpus
        self.named = tuple(sorted((name, amount) for name, amount in named if amount))
        # one CPU and nothing else: such jobs may wait their turn on a node (dispatch depth)
        self.light = cpus == 1 and not memory and not gpus and not self.named
        self._hash = hash((cpus, memory, gpus, self.named))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Need) and self._hash == other._hash
                and (self.cpus, self.memory, self.gpus, self.named)
                == (other.cpus, other.memory, other.gpus, other.named))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return '<Need %s>' % self.describe()

    @classmethod
    def from_user(cls, request: Optional[Mapping[str, Any]],
                  base: Optional[Need] = None) -> Need:
        """A user's ``resources`` mapping, over ``base`` (the cluster's, for a job's
        ``dispy_job_resources``): keys it leaves out keep their base amounts."""
        base = base or ONE_CPU
        if request is None:
            return base
        if not isinstance(request, Mapping):
            raise ResourceError('resources must be a dict such as {"cpus": 2, '
                                '"memory": "4G"}, not %r' % (request,))
        cpus, memory, gpus = base.cpus, base.memory, base.gpus
        named = dict(base.named)
        for name, value in request.items():
            if name == CPUS:
                cpus = _count(name, value)
                if cpus < 1:
                    raise ResourceError('a job needs at least 1 CPU, not %d' % cpus)
            elif name == MEMORY:
                memory = parse_size(value)
            elif name == GPUS:
                gpus = _count(name, value)
            else:
                named[check_name(name)] = _count(name, value)
        return cls(cpus, memory, gpus, named.items())

    def to_wire(self) -> Amounts:
        """As it travels; [] for the common need of one CPU."""
        if self.light:
            return []
        pairs = [(CPUS, self.cpus)]
        if self.memory:
            pairs.append((MEMORY, self.memory))
        if self.gpus:
            pairs.append((GPUS, self.gpus))
        return pairs + list(self.named)

    @classmethod
    def from_wire(cls, pairs: Amounts) -> Need:
        """The need a peer sent; ``ResourceError`` if it makes no sense."""
        if not pairs:
            return ONE_CPU
        request: dict[str, int] = {}
        for name, amount in pairs:
            if name in request:
                raise ResourceError('%s given twice' % (name,))
            request[name] = amount
        return cls.from_user(request)

    def as_dict(self) -> dict[str, int]:
        """For people and for status pages: every amount by name."""
        amounts = {CPUS: self.cpus}
        if self.memory:
            amounts[MEMORY] = self.memory
        if self.gpus:
            amounts[GPUS] = self.gpus
        amounts.update(self.named)
        return amounts

    def describe(self) -> str:
        """``'4 CPUs, 8 GiB of memory, 1 GPU, licence=1'``."""
        parts = ['%d CPU%s' % (self.cpus, '' if self.cpus == 1 else 's')]
        if self.memory:
            parts.append('%s of memory' % format_size(self.memory))
        if self.gpus:
            parts.append('%d GPU%s' % (self.gpus, '' if self.gpus == 1 else 's'))
        parts.extend('%s=%d' % pair for pair in self.named)
        return ', '.join(parts)

    def shortfall(self, offers: Iterable[Offer]) -> list[str]:
        """What no single one of ``offers`` (the nodes that could run the job) has enough of,
        each with the most any offers: ``['16 CPUs (the largest node has 4)']``; [] if one
        of them could run the job when idle."""
        offers = list(offers)
        if any(offer.covers(self) for offer in offers):
            return []
        if not offers:
            return ['a node (none is connected)']
        missing = []
        most = max(offer.cpus for offer in offers)
        if self.cpus > most:
            missing.append('%d CPUs (the largest node has %d)' % (self.cpus, most))
        most = max(offer.memory for offer in offers)
        if self.memory > most:
            missing.append('%s of memory (the largest node has %s)'
                           % (format_size(self.memory), format_size(most)))
        most = max(offer.gpus for offer in offers)
        if self.gpus > most:
            missing.append('%d GPU%s (%s)' % (self.gpus, '' if self.gpus == 1 else 's',
                                               'the most a node has is %d' % most
                                               if most else 'no node has any'))
        for name, amount in self.named:
            most = max(offer.named.get(name, 0) for offer in offers)
            if amount > most:
                missing.append('%s=%d (%s)' % (name, amount, 'the most a node offers is %d'
                                               % most if most else 'no node offers %s' % name))
        if not missing:  # each amount is somewhere, but never all on one node
            missing.append('all of %s on one node (no node has them together)'
                           % self.describe())
        return missing


ONE_CPU = Need()
"""What a job needs unless its cluster or its submission says otherwise."""


class Offer:
    """What a node has to give its jobs, whole: CPUs, bytes of memory, GPUs, named
    resources."""

    __slots__ = ('cpus', 'memory', 'gpus', 'named')

    def __init__(self, cpus: int, memory: int = 0, gpus: int = 0,
                 named: Optional[Mapping[str, int]] = None) -> None:
        self.cpus = cpus
        self.memory = memory
        self.gpus = gpus
        self.named = dict(named or {})

    def __repr__(self) -> str:
        return '<Offer %s>' % (self.as_dict(),)

    def add(self, other: Offer, sign: int = 1) -> None:
        """Count ``other`` in (a node joined), or out with ``sign`` -1 (it left)."""
        self.cpus += sign * other.cpus
        self.memory += sign * other.memory
        self.gpus += sign * other.gpus
        for name, amount in other.named.items():
            left = self.named.get(name, 0) + sign * amount
            if left:
                self.named[name] = left
            else:
                self.named.pop(name, None)

    def covers(self, need: Need) -> bool:
        """Whether the node, idle, could run a job of ``need``."""
        return (need.cpus <= self.cpus and need.memory <= self.memory
                and need.gpus <= self.gpus
                and all(amount <= self.named.get(name, 0) for name, amount in need.named))

    def to_wire(self) -> Amounts:
        """The amounts besides CPUs (``NodeInfo.cpus`` carries those)."""
        return [(MEMORY, self.memory), (GPUS, self.gpus)] + sorted(self.named.items())

    @classmethod
    def from_wire(cls, cpus: int, pairs: Amounts) -> Offer:
        memory = gpus = 0
        named = {}
        for name, amount in pairs:
            amount = max(0, amount)
            if name == MEMORY:
                memory = amount
            elif name == GPUS:
                gpus = amount
            elif name != CPUS:
                named[name] = amount
        return cls(cpus, memory, gpus, named)

    def as_dict(self) -> dict[str, int]:
        return dict({CPUS: self.cpus, MEMORY: self.memory, GPUS: self.gpus}, **self.named)

    def describe(self) -> str:
        """``'4 CPUs, 16 GiB of memory, 2 GPUs, licence=2'`` (what it has none of left out)."""
        return Need(self.cpus, self.memory, self.gpus, self.named.items()).describe()


class Held:
    """Amounts in use: what a node's jobs hold, or what a cluster's jobs hold in all."""

    __slots__ = ('cpus', 'memory', 'gpus', 'named')

    def __init__(self) -> None:
        self.cpus = 0
        self.memory = 0
        self.gpus = 0
        self.named: dict[str, int] = {}

    def take(self, need: Need) -> None:
        self.cpus += need.cpus
        if not need.light:
            self.memory += need.memory
            self.gpus += need.gpus
            for name, amount in need.named:
                self.named[name] = self.named.get(name, 0) + amount

    def give(self, need: Need) -> None:
        self.cpus -= need.cpus
        if not need.light:
            self.memory -= need.memory
            self.gpus -= need.gpus
            for name, amount in need.named:
                left = self.named.get(name, 0) - amount
                if left:
                    self.named[name] = left
                else:
                    self.named.pop(name, None)

    def leaves_room(self, need: Need, offer: Offer) -> bool:
        """Whether ``need`` fits beside what is held, on a node that offers ``offer``."""
        return (self.cpus + need.cpus <= offer.cpus
                and self.memory + need.memory <= offer.memory
                and self.gpus + need.gpus <= offer.gpus
                and all(self.named.get(name, 0) + amount <= offer.named.get(name, 0)
                        for name, amount in need.named))

    def share_of(self, total: Offer) -> float:
        """The largest fraction of ``total`` this holds of any one resource (its dominant
        share, as Dominant Resource Fairness counts it)."""
        share = self.cpus / total.cpus if total.cpus else 0.0
        if self.memory and total.memory:
            share = max(share, self.memory / total.memory)
        if self.gpus and total.gpus:
            share = max(share, self.gpus / total.gpus)
        for name, amount in self.named.items():
            if total.named.get(name):
                share = max(share, amount / total.named[name])
        return share

    def as_dict(self) -> dict[str, int]:
        return dict({CPUS: self.cpus, MEMORY: self.memory, GPUS: self.gpus}, **self.named)


def parse_offer_option(text: str) -> tuple[str, int]:
    """A node's ``--resource licence=2``: ``('licence', 2)``."""
    name, sep, amount = text.partition('=')
    name = name.strip()
    if not sep:
        raise ResourceError('%r: say name=count, as licence=2' % (text,))
    if name in BUILT_IN:
        raise ResourceError('%s: use --%s' % (name, name))
    try:
        count = int(amount)
    except ValueError:
        raise ResourceError('%r: %r is not a whole number' % (text, amount)) from None
    return check_name(name), _count(name, count)
