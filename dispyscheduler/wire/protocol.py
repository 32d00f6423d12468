"""The wire format: length-prefixed msgpack frames, each carrying one message.

A frame is a 4-byte big-endian length followed by one msgpack value, ``[kind, body]``: the
message's kind and its fields as a map (``messages.py`` defines every message). The length is
checked against a cap before anything is allocated, and every received message is checked
against its definition before a handler sees it; anything else is a ``ProtocolError`` and
costs the sender its connection, never the daemon.

A bulk frame carries a chunk of a file: its length has the top bit (``BULK``) set and is
followed by a second length, of raw bytes that come after the msgpack value and are the
message's ``data`` field. So a daemon can send a chunk straight from a file to a socket
(``os.sendfile``), never copying it through Python; any receiver decodes either kind.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator, Union

import msgpack

from ..constants import MAX_FRAME_SIZE
from .messages import Error, Message, ProtocolError, from_wire

__all__ = ['AUTH_FAILED', 'AuthenticationError', 'FrameDecoder', 'ProtocolError', 'encode',
           'encode_raw', 'decode_payload', 'pack_datagram', 'unpack_datagram', 'refusal']

HEADER = struct.Struct('>I')
BULK_HEADER = struct.Struct('>II')
BULK = 0x80000000
"""Set in a frame's length: a bulk frame (``encode_bulk``)."""

AUTH_FAILED = 'authentication failed'
"""The reason in the error frame a peer gets when its handshake proof is wrong."""


class AuthenticationError(ConnectionError):
    """The peer does not know the shared secret (or we do not know its)."""


def refusal(error: Error) -> Exception:
    """The exception for an error frame received in place of an expected message."""
    if error.reason == AUTH_FAILED:
        return AuthenticationError(error.reason)
    return ProtocolError('refused by the peer: %s' % (error.reason,))


def encode(message: Message) -> bytes:
    """One message's frame, ready for ``sendall``."""
    payload = msgpack.packb((message.kind, message.body()), use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


def encode_bulk(message: Message, size: int) -> bytes:
    """The start of a bulk frame: ``message`` without its ``data``, which are the ``size``
    raw bytes the sender writes after it."""
    body = message.body()
    del body['data']
    payload = msgpack.packb((message.kind, body), use_bin_type=True)
    return BULK_HEADER.pack(len(payload) | BULK, size) + payload


def encode_raw(kind: Any, body: Any) -> bytes:
    """A frame around any ``[kind, body]`` pair, checked by nobody: for tests that must send
    what no message definition allows."""
    payload = msgpack.packb((kind, body), use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream into checked messages.

    ``feed`` whatever the socket gave, then iterate ``messages()`` for every complete frame.
    A frame announcing more than ``max_frame_size`` bytes is refused as soon as its header is
    read, before its body is waited for or stored.
    """

    direct_raw = 64 * 1024
    """A bulk frame's raw bytes from this size on are read straight into a buffer of their
    own (``raw_sink``), which becomes the message's ``data``, rather than through
    ``buffer``: each byte copied once, by the kernel."""

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self.buffer = bytearray()
        self.missing = 0
        """Bytes still to come of the frame begun in ``buffer`` (0: none is begun, or its
        length is not known yet): a reader may ask for that much at once."""
        self.raw: tuple[memoryview, bytearray] | None = None
        """A bulk frame whose raw bytes are being read into a buffer of their own: its
        message without them (undecoded), and that buffer."""
        self.raw_filled = 0

    def raw_sink(self) -> memoryview | None:
        """Where the next bytes read must go, if a bulk frame's raw bytes are being read
        into their own buffer (``recv_into`` it, then ``raw_received``); else None."""
        if self.raw is None:
            return None
        return memoryview(self.raw[1])[self.raw_filled:]

    def raw_received(self, count: int) -> list[Message]:
        """``count`` bytes were read into ``raw_sink()``: the bulk frame's message once
        they are all there (and what follows in ``buffer``, nothing: the sink was exactly
        the rest of the frame)."""
        self.raw_filled += count
        assert self.raw is not None
        head, data = self.raw
        if self.raw_filled < len(data):
            self.missing = len(data) - self.raw_filled
            return []
        self.raw, self.raw_filled, self.missing = None, 0, 0
        return [decode_payload(head, data)]

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def messages_from(self, data: bytes) -> Iterator[Message]:
        """``feed(data)``, then iterate the complete messages."""
        self.buffer += data
        return self.messages()

    def messages(self) -> Iterator[Message]:
        buffer = self.buffer
        offset = 0
        self.missing = 0
        try:
            while len(buffer) - offset >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer, offset)
                start, raw, bulk = offset + HEADER.size, 0, size & BULK
                if bulk:
                    if size ^ BULK > self.max_frame_size:  # refused before the rest is read
                        raise ProtocolError('frame of %d bytes exceeds the limit of %d'
                                            % (size ^ BULK, self.max_frame_size))
                    if len(buffer) - offset < BULK_HEADER.size:
                        break
                    size, raw = BULK_HEADER.unpack_from(buffer, offset)
                    size, start = size ^ BULK, offset + BULK_HEADER.size
                if size + raw > self.max_frame_size:
                    raise ProtocolError('frame of %d bytes exceeds the limit of %d'
                                        % (size + raw, self.max_frame_size))
                end = start + size + raw
                if len(buffer) < end:
                    if bulk and raw >= self.direct_raw and len(buffer) >= start + size:
                        # the message is here, not all of its raw bytes: the rest are read
                        # straight into their own buffer
                        data = bytearray(raw)
                        have = len(buffer) - start - size
                        with memoryview(buffer) as view:
                            data[:have] = view[start + size:]
                            head = memoryview(bytes(view[start:start + size]))
                        self.raw = (head, data)
                        self.raw_filled, self.missing = have, raw - have
                        offset = len(buffer)
                        break
                    self.missing = end - len(buffer)
                    break
                if not bulk:
                    yield decode_payload(memoryview(buffer)[start:end])
                else:
                    with memoryview(buffer) as view:
                        chunk = bytes(view[start + size:end])
                    yield decode_payload(memoryview(buffer)[start:start + size], chunk)
                offset = end
        finally:
            del buffer[:offset]


def decode_payload(payload: Union[bytes, memoryview],
                   data: bytes | bytearray | None = None) -> Message:
    """Decode and check one frame's payload (with a bulk frame's raw ``data``)."""
    try:
        value = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError('undecodable frame: %s' % (exc,)) from None
    finally:
        if isinstance(payload, memoryview):
            payload.release()
    if not (type(value) is list and len(value) == 2):
        raise ProtocolError('frame is not a [kind, body] pair')
    if data is not None:
        if type(value[1]) is not dict or 'data' in value[1]:
            raise ProtocolError('bulk frame without a map, or with data of its own')
        value[1]['data'] = data
    return from_wire(value[0], value[1])


def pack_datagram(message: Message) -> bytes:
    """A discovery datagram: msgpack ``[kind, body]`` with no length prefix."""
    return msgpack.packb((message.kind, message.body()), use_bin_type=True)


def unpack_datagram(data: bytes) -> Message:
    """Decode one discovery datagram; ``ProtocolError`` if it is not well formed."""
    return decode_payload(data)
