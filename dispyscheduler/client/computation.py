"""Packing a computation and job arguments for the nodes.

Everything is pickled with cloudpickle, which carries functions defined in the user's
``__main__`` (and lambdas and closures) by value. A computation from one of the user's own
modules is carried by value too, since that module need not exist on the nodes; functions of
installed packages travel by reference and must be importable on the nodes.
"""

import os
import sys
import sysconfig

import cloudpickle

INSTALLED_PATHS = tuple(os.path.realpath(path) for path in {
    sysconfig.get_paths()['stdlib'], sysconfig.get_paths()['purelib'],
    sysconfig.get_paths()['platlib'], sys.prefix, sys.base_prefix})


def is_users_module(module):
    """A module of the user's program rather than of Python or an installed package."""
    path = getattr(module, '__file__', None)
    if not path or module.__name__ == '__main__':
        return False
    return not os.path.realpath(path).startswith(INSTALLED_PATHS)


def pack_computation(computation, setup=None, cleanup=True, setup_args=()):
    """The opaque blob the node's worker host loads: the function and its setup/cleanup."""
    if not callable(computation):
        raise TypeError('computation must be a Python function; got %r' % (computation,))
    for function in (computation, setup, cleanup):
        module = sys.modules.get(getattr(function, '__module__', None) or '')
        if module is not None and is_users_module(module):
            cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps({
        'compute': computation,
        'setup': setup,
        'setup_args': tuple(setup_args),
        'cleanup': cleanup if callable(cleanup) else None,
    })


def pack_arguments(args, kwargs):
    try:
        return cloudpickle.dumps((args, kwargs))
    except Exception as exc:
        raise TypeError('job arguments cannot be pickled: %s' % (exc,)) from exc


def unpack_result(data):
    return cloudpickle.loads(data)
