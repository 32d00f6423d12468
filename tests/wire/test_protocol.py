"""Unit tests of the wire format: frames, decoding limits and message schemas."""

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispyscheduler.constants import MAX_FRAME_SIZE
from dispyscheduler.wire.messages import MESSAGES as SCHEMAS
from dispyscheduler.wire.messages import Hello, JobEnd, Message, Pulse, Submit, from_wire
from dispyscheduler.wire.protocol import (
    FrameDecoder,
    ProtocolError,
    decode_payload,
    encode_raw,
    pack_datagram,
    unpack_datagram,
)


def encode(kind, body):
    """A frame of any ``[kind, body]`` pair (as a peer could send it)."""
    return encode_raw(kind, body)


def pair(message):
    """A decoded message as the ``(kind, body)`` pair it travelled as."""
    return message.kind, message.body()


def validate(kind, body):
    """Raise ``ProtocolError`` unless ``[kind, body]`` is a message."""
    from_wire(kind, body)

MESSAGES = [
    ('hello', {'version': 1, 'role': 'node', 'nonce': b'\x00\xff' * 16}),
    ('job_done', {'jid': 7, 'status': 11, 'result': b'\x80\x04N.', 'exception': None,
                  'stdout': 'out\n', 'stderr': '', 'start_time': 1.5, 'end_time': 2,
                  'stored': ''}),
    ('closed', {}),
    ('result_ack', {'ids': [1, 2, 3]}),
    ('job_end', {'uid': 3, 'status': 8, 'result': None, 'exception': 'Traceback…',
                 'stdout': 'ünïcode', 'stderr': 'e', 'start_time': None, 'end_time': None,
                 'ip_addr': None, 'tag': None, 'stored': ''}),
]


def raw_frame(payload):
    """A frame around an arbitrary payload, bypassing ``encode``."""
    return struct.pack('>I', len(payload)) + payload


def frame_of(value):
    return raw_frame(msgpack.packb(value, use_bin_type=True))


def decode_all(data, **kwargs):
    return [pair(message) for message in FrameDecoder(**kwargs).messages_from(data)]


# round trips and framing

def test_encode_decode_round_trip():
    for kind, body in MESSAGES:
        assert decode_all(encode(kind, body)) == [(kind, body)]


def test_encode_prefixes_big_endian_payload_length():
    frame = encode('closed', {})
    (size,) = struct.unpack('>I', frame[:4])
    assert size == len(frame) - 4
    assert msgpack.unpackb(frame[4:], raw=False) == ['closed', {}]


def test_frames_fed_one_byte_at_a_time():
    """A frame split at every possible byte boundary decodes once, when its last byte lands."""
    stream = b''.join(encode(kind, body) for kind, body in MESSAGES)
    ends = set()
    position = 0
    for kind, body in MESSAGES:
        position += len(encode(kind, body))
        ends.add(position)
    decoder = FrameDecoder()
    got = []
    for index in range(len(stream)):
        decoder.feed(stream[index:index + 1])
        new = [pair(message) for message in decoder.messages()]
        if index + 1 in ends:
            assert len(new) == 1
        else:
            assert new == []
        got.extend(new)
    assert got == MESSAGES
    assert decoder.buffer == bytearray()


def test_many_frames_in_one_feed():
    messages = [('submit', {'uid': uid, 'args': bytes([uid % 256]) * (uid % 50), 'files': [],
                            'timeout': None, 'priority': 0, 'node': None, 'tag': None,
                            'refs': [], 'resources': []})
                for uid in range(1000)]
    stream = b''.join(encode(kind, body) for kind, body in messages)
    decoder = FrameDecoder()
    assert [pair(message) for message in decoder.messages_from(stream)] == messages
    assert decoder.buffer == bytearray()


def test_partial_trailing_frame_is_kept_for_the_next_feed():
    first, second = encode('pulse', {'busy': 1}), encode('pulse', {'busy': 2})
    decoder = FrameDecoder()
    assert list(decoder.messages_from(first + second[:5])) == [Pulse(busy=1)]
    assert list(decoder.messages_from(second[5:])) == [Pulse(busy=2)]


def test_default_frame_limit_is_the_constant():
    assert FrameDecoder().max_frame_size == MAX_FRAME_SIZE


# size limits

@pytest.mark.parametrize('size', [MAX_FRAME_SIZE + 1, 0x7FFFFFFF, 0xFFFFFFFF])
def test_oversized_length_refused_on_header_alone(size):
    """The header is enough to refuse: no body byte is fed, so nothing is waited for."""
    decoder = FrameDecoder()
    header = struct.pack('>I', size)
    for byte in header[:3]:
        decoder.feed(bytes([byte]))
        assert list(decoder.messages()) == []
    decoder.feed(header[3:])
    with pytest.raises(ProtocolError, match='exceeds'):
        list(decoder.messages())


