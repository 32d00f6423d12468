"""The wire format: length-prefixed msgpack frames and the shape of every message.

A frame is a 4-byte big-endian length followed by one msgpack value, ``[kind, body]``, where
``kind`` is a string naming the message and ``body`` a map of fields. The length is checked
against a cap before anything is allocated. Every received message is checked against
``SCHEMAS`` before a handler sees it, so handlers can trust field types; anything else is a
``ProtocolError`` and costs the sender its connection, never the daemon.

User data (computations, arguments, results) travel as opaque ``bytes`` fields: only the
client and the node's worker processes ever unpickle them.
"""

import struct

import msgpack

from .constants import MAX_FRAME_SIZE

HEADER = struct.Struct('>I')

OPTIONAL_STR = (str, type(None))
OPTIONAL_BYTES = (bytes, type(None))
OPTIONAL_FLOAT = (float, int, type(None))
NUMBER = (float, int)
INT_LIST = 'list of int'  # a list whose items are all integers (ids)

# Each message kind with its required fields and their types. Extra fields are ignored, so a
# newer peer can add fields without breaking an older one.
SCHEMAS = {
    # handshake, on every link
    'hello': {'version': int, 'role': str, 'nonce': bytes},
    'auth': {'proof': bytes},
    'error': {'reason': str},
    # node -> scheduler
    'node_info': {'name': str, 'ip_addr': str, 'port': int, 'cpus': int, 'platform': str,
                  'jobs': INT_LIST},
    'node_leaving': {'jobs': INT_LIST},
    'pulse': {'busy': int},
    'compute_ready': {'cid': int},
    'compute_failed': {'cid': int, 'reason': str},
    'job_started': {'jid': int, 'start_time': NUMBER},
    'job_done': {'jid': int, 'status': int, 'result': OPTIONAL_BYTES,
                 'exception': OPTIONAL_STR, 'stdout': str, 'stderr': str,
                 'start_time': OPTIONAL_FLOAT, 'end_time': NUMBER},
    'provisional': {'jid': int, 'result': bytes},
    'job_file': {'jid': int, 'name': str, 'offset': int, 'data': bytes, 'last': bool},
    # scheduler -> node
    'welcome': {'pulse_interval': NUMBER, 'scheduler_id': str},
    'compute': {'cid': int, 'name': str, 'code': bytes, 'files': list, 'cpus': int,
                'setup_args': OPTIONAL_BYTES},
    'compute_file': {'cid': int, 'name': str, 'offset': int, 'data': bytes, 'last': bool},
    'job': {'jid': int, 'cid': int, 'args': bytes, 'timeout': OPTIONAL_FLOAT, 'files': list},
    'cancel_job': {'jid': int},
    'uninstall': {'cid': int, 'cleanup': bool},
    'result_ack': {'ids': INT_LIST},
    # client -> scheduler
    'cluster_new': {'name': str, 'code': bytes, 'nodes': list, 'reentrant': bool,
                    'cleanup': bool, 'files': list, 'node_files': list, 'allocate': bool},
    'cluster_file': {'name': str, 'offset': int, 'data': bytes, 'last': bool},
    'cluster_resume': {'cid': int, 'credential': bytes},
    'submit': {'uid': int, 'args': bytes, 'files': list, 'timeout': OPTIONAL_FLOAT,
               'priority': int, 'node': OPTIONAL_STR, 'tag': OPTIONAL_BYTES},
    'cancel': {'uid': int},
    'node_allocation': {'key': str, 'cpus': int, 'setup_args': OPTIONAL_BYTES, 'files': list},
    'close': {'terminate': bool},
    # scheduler -> client
    'cluster_ok': {'cid': int, 'max_file_size': int, 'credential': bytes},
    'submitted': {'uids': INT_LIST},
    'job_status': {'uid': int, 'status': int, 'ip_addr': str, 'start_time': NUMBER},
    'provisional_result': {'uid': int, 'result': bytes, 'ip_addr': str},
    'file_part': {'uid': int, 'name': str, 'offset': int, 'data': bytes, 'last': bool},
    'job_end': {'uid': int, 'status': int, 'result': OPTIONAL_BYTES,
                'exception': OPTIONAL_STR, 'stdout': str, 'stderr': str,
                'start_time': OPTIONAL_FLOAT, 'end_time': OPTIONAL_FLOAT,
                'ip_addr': OPTIONAL_STR, 'tag': OPTIONAL_BYTES},
    'jobs_pending': {'jobs': list},
    'node_status': {'ip_addr': str, 'name': str, 'cpus': int, 'status': int},
    'node_offer': {'key': str, 'ip_addr': str, 'name': str, 'cpus': int, 'platform': str},
    'cluster_warning': {'reason': str},
    'closed': {},
    # node daemon <-> the processes that run a computation's jobs (a local Unix socket)
    'worker_hello': {'role': str, 'token': bytes, 'cid': int, 'pid': int},
    'load': {'code': bytes, 'node_name': str, 'node_ip_addr': str, 'max_file_size': int,
             'setup_args': OPTIONAL_BYTES},
    'loaded': {},
    'load_failed': {'reason': str},
    'fork': {'count': int},
    'exit': {'cleanup': bool},
    'worker_exit': {'pid': int, 'how': str},
    # discovery datagrams (UDP)
    'ping': {'addr': str, 'port': int},
    'announce': {'port': int},
}


