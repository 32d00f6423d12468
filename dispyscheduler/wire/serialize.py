"""Pickling user data (arguments, results): plain pickle where it is enough, cloudpickle where
it is needed.

cloudpickle carries functions, lambdas and classes of ``__main__`` by value, but its pickler
is written in Python and costs ten times as much as the stdlib's. Most arguments and results
are plain data (numbers, strings, bytes, and containers of them), which the stdlib pickles
the same way; only those take the fast path, so anything that needs cloudpickle still gets
it. Unpickling is the stdlib's either way.
"""

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
