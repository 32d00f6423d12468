"""Name lookups are bounded: in time for each name (a slow name service holds up no one for
long), and in number for a cluster's ``nodes`` (issue 17, 7)."""

import socket

import gevent
import pytest

from dispyscheduler.constants import MAX_NODE_NAMES
from dispyscheduler.runtime import discovery
from dispyscheduler.scheduler import clusters
from dispyscheduler.wire.protocol import ProtocolError


def test_a_name_that_takes_too_long_to_resolve_counts_as_unresolvable(monkeypatch, caplog):
    monkeypatch.setattr(socket, 'getaddrinfo', lambda *args: gevent.sleep(60))
    assert discovery.resolve('slow.example', timeout=0.1) == []
    assert 'cannot resolve slow.example: no answer in 0.1 seconds' in caplog.text


def test_a_name_that_is_no_name_counts_as_unresolvable(caplog):
    assert discovery.resolve('.') == []  # idna refuses an empty label: UnicodeError
    assert 'cannot resolve .' in caplog.text


def test_a_cluster_naming_too_many_hosts_is_refused_before_any_lookup(monkeypatch):
    looked_up = []
    monkeypatch.setattr(clusters, 'resolve', lambda name: looked_up.append(name) or [])
    names = [('host-%d' % n, 0) for n in range(MAX_NODE_NAMES + 1)]
    with pytest.raises(ProtocolError, match='at most %d host names' % MAX_NODE_NAMES):
        clusters.resolve_patterns(names)
    assert looked_up == []
    patterns = [('10.0.0.*', 0), ('10.0.1.5', 51348)] + names[:MAX_NODE_NAMES] * 2
    assert clusters.resolve_patterns(patterns)[:2] == patterns[:2]
    assert sorted(looked_up) == sorted(name for name, _ in names[:MAX_NODE_NAMES])  # once each