AUTH_FAILED = 'authentication failed'
"""The reason in the error frame a peer gets when its handshake proof is wrong."""


class ProtocolError(Exception):
    """A peer sent something that is not this protocol; its connection is closed."""


class AuthenticationError(ConnectionError):
    """The peer does not know the shared secret (or we do not know its)."""


def refusal(reason):
    """The exception for an error frame received in place of an expected message."""
    if reason == AUTH_FAILED:
        return AuthenticationError(reason)
    return ProtocolError('refused by the peer: %s' % (reason,))


def encode(kind, body):
    """One frame, ready for ``sendall``."""
    payload = msgpack.packb((kind, body), use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


def _allowed_types(types):
    """The exact types a field may have: msgpack decodes to the built-in types themselves,
    never to subclasses, and a bool where a number is wanted is a type error."""
    if types is INT_LIST:
        return INT_LIST
    return frozenset(types) if isinstance(types, tuple) else frozenset((types,))


CHECKS = {kind: tuple((field, _allowed_types(types)) for field, types in schema.items())
          for kind, schema in SCHEMAS.items()}


def validate(kind, body):
    """Check a decoded message against its schema; raise ``ProtocolError`` if it is off."""
    checks = CHECKS.get(kind)
    if checks is None:
        raise ProtocolError('unknown message kind %r' % (kind,))
    for field, allowed in checks:
        try:
            value = body[field]
        except KeyError:
            raise ProtocolError('%s: missing field %r' % (kind, field)) from None
        if allowed is INT_LIST:
            if type(value) is list and all(type(item) is int for item in value):
                continue
        elif type(value) in allowed:
            continue
        raise ProtocolError('%s: field %r has type %s' % (kind, field, type(value).__name__))


class FrameDecoder:
    """Turns a byte stream into checked ``(kind, body)`` messages.

    ``feed`` whatever the socket gave, then iterate ``messages()`` for every complete frame.
    A frame announcing more than ``max_frame_size`` bytes is refused as soon as its header is
    read, before its body is waited for or stored.
    """

    def __init__(self, max_frame_size=MAX_FRAME_SIZE):
        self.max_frame_size = max_frame_size
        self.buffer = bytearray()

    def feed(self, data):
        self.buffer += data

    def messages_from(self, data):
        """``feed(data)``, then iterate the complete messages."""
        self.buffer += data
        return self.messages()

    def messages(self):
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


def decode_payload(payload):
    """Decode and check one frame's payload."""
    try:
        message = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError('undecodable frame: %s' % (exc,)) from None
    finally:
        if isinstance(payload, memoryview):
            payload.release()
    if not (isinstance(message, list) and len(message) == 2 and isinstance(message[0], str)
            and isinstance(message[1], dict)):
        raise ProtocolError('frame is not a [kind, body] pair')
    kind, body = message
    validate(kind, body)
    return kind, body


def pack_datagram(kind, body):
    """A discovery datagram: msgpack ``[kind, body]`` with no length prefix."""
    return msgpack.packb((kind, body), use_bin_type=True)


def unpack_datagram(data):
    """Decode one discovery datagram; ``ProtocolError`` if it is not well formed."""
    return decode_payload(data)
