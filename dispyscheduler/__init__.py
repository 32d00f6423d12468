"""dispyscheduler: a shared job scheduler for Python, in the family of dispy.

The public API is dispy's: ``SharedJobCluster``, ``DispyJob``, ``DispyNode``, ``NodeAllocate``.
Names are imported on first use, so importing the package (as the daemons do before
monkey-patching) loads no socket code.
"""

import logging

__version__ = '0.1.0'

logger = logging.getLogger('dispyscheduler')

_API = {
    'SharedJobCluster': 'dispyscheduler.client.cluster',
    'DispyJob': 'dispyscheduler.client.job',
    'DispyNode': 'dispyscheduler.client.job',
    'NodeAllocate': 'dispyscheduler.client.job',
    'ClusterStatus': 'dispyscheduler.client.job',
    'recover_jobs': 'dispyscheduler.client.cluster',
    'AuthenticationError': 'dispyscheduler.wire.auth',
}

__all__ = ['SharedJobCluster', 'DispyJob', 'DispyNode', 'NodeAllocate', 'ClusterStatus',
           'recover_jobs', 'AuthenticationError', 'logger']


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError('module %r has no attribute %r' % (__name__, name))
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
