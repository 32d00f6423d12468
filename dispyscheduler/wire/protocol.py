"""The wire format: length-prefixed msgpack frames, each carrying one message.

A frame is a 4-byte big-endian length followed by one msgpack value, ``[kind, body]``: the
message's kind and its fields as a map (``messages.py`` defines every message). The length is
checked against a cap before anything is allocated, and every received message is checked
against its definition before a handler sees it; anything else is a ``ProtocolError`` and
costs the sender its connection, never the daemon.
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

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def messages_from(self, data: bytes) -> Iterator[Message]:
        """``feed(data)``, then iterate the complete messages."""
        self.buffer += data
        return self.messages()

    def messages(self) -> Iterator[Message]:
        buffer = self.buffer
        offset = 0
        try:
            while len(buffer) - offset >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer, offset)
                if size > self.max_frame_size:
                    raise ProtocolError('frame of %d bytes exceeds the limit of %d'
                                        % (size, self.max_frame_size))
                end = offset + HEADER.size + size
                if len(buffer) < end:
                    break
                yield decode_payload(memoryview(buffer)[offset + HEADER.size:end])
                offset = end
        finally:
            del buffer[:offset]


def decode_payload(payload: Union[bytes, memoryview]) -> Message:
    """Decode and check one frame's payload."""
    try:
        value = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError('undecodable frame: %s' % (exc,)) from None
    finally:
        if isinstance(payload, memoryview):
            payload.release()
    if not (type(value) is list and len(value) == 2):
        raise ProtocolError('frame is not a [kind, body] pair')
    return from_wire(value[0], value[1])


def pack_datagram(message: Message) -> bytes:
    """A discovery datagram: msgpack ``[kind, body]`` with no length prefix."""
    return msgpack.packb((message.kind, message.body()), use_bin_type=True)


def unpack_datagram(data: bytes) -> Message:
    """Decode one discovery datagram; ``ProtocolError`` if it is not well formed."""
    return decode_payload(data)
