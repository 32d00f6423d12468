"""What a node hands each job of what it has, and how a job's memory is kept within its grant.

The scheduler places a job on a node where its ``Need`` fits (``resources.py``), but counting is
not holding: two jobs that each asked for a GPU must get different GPUs, and a job that asked
for 4 CPUs should run on 4 CPUs, not share one with three others. So the node keeps the
ledger of what it has (``Grants``) and hands each job, when it starts, a ``Grant``: its own CPU
slots (and the OS CPUs to pin its worker process to), its own GPUs (by ``nvidia-smi`` index),
its bytes of memory and its named resources. The job sees its grant (``Grant.as_dict``) and
gives it back when it ends. A light job (one CPU, nothing else) holds one slot and no memory.

Memory is the one grant a job can overrun, and one that overruns it takes the node down with
it (the kernel's OOM killer picks any process). So a job with a memory grant is held to it
(``MemoryLimits``):

* with cgroup v2, where the node can make groups of its own, each job's worker process is moved
  into a group of the job's own (``<node group>/job-<jid>``) with ``memory.max`` set to its
  grant and no swap: past it the kernel kills that process only, and ``memory.events`` says
  so, so the job ends with "exceeded its memory". Memory the worker process held before the job
  stays charged where it was (cgroup v2 moves no charges), so the limit counts what the job
  allocates. The worker process goes back to an ``idle`` group between jobs (cgroup v2 keeps
  processes in leaf groups only).
* otherwise (cgroup v1, no delegation, the node's own cgroup holds processes), the worker
  process limits its own address space around the job (``limit_address_space``, the soft
  ``RLIMIT_AS``): an allocation past it fails with ``MemoryError`` in the job, and the worker
  lives on. Address space is not memory (thread stacks, malloc arenas and mapped files count
  too), so this is the coarser fallback; ``MemoryLimits.describe`` tells the node's log which
  one is in use and why.

This module never imports gevent: the worker-side helpers run in the runner's processes
(``runner.py`` never imports it), and the daemon, monkey-patched, sees ``time.sleep`` and
``subprocess`` cooperate.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from ..resources import CPUS, GPUS, MEMORY, Need

logger = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT = 10.0
"""Seconds ``nvidia-smi -L`` has to list the GPUs before the node counts none (a driver that
hangs must not hang the node's start)."""

CGROUP = 'cgroup'
"""``MemoryLimits.method``: a cgroup v2 group per job, ``memory.max`` its grant."""

RLIMIT = 'rlimit'
"""``MemoryLimits.method``: the soft ``RLIMIT_AS`` of the job's worker process."""

PROC_MOUNTS = '/proc/self/mounts'
"""Where the cgroup2 file system's mount point is found."""

PROC_CGROUP = '/proc/self/cgroup'
"""Where the node's own cgroup (v2: the ``0::/path`` line) is found."""

PROC_STATUS = '/proc/self/status'
"""Where a process's address-space size (``VmSize``) is read."""

IDLE_GROUP = 'idle'
"""The leaf group, in the node group, where worker processes wait between jobs."""

JOB_GROUP = 'job-%d'
"""A job's group in the node group, by job id."""

DAEMON_GROUP_SUFFIX = '-daemon'
"""The leaf group, beside the node group, that a node alone in its cgroup moves into."""

GROUP_REMOVE_WAIT = 1.0
"""Seconds to keep trying to remove a job's group that is busy (its process killed for
exceeding its memory is still being reaped) before leaving it for ``close``."""

GROUP_REMOVE_STEP = 0.02
"""Seconds between those tries."""

_GPU_LINE = re.compile(r'^GPU (\d+):')
_OCTAL_ESCAPE = re.compile(r'\\([0-7]{3})')


def find_gpus(command: str = 'nvidia-smi', timeout: float = NVIDIA_SMI_TIMEOUT) -> list[str]:
    """The node's NVIDIA GPUs as ``nvidia-smi`` numbers them: ``['0', '1']``; [] if there is no
    ``nvidia-smi`` on PATH, or it fails or hangs (logged).

    These are ``nvidia-smi`` indices, which follow the PCI bus: a job given ``['1']`` should
    run with ``CUDA_VISIBLE_DEVICES=1`` and ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (CUDA's own
    default order, fastest first, may differ)."""
    path = shutil.which(command)
    if path is None:
        logger.debug('no %s found: no GPUs', command)
        return []
    try:
        process = subprocess.Popen([path, '-L'], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
    except OSError as exc:
        logger.warning('%s -L could not run (%s): no GPUs', path, exc)
        return []
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:  # its own session: whatever it started goes too, and the pipes close
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate()
        logger.warning('%s -L did not answer in %g seconds: no GPUs', path, timeout)
        return []
    if process.returncode != 0:
        lines = err.decode(errors='replace').strip().splitlines()
        logger.warning('%s -L failed (status %d%s): no GPUs', path, process.returncode,
                       ': ' + lines[0] if lines else '')
        return []
    gpus = []
    for line in out.decode(errors='replace').splitlines():
        match = _GPU_LINE.match(line)  # MIG devices are indented under their GPU: not these
        if match:
            gpus.append(match.group(1))
    logger.debug('%s -L lists GPUs %s', path, gpus)
    return gpus


def node_memory() -> int:
    """Bytes of physical memory of the machine."""
    import psutil  # here: the worker processes import this module, and need none of psutil

    return int(psutil.virtual_memory().total)


def usable_cpus() -> list[int]:
    """The OS CPUs this process may run on (its affinity; all CPUs where there is none)."""
    if hasattr(os, 'sched_getaffinity'):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Grant:
    """What one job holds of its node while it runs."""

    slots: tuple[int, ...]
    """The node's CPU slots (0 .. cpus-1) it holds."""

    cpu_ids: tuple[int, ...]
    """The OS CPUs of those slots, to pin its worker process to (repeated where the node
    declares more CPUs than the machine has)."""

    gpu_ids: tuple[str, ...]
    """Its GPUs, by ``nvidia-smi`` index."""

    memory: int
    """Bytes of memory it may use; 0: no limit (it asked for none)."""

    named: tuple[tuple[str, int], ...]
    """Its named resources: ``(('licence', 1),)``."""

    def as_dict(self) -> dict[str, Any]:
        """What the job sees: ``{'cpus': 4, 'cpu_ids': [0, 1, 0, 1], 'memory': 8589934592,
        'gpus': ['0'], 'licence': 1}`` (no memory or gpus when it holds none)."""
        seen: dict[str, Any] = {CPUS: len(self.slots), 'cpu_ids': list(self.cpu_ids)}
        if self.memory:
            seen[MEMORY] = self.memory
        if self.gpu_ids:
            seen[GPUS] = list(self.gpu_ids)
        seen.update(self.named)
        return seen


class Grants:
    """The node's ledger of what it has and what its running jobs hold: CPU slots, bytes of
    memory, GPUs and named resources. Used from one thread (the daemon's greenlets)."""

    def __init__(self, cpus: int, memory: int, gpu_ids: Sequence[str],
                 named: Mapping[str, int], os_cpus: Optional[Sequence[int]] = None) -> None:
        if cpus < 1:
            raise ValueError('a node has at least 1 CPU, not %d' % cpus)
        self.cpus = cpus
        self.memory = memory
        self.gpu_ids = tuple(gpu_ids)
        self.named = {name: amount for name, amount in named.items()}
        self.os_cpus = tuple(usable_cpus() if os_cpus is None else os_cpus)
        if not self.os_cpus:
            raise ValueError('no OS CPUs to run jobs on')
        self._free_slots = set(range(cpus))
        self._free_gpus = set(range(len(self.gpu_ids)))  # positions in ``gpu_ids``
        self._memory_used = 0
        self._named_used = {name: 0 for name in self.named}

    def __repr__(self) -> str:
        return '<Grants free %s>' % (self.free(),)

    def cpu_id(self, slot: int) -> int:
        """The OS CPU of the node's CPU slot ``slot``: slots beyond the machine's CPUs share
        them in turn (a node told ``--cpus 4`` on 2 cores: 0, 1, 0, 1)."""
        return self.os_cpus[slot % len(self.os_cpus)]

    def take(self, need: Need) -> Optional[Grant]:
        """A grant of ``need`` from what is free now (the lowest free slots and GPUs); None
        unless all of it is free. A light need (``Need.light``) takes one slot and nothing
        else."""
        cpus, memory, gpus, named = need.cpus, need.memory, need.gpus, need.named
        if (cpus > len(self._free_slots) or gpus > len(self._free_gpus)
                or self._memory_used + memory > self.memory
                or any(self._named_used.get(name, 0) + amount > self.named.get(name, 0)
                       for name, amount in named)):
            return None
        slots = tuple(sorted(self._free_slots)[:cpus])
        gpu_positions = sorted(self._free_gpus)[:gpus]
        self._free_slots.difference_update(slots)
        self._free_gpus.difference_update(gpu_positions)
        self._memory_used += memory
        for name, amount in named:
            self._named_used[name] += amount
        return Grant(slots=slots, cpu_ids=tuple(self.cpu_id(slot) for slot in slots),
                     gpu_ids=tuple(self.gpu_ids[position] for position in gpu_positions),
                     memory=memory, named=tuple(named))

    def give_back(self, grant: Grant) -> None:
        """What ``grant`` held is free again. Giving a grant back twice is a bug: it fails
        (AssertionError) before anything is counted."""
        gpu_positions = [self.gpu_ids.index(gpu) for gpu in grant.gpu_ids]
        assert not self._free_slots.intersection(grant.slots), (grant, 'slots not held')
        assert all(0 <= slot < self.cpus for slot in grant.slots), (grant, 'not our slots')
        assert not self._free_gpus.intersection(gpu_positions), (grant, 'GPUs not held')
        assert self._memory_used >= grant.memory, (grant, 'memory not held')
        assert all(self._named_used.get(name, 0) >= amount for name, amount in grant.named), (
            grant, 'named resources not held')
        self._free_slots.update(grant.slots)
        self._free_gpus.update(gpu_positions)
        self._memory_used -= grant.memory
        for name, amount in grant.named:
            self._named_used[name] -= amount

    def free(self) -> dict[str, int]:
        """What is free now, by name: ``{'cpus': 2, 'memory': ..., 'gpus': 1, 'licence': 1}``."""
        free = {CPUS: len(self._free_slots), MEMORY: self.memory - self._memory_used,
                GPUS: len(self._free_gpus)}
        free.update((name, amount - self._named_used[name])
                    for name, amount in self.named.items())
        return free

    def in_use(self) -> dict[str, int]:
        """What running jobs hold now, by name (as ``free``)."""
        held = {CPUS: self.cpus - len(self._free_slots), MEMORY: self._memory_used,
                GPUS: len(self.gpu_ids) - len(self._free_gpus)}
        held.update(self._named_used)
        return held

    def covers(self, need: Need) -> bool:
        """Whether a job of ``need`` could run here once the node is idle."""
        return (need.cpus <= self.cpus and need.memory <= self.memory
                and need.gpus <= len(self.gpu_ids)
                and all(amount <= self.named.get(name, 0) for name, amount in need.named))


class MemoryLimits:
    """How the node holds each job to its memory grant: ``method`` ``CGROUP`` (a cgroup v2
    group per job, under the node's own ``group``) or ``RLIMIT`` (the worker process limits
    itself, ``limit_address_space``; ``reason`` says why not cgroup). Make one with
    ``detect``."""

    def __init__(self, method: str, reason: str = '', group: Optional[str] = None) -> None:
        assert method in (CGROUP, RLIMIT) and (group is not None) == (method == CGROUP)
        self.method = method
        self.reason = reason
        self.group = group

    def __repr__(self) -> str:
        return '<MemoryLimits %s>' % (self.group if self.method == CGROUP else self.reason)

    @classmethod
    def detect(cls, name: str, mounts: str = PROC_MOUNTS,
               own_cgroup: str = PROC_CGROUP) -> MemoryLimits:
        """cgroup v2 groups for the node's jobs, ``<the node's cgroup>/<name>``, where the node
        can make them; the ``RLIMIT`` method otherwise, with the reason."""
        made: list[str] = []
        try:
            group = _make_node_group(name, mounts, own_cgroup, made)
        except _NoCgroup as exc:
            for path in reversed(made):
                _remove_group(path, wait=0)
            logger.debug('no cgroup v2 for job memory limits: %s', exc)
            return cls(RLIMIT, str(exc))
        return cls(CGROUP, group=group)

    def describe(self) -> str:
        """One line for the node's log."""
        if self.method == CGROUP:
            return 'job memory limits: cgroup v2 (%s)' % (self.group,)
        return ("job memory limits: RLIMIT_AS of each job's worker process (no cgroup v2: %s)"
                % (self.reason,))

    def enter(self, pid: int, jid: int, limit: int) -> None:
        """Before job ``jid`` runs on worker process ``pid``: hold it to ``limit`` bytes (0:
        none). With cgroup v2, the process moves into the job's group; raises OSError if it
        cannot (the caller decides whether the job runs unlimited or fails). Nothing to do
        with ``RLIMIT``: the worker process limits itself."""
        if self.group is None:
            return
        path = os.path.join(self.group, JOB_GROUP % jid)
        os.makedirs(path, exist_ok=True)
        try:
            _write(os.path.join(path, 'memory.max'), str(limit) if limit > 0 else 'max')
            swap = os.path.join(path, 'memory.swap.max')
            if os.path.exists(swap):  # absent where the kernel accounts no swap
                _write(swap, '0')
            _write(os.path.join(path, 'cgroup.procs'), str(pid))
        except OSError:
            _remove_group(path, wait=0)
            raise

    def leave(self, pid: int, jid: int) -> bool:
        """After job ``jid`` ended on worker process ``pid``: whether the kernel killed a
        process of the job for exceeding its memory. The process, if alive, goes back to the
        idle group, and the job's group is removed. Never raises (failures are logged)."""
        if self.group is None:
            return False
        path = os.path.join(self.group, JOB_GROUP % jid)
        killed = _oom_count(os.path.join(path, 'memory.events')) > 0
        try:
            _write(os.path.join(self.group, IDLE_GROUP, 'cgroup.procs'), str(pid))
        except ProcessLookupError:  # it died (killed for its memory, say): nothing to move
            pass
        except OSError as exc:
            logger.warning('worker process %d not moved out of %s: %s', pid, path, exc)
        _remove_group(path, GROUP_REMOVE_WAIT)
        return killed

    def close(self) -> None:
        """Remove the groups the node made (best effort: any still holding processes stay)."""
        if self.group is None:
            return
        try:
            children = [entry.path for entry in os.scandir(self.group) if entry.is_dir()]
        except OSError:
            children = []
        for path in children:
            _remove_group(path, GROUP_REMOVE_WAIT)
        _remove_group(self.group, GROUP_REMOVE_WAIT)


class _NoCgroup(Exception):
    """Why the node cannot make cgroup v2 groups for its jobs."""


def _make_node_group(name: str, mounts: str, own_cgroup: str, made: list[str]) -> str:
    """Make the node's group, with the memory controller for its children, and its idle
    group; the groups it made are added to ``made``. Raises ``_NoCgroup`` with the reason."""
    mount = _cgroup2_mount(mounts)
    own = _own_cgroup(own_cgroup)
    parent = os.path.normpath(os.path.join(mount, own.lstrip('/')))
    try:
        with open(os.path.join(parent, 'cgroup.controllers')) as handle:
            controllers = handle.read().split()
    except OSError as exc:
        raise _NoCgroup("the node's cgroup %s cannot be read (%s)" % (parent, exc)) from None
    if 'memory' not in controllers:
        raise _NoCgroup('no memory controller in %s (its cgroup.controllers lists: %s)'
                        % (parent, ' '.join(controllers) or 'none'))
    _leave_for_a_leaf(parent, name, made)
    _enable_memory(parent)
    group = os.path.join(parent, name)
    for path in (group, os.path.join(group, IDLE_GROUP)):
        try:
            os.mkdir(path)
            made.append(path)
        except FileExistsError:  # left by a node of this name that did not close
            pass
        except OSError as exc:
            raise _NoCgroup('cannot make the cgroup %s (%s)' % (path, exc)) from None
        if path == group:
            _enable_memory(group)
    return group


def _leave_for_a_leaf(parent: str, name: str, made: list[str]) -> None:
    """cgroup v2 gives controllers to a group's children only while the group itself holds
    no process: a node alone in its group (a systemd unit with ``Delegate=yes``) moves into a
    leaf of it, ``<name>-daemon``, so that its jobs' groups can be made beside it. A group it
    shares with other processes (a login shell's) is left alone: ``_NoCgroup``."""
    try:
        with open(os.path.join(parent, 'cgroup.procs')) as handle:
            pids = {int(pid) for pid in handle.read().split()}
    except (OSError, ValueError) as exc:
        raise _NoCgroup('cannot read the processes of %s (%s)' % (parent, exc)) from None
    if not pids:
        return
    if pids != {os.getpid()}:
        raise _NoCgroup('the node shares its cgroup %s with %d other processes; run it in a '
                        'cgroup of its own (systemd: Delegate=yes)' % (parent, len(pids) - 1))
    leaf = os.path.join(parent, name + DAEMON_GROUP_SUFFIX)
    try:
        os.makedirs(leaf, exist_ok=True)
        made.append(leaf)
        _write(os.path.join(leaf, 'cgroup.procs'), str(os.getpid()))
    except OSError as exc:
        raise _NoCgroup('cannot move the node into the cgroup %s (%s)' % (leaf, exc)) from None


def _enable_memory(path: str) -> None:
    """The memory controller for the children of group ``path``; ``_NoCgroup`` if not."""
    try:
        _write(os.path.join(path, 'cgroup.subtree_control'), '+memory')
    except OSError as exc:
        hint = ''
        if exc.errno == errno.EBUSY:  # cgroup v2 gives controllers to groups or to processes
            hint = ('; the group holds processes (the node itself, say): run the node in a '
                    'cgroup of its own, with none in its parent')
        raise _NoCgroup('cannot enable the memory controller below %s (%s%s)'
                        % (path, exc, hint)) from None


def _lines_of(path: str) -> list[str]:
    try:
        with open(path) as handle:
            return handle.read().splitlines()
    except OSError as exc:
        raise _NoCgroup('cannot read %s (%s)' % (path, exc)) from None


def _cgroup2_mount(mounts: str) -> str:
    for line in _lines_of(mounts):
        fields = line.split()
        if len(fields) >= 3 and fields[2] == 'cgroup2':
            return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), fields[1])
    raise _NoCgroup('no cgroup2 file system is mounted')


