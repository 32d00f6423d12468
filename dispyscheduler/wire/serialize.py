"""Pickling user data (arguments, results): plain pickle where it is enough, cloudpickle where
it is needed.

cloudpickle carries functions, lambdas and classes of ``__main__`` by value, but its pickler
is written in Python and costs ten times as much as the stdlib's. Most arguments and results
are plain data (numbers, strings, bytes, and containers of them), which the stdlib pickles
the same way; only those take the fast path, so anything that needs cloudpickle still gets
it. Unpickling is the stdlib's either way.
"""

import os
import pickle
import re
from typing import Any

import cloudpickle

PLAIN = frozenset((int, float, complex, str, bytes, bool, type(None)))
CONTAINERS = frozenset((tuple, list, set, frozenset))


def is_plain(value: Any, depth: int = 0) -> bool:
    """Data the stdlib pickles exactly as cloudpickle would: no code, no classes."""
    kind = type(value)
    if kind in PLAIN:
        return True
    if depth > 4:
        return False
    if kind in CONTAINERS:
        return all(is_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(key) in PLAIN and is_plain(item, depth + 1)
                   for key, item in value.items())
    return False


def dumps(value: Any) -> bytes:
    if is_plain(value):
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(value)


def obviously_large(value: Any, limit: int) -> bool:
    """A value whose pickle is surely larger than ``limit`` bytes, seen without pickling it
    (bytes, strings, arrays): worth pickling straight into a file, never whole in memory."""
    kind = type(value)
    if kind is bytes or kind is str or kind is bytearray:
        return len(value) > limit
    if kind in PLAIN:
        return False
    size = getattr(value, 'nbytes', None)  # numpy's arrays, memoryview
    return type(size) is int and size > limit


def dump(value: Any, file: Any) -> None:
    """``dumps`` into ``file`` (anything with ``write``), a frame at a time: a large value
    is never pickled whole in memory."""
    if is_plain(value):
        pickle.Pickler(file, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    else:
        cloudpickle.dump(value, file)


loads = pickle.loads


RESULT_FILE = '_dispyscheduler_result_%d.pickle'
"""A job's result too large to travel inline (``INLINE_RESULT_LIMIT``), as the worker process
writes it in the computation's directory (``%d``: the job's jid) and as its ``PayloadPart``
stream is named."""

PROVISIONAL_FILE = '_dispyscheduler_provisional_%d_%d.pickle'
"""The same for a provisional result (the job's jid, and how many it sent before)."""

PAYLOAD_NAME = re.compile(r'_dispyscheduler_(result_[0-9]+|provisional_[0-9]+_[0-9]+)\.pickle')
"""What a payload's name must look like, wherever it arrives."""


def load_file(path: str) -> Any:
    """Unpickle a payload from its file, a buffer at a time (never a second copy of it)."""
    with open(path, 'rb') as handle:
        return pickle.load(handle)


VALUE_FILE = '_dispyscheduler_value_%s.pickle'
"""A stored value's file in the computation's directory on a node (``%s``: its reference)."""


class StoredValue:
    """Stands for a large argument in a job's pickled arguments: the value itself travels
    once, on its own, in chunks (``SharedJobCluster._store``), and reaches each node once,
    however many jobs it is given to; the worker process puts it in its place
    (``put_stored_values``)."""

    __slots__ = ('ref',)

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple:
        return StoredValue, (self.ref,)


def put_stored_values(args: list | tuple, kwargs: dict[str, Any],
                      directory: str) -> tuple[list | tuple, dict[str, Any]]:
    """A job's arguments with each ``StoredValue`` read from its file in ``directory`` (a
    fresh copy for each job: a job may change what it was given)."""
    if any(type(arg) is StoredValue for arg in args):
        args = [load_value(directory, arg.ref) if type(arg) is StoredValue else arg
                for arg in args]
    if any(type(arg) is StoredValue for arg in kwargs.values()):
        kwargs = {name: load_value(directory, arg.ref) if type(arg) is StoredValue else arg
                  for name, arg in kwargs.items()}
    return args, kwargs


def load_value(directory: str, ref: str) -> Any:
    try:
        handle = open(os.path.join(directory, VALUE_FILE % ref), 'rb')
    except FileNotFoundError:
        raise RuntimeError('an argument of this job (value %s) did not reach this node: the '
                           "node's log says why (a full disk?)" % (ref,)) from None
    with handle:
        return pickle.load(handle)