def test_custom_limit_applies_and_boundary_is_inclusive():
    frame = encode('pulse', {'busy': 0})
    size = len(frame) - 4
    assert decode_all(frame, max_frame_size=size) == [('pulse', {'busy': 0})]
    with pytest.raises(ProtocolError):
        decode_all(frame, max_frame_size=size - 1)


def test_oversized_frame_after_valid_ones_yields_the_valid_ones_first():
    decoder = FrameDecoder()
    decoder.feed(encode('pulse', {'busy': 3}) + struct.pack('>I', 0xFFFFFFFF))
    iterator = decoder.messages()
    assert next(iterator) == Pulse(busy=3)
    with pytest.raises(ProtocolError):
        next(iterator)


# malformed payloads

@pytest.mark.parametrize('payload', [
    msgpack.packb(['pulse', {'busy': 1}])[:-1],   # truncated inside the frame
    b'\xc1',                                      # a byte msgpack never uses
    b'\xff\xfe\xfd\xfc garbage',
    msgpack.packb(['pulse', {'busy': 1}]) + b'\x00',  # extra data after the value
    b'',
])
def test_undecodable_payload_raises(payload):
    with pytest.raises(ProtocolError):
        decode_all(raw_frame(payload))


@pytest.mark.parametrize('value', [
    {'kind': 'pulse'},               # not a list
    ['pulse'],                       # one element
    ['pulse', {'busy': 1}, 'x'],     # three elements
    [b'pulse', {'busy': 1}],         # kind is bytes, not str
    [7, {'busy': 1}],                # kind is an int
    [['pulse'], {'busy': 1}],        # kind is a list (unhashable: no schema lookup)
    [{'k': 1}, {}],                  # kind is a map
    ['pulse', [['busy', 1]]],        # body is not a map
    ['pulse', None],
    'pulse',
    42,
])
def test_wrong_shape_raises(value):
    with pytest.raises(ProtocolError):
        decode_all(frame_of(value))


def test_unknown_kind_raises():
    with pytest.raises(ProtocolError, match='unknown'):
        decode_all(encode('no_such_kind', {}))


def test_missing_field_raises():
    with pytest.raises(ProtocolError, match='missing'):
        decode_all(encode('hello', {'version': 1, 'role': 'node'}))


@pytest.mark.parametrize('kind, body', [
    ('hello', {'version': '1', 'role': 'node', 'nonce': b'n'}),
    ('hello', {'version': 1, 'role': b'node', 'nonce': b'n'}),
    ('hello', {'version': 1, 'role': 'node', 'nonce': 'n'}),
    ('pulse', {'busy': 1.0}),
    ('job_started', {'jid': 1, 'start_time': '0'}),
    ('job_done', {'jid': 1, 'status': 11, 'result': 'not bytes', 'exception': None,
                  'stdout': '', 'stderr': '', 'start_time': None, 'end_time': 1.0}),
    ('uninstall', {'cid': 1, 'cleanup': 1}),
    ('result_ack', {'ids': {'a': 1}}),
])
def test_wrong_field_type_raises(kind, body):
    with pytest.raises(ProtocolError, match='type'):
        decode_all(encode(kind, body))


@pytest.mark.parametrize('kind, body', [
    ('pulse', {'busy': True}),
    ('job', {'jid': False, 'cid': 1, 'args': b''}),
    ('job_started', {'jid': 1, 'start_time': True}),   # NUMBER field
    ('welcome', {'pulse_interval': True, 'scheduler_id': 'x'}),
])
def test_bool_where_number_expected_is_refused(kind, body):
    """bool is an int subclass in Python; the schema must not let it pass as a number."""
    with pytest.raises(ProtocolError):
        decode_all(encode(kind, body))


def test_bool_in_optional_number_field_is_refused():
    """Regression: ``validate`` once rejected bools only for ``int`` and ``NUMBER`` fields, so
    OPTIONAL_FLOAT fields (job_done/job_end start_time, end_time) took ``True``."""
    body = {'jid': 1, 'status': 11, 'result': None, 'exception': None, 'stdout': '',
            'stderr': '', 'start_time': None, 'end_time': 1.0}
    body['start_time'] = True
    with pytest.raises(ProtocolError):
        decode_all(encode('job_done', body))


def test_bool_field_accepts_bool():
    assert decode_all(encode('uninstall', {'cid': 1, 'cleanup': False})) == \
        [('uninstall', {'cid': 1, 'cleanup': False})]


def test_optional_fields_accept_none_and_value():
    base = {'jid': 1, 'status': 11, 'stdout': '', 'stderr': '', 'end_time': 3, 'stored': ''}
    for result, exception, start in [(None, None, None), (b'r', 'exc', 2.5), (b'', '', 2)]:
        body = dict(base, result=result, exception=exception, start_time=start)
        assert decode_all(encode('job_done', body)) == [('job_done', body)]