def _own_cgroup(own_cgroup: str) -> str:
    for line in _lines_of(own_cgroup):
        if line.startswith('0::'):
            return line[3:]
    raise _NoCgroup('%s names no cgroup v2 group for the node' % (own_cgroup,))


def _oom_count(events: str) -> int:
    """How many times ``memory.events`` (``events``) says the group ran out of memory."""
    try:
        with open(events) as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        logger.warning('cannot read %s: %s', events, exc)
        return 0
    count = 0
    for line in lines:
        key, _, value = line.partition(' ')
        if key in ('oom', 'oom_kill') and value.strip().isdigit():
            count = max(count, int(value))
    return count


def _write(path: str, text: str) -> None:
    """One write, as ``echo text > path`` does: a cgroup file answers each write at once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _remove_group(path: str, wait: float) -> bool:
    """Remove the (empty) group ``path``, trying for up to ``wait`` seconds while it is busy;
    whether it is gone. Never raises."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                logger.warning('cgroup %s not removed: %s', path, exc)
                return False
        time.sleep(GROUP_REMOVE_STEP)


def limit_address_space(extra: int) -> Callable[[], None]:
    """In a worker process, before a job with a memory grant of ``extra`` bytes: let the process
    map at most ``extra`` bytes more than it does now (the soft ``RLIMIT_AS``); returns the
    function that lifts the limit again, for after the job.

    Current + extra, not extra: a worker process that imported numpy already maps hundreds of
    MB, so a job's "8G" means 8 GiB more. Only the soft limit is set, so it can be raised again
    without privileges; never above the hard limit, nor above a lower soft limit already set
    (the node's own ``ulimit -v`` still holds). A no-op where the size cannot be read."""
    if extra <= 0:
        return _nothing
    try:
        current = _address_space()
    except (OSError, ValueError) as exc:
        logger.warning('job memory not limited: address-space size unknown (%s)', exc)
        return _nothing
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

    def restore() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    return restore


