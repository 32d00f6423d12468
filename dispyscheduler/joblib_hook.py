"""joblib's ``'dispyscheduler'`` backend, registered once joblib is imported, whichever of the
two packages a program imports first, and without importing joblib (an optional package,
slow to import) into programs or daemons that do not use it.

If joblib is loaded already, the backend is registered at once; otherwise a finder on
``sys.meta_path`` waits for ``import joblib``, lets it run, registers the backend after it and
leaves ``sys.meta_path``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import types
from typing import Any, Optional, Sequence

logger = logging.getLogger(__name__)


def register_backend() -> None:
    try:
        from .client.joblib_backend import register
        register()
    except Exception:  # never let it break the program's own ``import joblib``
        logger.exception("joblib's 'dispyscheduler' backend could not be registered")


class JoblibWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps joblib's loader, so as to register the backend once
    joblib has loaded."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[types.ModuleType] = None) -> Any:
        if fullname != 'joblib':
            return None
        unwatch()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class RegisteringLoader(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: types.ModuleType) -> None:
                loader.exec_module(module)
                register_backend()

            def __getattr__(self, name: str) -> Any:  # resources and the like: joblib's own
                return getattr(loader, name)

        spec.loader = RegisteringLoader()
        return spec


WATCHER = JoblibWatcher()


def watch() -> None:
    if 'joblib' in sys.modules:
        register_backend()
    elif WATCHER not in sys.meta_path:
        sys.meta_path.insert(0, WATCHER)


def unwatch() -> None:
    if WATCHER in sys.meta_path:
        sys.meta_path.remove(WATCHER)