def test_extra_fields_are_accepted_and_ignored():
    """A newer peer may add fields; an older one must not drop the connection for it."""
    body = {'busy': 2, 'new_field': [1, 'x'], 'other': None}
    assert decode_all(encode('pulse', body)) == [('pulse', {'busy': 2})]


def test_validate_directly():
    validate('pulse', {'busy': 0})
    with pytest.raises(ProtocolError):
        validate('pulse', {})


# datagrams

def test_datagram_round_trip():
    for kind, body in [('ping', {'addr': '10.0.0.1', 'port': 51347}),
                       ('announce', {'port': 51348})]:
        data = pack_datagram(from_wire(kind, body))
        assert data == msgpack.packb([kind, body], use_bin_type=True)  # no length prefix
        assert pair(unpack_datagram(data)) == (kind, body)


@pytest.mark.parametrize('data', [
    b'', b'\xc1', msgpack.packb(['ping', {'addr': 'x'}]), msgpack.packb(['nope', {}]),
    msgpack.packb([1, 2]), msgpack.packb(['announce', {'port': 1}])[:-1],
])
def test_bad_datagram_raises(data):
    with pytest.raises(ProtocolError):
        unpack_datagram(data)


# fuzzing

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

message_like = st.tuples(st.sampled_from(sorted(SCHEMAS)) | st.text(max_size=6),
                         st.dictionaries(st.sampled_from(['jid', 'uid', 'busy', 'port', 'cid',
                                                          'role', 'nonce', 'version', 'x']),
                                         msgpack_values, max_size=5))

chunk = st.one_of(
    st.binary(max_size=64),                                           # pure noise
    st.binary(max_size=40).map(raw_frame),                            # framed noise
    msgpack_values.map(frame_of),                                     # framed msgpack
    message_like.map(lambda pair: frame_of(list(pair))),              # nearly messages
    st.sampled_from(MESSAGES).map(lambda pair: encode(*pair)),        # valid messages
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(chunk, max_size=6), split=st.integers(1, 16))
def test_arbitrary_bytes_yield_valid_messages_or_protocol_error(chunks, split):
    """Whatever a peer sends, the decoder gives checked messages or ProtocolError, nothing
    else (no KeyError/TypeError/BufferError...)."""
    stream = b''.join(chunks)
    decoder = FrameDecoder(max_frame_size=4096)
    try:
        for start in range(0, len(stream), split):
            for message in decoder.messages_from(stream[start:start + split]):
                assert isinstance(message, Message)
                validate(*pair(message))
    except ProtocolError:
        pass


def test_link_send_on_a_closed_link_drops_the_frame():
    """Senders other than a link's owner never have to handle a link that just closed."""
    import socket

    from dispyscheduler.wire.link import Link
    left, right = socket.socketpair()
    try:
        link = Link(left, peer='test')
        assert link.send(SCHEMAS['closed']()) is True
        link.close()
        assert link.send(SCHEMAS['closed']()) is False
    finally:
        left.close()
        right.close()


# message definitions

def test_every_message_round_trips_through_its_definition():
    """Each message class encodes to ``[kind, body]`` with exactly its fields, and decodes
    back to an equal message."""
    import dataclasses
    for kind, cls in SCHEMAS.items():
        assert cls.kind == kind
        assert cls._fields == tuple(field.name for field in dataclasses.fields(cls))
    submit = Submit(uid=1, args=b'a', files=[('f', b'x', 0o600)], timeout=None, priority=0,
                    node=None, tag=None)
    (decoded,) = FrameDecoder().messages_from(encode(*pair(submit)))
    assert decoded == submit and decoded.files == [('f', b'x', 0o600)]


def test_a_field_added_later_takes_its_default_when_an_older_peer_leaves_it_out():
    body = {'uid': 1, 'args': b'', 'files': [], 'timeout': None, 'priority': 0, 'node': None,
            'tag': None}
    assert from_wire('submit', body).refs == []
    assert from_wire('submit', dict(body, refs=['ab'])).refs == ['ab']
    with pytest.raises(ProtocolError):
        from_wire('submit', dict(body, refs='ab'))
    with pytest.raises(ProtocolError, match="missing field 'tag'"):
        from_wire('submit', {name: value for name, value in body.items() if name != 'tag'})


