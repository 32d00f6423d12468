"""dispyscheduler: a shared job scheduler for Python, in the family of dispy.

The public API is dispy's: ``SharedJobCluster``, ``JobCluster``, ``DispyJob``, ``DispyNode``,
``NodeAllocate``; and Python's habits: ``DispyExecutor`` (``concurrent.futures``), ``job.future``
and ``JobFailed``, ``await job`` and ``as_completed_async``.
Names are imported on first use, so importing the package (as the daemons do before
monkey-patching) loads no socket code.
"""

import logging
from typing import TYPE_CHECKING, Any

from . import config  # dispy's ``config`` module of settings, which programs read and set
from . import joblib_hook
from .config import MsgTimeout  # dispy's name; it has no effect here

if TYPE_CHECKING:  # what type checkers see of the names imported on first use
    from .client.cluster import SharedJobCluster, recover_jobs
    from .client.jobcluster import JobCluster
    from .client.job import ClusterStatus, DispyJob, DispyNode, DispyNodeAvailInfo, NodeAllocate
    from .wire.auth import AuthenticationError
    from .client.futures import JobFailed, as_completed_async
    from .client.executor import DispyExecutor

__version__ = '0.1.0'

logger = logging.getLogger('dispyscheduler')
# dispy's logger carries the level names: programs pass ``loglevel=dispy.logger.DEBUG``
logger.DEBUG, logger.INFO, logger.WARNING, logger.ERROR = (  # type: ignore[attr-defined]
    logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)


_API = {
    'SharedJobCluster': 'dispyscheduler.client.cluster',
    'JobCluster': 'dispyscheduler.client.jobcluster',
    'DispyJob': 'dispyscheduler.client.job',
    'DispyNode': 'dispyscheduler.client.job',
    'DispyNodeAvailInfo': 'dispyscheduler.client.job',
    'NodeAllocate': 'dispyscheduler.client.job',
    'ClusterStatus': 'dispyscheduler.client.job',
    'recover_jobs': 'dispyscheduler.client.cluster',
    'AuthenticationError': 'dispyscheduler.wire.auth',
    'JobFailed': 'dispyscheduler.client.futures',
    'as_completed_async': 'dispyscheduler.client.futures',
    'DispyExecutor': 'dispyscheduler.client.executor',
}

__all__ = ['SharedJobCluster', 'JobCluster', 'DispyJob', 'DispyNode', 'DispyNodeAvailInfo',
           'NodeAllocate', 'ClusterStatus', 'recover_jobs', 'AuthenticationError', 'logger',
           'MsgTimeout', 'config', 'DispyExecutor', 'JobFailed', 'as_completed_async']


joblib_hook.watch()  # ``joblib.parallel_backend('dispyscheduler', ...)`` once joblib is loaded


def __getattr__(name: str) -> Any:
    import importlib
    module = _API.get(name)
    if module is None:
        raise AttributeError('module %r has no attribute %r' % (__name__, name))
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
