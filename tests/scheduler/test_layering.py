"""The scheduler's model and policy are pure: no links, sockets or greenlets, so they can be
read and tested alone."""

import ast
import os

import dispyscheduler.scheduler

PURE = ('model.py', 'queues.py', 'policy.py', 'outbox.py')
FORBIDDEN = ('socket', 'gevent', 'dispyscheduler.wire.link', 'dispyscheduler.runtime',
             'select', 'threading', 'ssl', 'OpenSSL')


def imports(path):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ''
            if node.level:  # relative: from the package dispyscheduler.scheduler
                base = ['dispyscheduler', 'scheduler'][:3 - node.level]
                module = '.'.join(base + ([module] if module else []))
            found.add(module)
    return found


def test_model_and_policy_import_no_io():
    directory = os.path.dirname(dispyscheduler.scheduler.__file__)
    for name in PURE:
        for module in imports(os.path.join(directory, name)):
            assert not any(module == bad or module.startswith(bad + '.') for bad in FORBIDDEN), (
                name, module)