def _nothing() -> None:
    pass


def _address_space() -> int:
    """Bytes this process maps now (``VmSize``)."""
    with open(PROC_STATUS) as handle:
        for line in handle:
            if line.startswith('VmSize:'):
                number, unit = line.split()[1:3]
                assert unit == 'kB', line
                return int(number) * 1024
    raise ValueError('no VmSize in %s' % (PROC_STATUS,))


def pin(pid: int, cpu_ids: Sequence[int]) -> None:
    """Run process ``pid`` on the OS CPUs ``cpu_ids`` only (its grant's); nothing if it is gone.
    Pinning spares a job the cache misses of moving between CPUs, and keeps jobs that start
    more threads than they asked CPUs for off their neighbours' CPUs; a failure is logged,
    never raised (the job runs unpinned)."""
    if not hasattr(os, 'sched_setaffinity'):
        return
    try:
        os.sched_setaffinity(pid, set(cpu_ids))
    except ProcessLookupError:
        pass
    except OSError as exc:  # a CPU gone offline, or outside the node's cpuset
        logger.warning('process %d not pinned to CPUs %s: %s', pid, sorted(set(cpu_ids)), exc)


def unpin(pid: int, os_cpus: Sequence[int]) -> None:
    """Let process ``pid`` run on all of ``os_cpus`` again (``Grants.os_cpus``), after its job."""
    pin(pid, os_cpus)
