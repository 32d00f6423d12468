"""Packing a computation, its ``depends`` and job arguments for the nodes.

Everything is pickled with cloudpickle, which carries functions defined in the user's
``__main__`` (and lambdas and closures) by value. A computation from one of the user's own
modules is carried by value too, since that module need not exist on the nodes, unless the
module itself is in ``depends`` (then its source is shipped and imported there). Functions of
installed packages travel by reference and must be importable on the nodes.

``depends`` may hold file paths (shipped once per node, found in the job's working
directory), modules (their source shipped and importable on the node), and functions, classes
and instances (made globals of the computation under their names; an instance brings its
class).
"""

from __future__ import annotations

import inspect
import os
import sys
import sysconfig
import types
from typing import Any, Callable, Iterable

import cloudpickle

from ..constants import SPOOL_LIMIT
from ..wire import serialize
from ..wire.files import Spool

FileEntry = tuple[str, str, int]
"""A file to send: ``(name, path, mode)``."""

INSTALLED_PATHS = tuple(os.path.realpath(path) for path in {
    sysconfig.get_paths()['stdlib'], sysconfig.get_paths()['purelib'],
    sysconfig.get_paths()['platlib'], sys.prefix, sys.base_prefix})


def is_users_module(module: types.ModuleType) -> bool:
    """A module of the user's program rather than of Python or an installed package."""
    path = getattr(module, '__file__', None)
    if not path or module.__name__ == '__main__' or module.__name__.partition('.')[0] == \
            'dispyscheduler':  # installed on every node, even when run from a checkout
        return False
    return not os.path.realpath(path).startswith(INSTALLED_PATHS)


class Packed:
    """A computation ready to send: the blob the node loads and the files that go with it
    (``(name, path, mode)`` each)."""

    def __init__(self, code: bytes, files: list[FileEntry]) -> None:
        self.code = code
        self.files = files


def module_files(module: types.ModuleType) -> list[tuple[str, str]]:
    """``(name, path)`` of the source files that make ``module`` importable elsewhere."""
    if hasattr(module, '__path__'):  # a package: every file of its directory tree
        root = os.path.realpath(list(module.__path__)[0])
        top = os.path.dirname(root)
        found = []
        for directory, subdirectories, names in os.walk(root):
            subdirectories[:] = [name for name in subdirectories if name != '__pycache__']
            for name in names:
                if not name.endswith(('.pyc', '.pyo')):
                    path = os.path.join(directory, name)
                    found.append((os.path.relpath(path, top).replace(os.sep, '/'), path))
        return found
    try:
        source = inspect.getsourcefile(module) or module.__file__
    except TypeError:
        source = None
    if not source:
        raise TypeError('module %s has no source file to send to the nodes'
                        % (module.__name__,))
    return [(os.path.basename(source), source)]


def file_entry(path: str) -> FileEntry:
    """``(name, path, mode)`` for a file named in ``depends``."""
    if not os.path.isfile(path):
        raise ValueError('depends: %r is not a file' % (path,))
    return os.path.basename(path), os.path.abspath(path), os.stat(path).st_mode & 0o777


def collect_depends(depends: Iterable[Any] | None) -> tuple[list[FileEntry], dict[str, Any],
                                                             list[types.ModuleType]]:
    """Split ``depends`` into files to ship and objects to make globals."""
    files: list[FileEntry] = []
    namespace: dict[str, Any] = {}
    modules: list[types.ModuleType] = []
    for item in depends or ():
        if isinstance(item, str):
            files.append(file_entry(item))
        elif isinstance(item, types.ModuleType):
            modules.append(item)
            files.extend((name, path, 0o600) for name, path in module_files(item))
        elif inspect.isfunction(item) or inspect.isclass(item) or inspect.isbuiltin(item):
            namespace[item.__name__] = item
        elif inspect.ismethod(item):
            namespace[item.__func__.__name__] = item
        else:  # an instance: its class goes along, as with dispy
            namespace[type(item).__name__] = type(item)
    return files, namespace, modules


def check_unique(files: Iterable[FileEntry]) -> None:
    seen = set()
    for name, _, _ in files:
        if name in seen:
            raise ValueError('two files to send are both named %r' % (name,))
        seen.add(name)


def pack_computation(computation: Callable[..., Any] | str, depends: Iterable[Any] = (),
                     setup: Callable[..., Any] | None = None,
                     cleanup: bool | Callable[..., Any] = True,
                     setup_args: Iterable[Any] = ()) -> Packed:
    """The blob the node's worker host loads, and the files to ship with it."""
    files, namespace, shipped_modules = collect_depends(depends)
    program = None
    compute = None  # the function, when the computation is one
    if isinstance(computation, str):
        program, path, mode = file_entry(computation)
        files.insert(0, (program, path, mode | 0o700))
    elif not callable(computation):
        raise TypeError('computation must be a function or a program path; got %r'
                        % (computation,))
    else:
        compute = computation
    for function in (compute, setup, cleanup):
        carry_by_value(function, shipped_modules)
    check_unique(files)
    code = cloudpickle.dumps({
        'compute': compute,
        'program': program,
        'setup': setup,
        'setup_args': tuple(setup_args),
        'cleanup': cleanup if callable(cleanup) else None,
        'depends': namespace,
    })
    return Packed(code, files)


def carry_by_value(function: Any, shipped_modules: Iterable[types.ModuleType] = ()) -> None:
    """A function of one of the user's own modules travels by value (that module need not
    exist on the nodes), unless the module itself is shipped."""
    module = sys.modules.get(getattr(function, '__module__', None) or '')
    if module is not None and is_users_module(module) and module not in shipped_modules:
        cloudpickle.register_pickle_by_value(module)


def pack_value(value: Any, what: str) -> bytes:
    try:
        return serialize.dumps(value)
    except Exception as exc:
        raise TypeError('%s cannot be pickled: %s' % (what, exc)) from exc


def spool_value(value: Any, what: str, limit: int = SPOOL_LIMIT) -> Spool:
    """``pack_value`` into a ``Spool`` (memory up to ``limit`` bytes, else a temporary
    file)."""
    spool = Spool(limit)
    try:
        serialize.dump(value, spool)
    except Exception as exc:
        spool.close()
        raise TypeError('%s cannot be pickled: %s' % (what, exc)) from exc
    return spool


def unpack_result(data: bytes | bytearray) -> Any:
    return serialize.loads(data)