def test_nested_shapes_are_checked():
    body = {'uid': 1, 'args': b'', 'timeout': None, 'priority': 0, 'node': None, 'tag': None}
    for files in ([['f', b'x']], [['f', 'not bytes', 1]], [['f', b'x', 1, 2]], 'f', [None]):
        with pytest.raises(ProtocolError):
            validate('submit', dict(body, files=files))
    with pytest.raises(ProtocolError):
        validate('cluster_new', {'name': 'n', 'code': b'', 'nodes': [['*', 'port']],
                                 'reentrant': False, 'cleanup': True, 'files': [],
                                 'node_files': [], 'allocate': False})
    with pytest.raises(ProtocolError):
        validate('jobs_pending', {'jobs': [[1, 'tag as text']]})
    assert from_wire('jobs_pending', {'jobs': [[1, None], [2, b't']]}).jobs == [(1, None),
                                                                                 (2, b't')]


def test_a_job_end_is_written_in_one_place():
    """A node's report passed on keeps every field of the report."""
    done = SCHEMAS['job_done'](jid=5, status=11, result=b'r', exception=None, stdout='o',
                               stderr='e', start_time=1.0, end_time=2.0)
    end = JobEnd.relay(done, uid=3, ip_addr='10.0.0.1', tag=b't')
    assert (end.status, end.result, end.stdout, end.stderr, end.start_time, end.end_time) == (
        11, b'r', 'o', 'e', 1.0, 2.0)
    failed = JobEnd.failure(3, 8, 'job was cancelled')
    assert failed.result is None and failed.exception == 'job was cancelled'
    assert decode_payload(encode(*pair(failed))[4:]) == failed


def test_hello_is_a_message_like_any_other():
    hello = Hello(version=1, role='node', nonce=b'n' * 32)
    assert decode_all(encode(*pair(hello))) == [pair(hello)]


# bulk frames: a chunk's bytes after the message, raw (sent straight from a file)

def bulk_frame(data, **fields):
    from dispyscheduler.wire.messages import PayloadPart
    from dispyscheduler.wire.protocol import encode_bulk
    part = PayloadPart(id=4, name='_dispyscheduler_result_4.pickle', size=10, offset=0,
                       data=b'', last=True, **fields)
    return encode_bulk(part, len(data)) + data


@pytest.mark.parametrize('data', [b'', b'0123456789'])
def test_a_bulk_frame_carries_its_data_raw_and_decodes_as_the_message(data):
    """Fed a byte at a time, between two ordinary frames: the message comes out whole, its
    data the raw bytes that followed it."""
    frames = encode('pulse', {'busy': 1}) + bulk_frame(data) + encode('pulse', {'busy': 2})
    decoder = FrameDecoder()
    messages = []
    for byte in frames:
        messages += decoder.messages_from(bytes([byte]))
    assert [type(message).__name__ for message in messages] == ['Pulse', 'PayloadPart',
                                                                 'Pulse']
    assert messages[1].data == data and messages[1].last is True


def test_a_bulk_frame_too_large_or_with_data_of_its_own_is_refused():
    from dispyscheduler.wire.protocol import BULK, BULK_HEADER
    decoder = FrameDecoder(max_frame_size=1000)
    with pytest.raises(ProtocolError, match='exceeds'):  # on the two lengths alone
        list(decoder.messages_from(BULK_HEADER.pack(10 | BULK, 991)))
    payload = msgpack.packb(['payload_part', {'id': 4, 'name': 'x', 'size': 1, 'offset': 0,
                                              'last': True, 'data': b'y'}], use_bin_type=True)
    with pytest.raises(ProtocolError, match='data of its own'):
        list(FrameDecoder().messages_from(BULK_HEADER.pack(len(payload) | BULK, 1) + payload
                                          + b'z'))


def test_a_large_bulk_frame_is_read_straight_into_its_own_buffer():
    """Over a real socket pair: a 1 MB chunk sent as a bulk frame between two small frames
    arrives whole, its data the buffer the reader filled (a bytearray, not copied again),
    and the frame after it is read as usual."""
    import socket
    import threading
    from dispyscheduler.wire.link import Link
    from dispyscheduler.wire.messages import PayloadPart
    left, right = socket.socketpair()
    sender, receiver = Link(left, 'sender'), Link(right, 'receiver')
    receiver.authenticated()  # (the handshake's 4 KB frame cap is lifted)
    data = bytes(range(256)) * 4096
    part = PayloadPart(id=4, name='_dispyscheduler_result_4.pickle', size=len(data), offset=0,
                       data=b'', last=True)

    def send():
        sender.send_now(Pulse(busy=1))
        sender.send_bulk(part, memoryview(data))
        sender.send_now(Pulse(busy=2))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    received = []
    try:
        while len(received) < 3:
            received += receiver.receive()
    finally:
        left.close()
        right.close()
        thread.join(10)
    assert received[0] == Pulse(busy=1) and received[2] == Pulse(busy=2)
    assert type(received[1].data) is bytearray and received[1].data == data
    assert receiver.decoder.raw is None and not receiver.decoder.buffer
