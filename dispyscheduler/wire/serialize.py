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


loads = pickle.loads


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
