"""Large arguments stand in a job's pickled arguments as ``StoredValue``s, put back in place
from their files in the computation's directory, a fresh copy for each job."""

import pickle

import pytest

from dispyscheduler.wire.serialize import (VALUE_FILE, StoredValue, dumps, loads,
                                           put_stored_values)


def test_stored_values_are_put_back_in_place(tmp_path):
    (tmp_path / (VALUE_FILE % 'ab')).write_bytes(pickle.dumps([1, 2, 3]))
    args, kwargs = loads(dumps(((StoredValue('ab'), 'x'), {'data': StoredValue('ab'), 'n': 1})))
    args, kwargs = put_stored_values(args, kwargs, str(tmp_path))
    assert list(args) == [[1, 2, 3], 'x'] and kwargs == {'data': [1, 2, 3], 'n': 1}
    assert args[0] is not kwargs['data']  # each place its own copy: a job may change it
    plain = ((1, 2), {'a': 3})
    assert put_stored_values(*plain, str(tmp_path)) == plain  # nothing to do: as they were


def test_a_value_missing_on_the_node_is_named():
    with pytest.raises(RuntimeError, match=r'\(value cd\) did not reach this node'):
        put_stored_values((StoredValue('cd'),), {}, '/nonexistent')
