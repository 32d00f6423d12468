"""Unit tests of the handshake (hello + HMAC challenge-response) and datagram tags.

Two in-process peers talk over ``socket.socketpair()``; one side runs in a thread. Every wait
is bounded by a deadline and every join by a timeout, so a broken handshake fails, not hangs.
"""

import socket
import threading
import time

import pytest

from dispyscheduler.wire.auth import (
    AUTH_FAILED,
    NONCE_SIZE,
    AuthenticationError,
    handshake,
    make_proof,
    open_datagram,
    sign_datagram,
)
from dispyscheduler.constants import PROTOCOL_VERSION
from dispyscheduler.wire.link import Link
from dispyscheduler.wire.messages import Announce, Auth, Hello, Ping
from dispyscheduler.wire.protocol import FrameDecoder, ProtocolError

SECRET = 'Very-Distinctive-Secret-7f3a9c'
TIMEOUT = 5


class RecordingSocket:
    """A socket that keeps a copy of every byte it sends (test-only wire capture)."""

    def __init__(self, sock):
        self.sock = sock
        self.sent = bytearray()

    def sendall(self, data):
        self.sent += data
        return self.sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def sent_kinds(data):
    return [message.kind for message in FrameDecoder().messages_from(bytes(data))]


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    left, right = RecordingSocket(left), RecordingSocket(right)
    yield left, right
    left.sock.close()
    right.sock.close()


def run_in_thread(function, *args):
    """Start ``function(*args)``; return a callable giving ``(result, exception)``."""
    outcome = {}

    def target():
        try:
            outcome['result'] = function(*args)
        except BaseException as exc:  # reported to the test thread
            outcome['error'] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join():
        thread.join(TIMEOUT)
        assert not thread.is_alive(), 'peer thread still running'
        return outcome.get('result'), outcome.get('error')
    return join


def deadline():
    return time.monotonic() + TIMEOUT


def run_handshake(pair, initiator_args, responder_args):
    """Initiator (the connecting side) on ``pair[0]`` in a thread, responder here."""
    left, right = pair
    join = run_in_thread(handshake, Link(left, peer='responder'), *initiator_args, True,
                         deadline())
    try:
        responder = (handshake(Link(right, peer='initiator'), *responder_args, False,
                               deadline()), None)
    except Exception as exc:
        responder = (None, exc)
        right.sock.shutdown(socket.SHUT_RDWR)  # the real server drops the link
    return join(), responder


def test_same_secret_both_sides_succeed_and_get_the_peer_hello(pair):
    (hello_at_node, error_i), (hello_at_scheduler, error_r) = run_handshake(
        pair, (SECRET, 'node', 'scheduler'), (SECRET, 'scheduler', 'node'))
    assert error_i is None and error_r is None
    assert hello_at_node.role == 'scheduler' and hello_at_scheduler.role == 'node'
    assert hello_at_node.version == hello_at_scheduler.version == PROTOCOL_VERSION
    assert len(hello_at_node.nonce) == len(hello_at_scheduler.nonce) == NONCE_SIZE
    assert hello_at_node.nonce != hello_at_scheduler.nonce
    left, right = pair
    assert sent_kinds(left.sent) == ['hello', 'auth']
    assert sent_kinds(right.sent) == ['hello', 'auth']


def test_empty_secret_on_both_sides_succeeds(pair):
    (_, error_i), (_, error_r) = run_handshake(pair, ('', 'client', 'scheduler'),
                                               (None, 'scheduler', 'client'))
    assert error_i is None and error_r is None


def test_wrong_secret_refused_by_both_sides(pair):
    (_, error_i), (_, error_r) = run_handshake(
        pair, ('wrong secret', 'client', 'scheduler'), (SECRET, 'scheduler', 'client'))
    assert isinstance(error_r, AuthenticationError)
    assert isinstance(error_i, AuthenticationError)
    assert AUTH_FAILED in str(error_i)
    left, right = pair
    # the responder told the initiator, and never offered its own proof to a wrong peer
    assert sent_kinds(right.sent) == ['hello', 'error']


def test_secret_never_sent_on_the_wire():
    for secrets in [(SECRET, SECRET), ('wrong', SECRET), (SECRET, 'wrong')]:
        left, right = socket.socketpair()
        left, right = RecordingSocket(left), RecordingSocket(right)
        try:
            run_handshake((left, right), (secrets[0], 'node', 'scheduler'),
                          (secrets[1], 'scheduler', 'node'))
            wire = bytes(left.sent) + bytes(right.sent)
            assert wire  # something was captured
            for secret in {secrets[0], secrets[1]}:
                assert secret.encode() not in wire
                assert secret.encode().hex().encode() not in wire
        finally:
            left.sock.close()
            right.sock.close()


def test_proof_depends_on_both_nonces_and_roles():
    """A recorded proof is useless later: a fresh verifier nonce needs a fresh proof, and a
    proof cannot be reflected (roles swapped)."""
    key = SECRET.encode()
    mine, theirs, other = b'a' * NONCE_SIZE, b'b' * NONCE_SIZE, b'c' * NONCE_SIZE
    proof = make_proof(key, 'node', mine, 'scheduler', theirs)
    assert proof == make_proof(key, 'node', mine, 'scheduler', theirs)
    assert len(proof) == 32
    assert proof != make_proof(key, 'node', mine, 'scheduler', other)
    assert proof != make_proof(key, 'node', other, 'scheduler', theirs)
    assert proof != make_proof(key, 'scheduler', theirs, 'node', mine)
    assert proof != make_proof(b'other key', 'node', mine, 'scheduler', theirs)


def test_proof_is_hmac_sha256_of_roles_and_nonces():
    """The proof format is part of the wire protocol: keyed by the secret, never containing
    it, over a fixed label, both roles and both nonces."""
    import hashlib
    import hmac
    key, mine, theirs = b'k3y', b'm' * NONCE_SIZE, b't' * NONCE_SIZE
    message = b'\0'.join([b'dispyscheduler-auth-1', b'node', mine, b'scheduler', theirs])
    assert make_proof(key, 'node', mine, 'scheduler', theirs) == \
        hmac.new(key, message, hashlib.sha256).digest()


def test_two_handshakes_use_fresh_nonces(pair):
    first = run_handshake(pair, (SECRET, 'node', 'scheduler'), (SECRET, 'scheduler', 'node'))
    second = run_handshake(pair, (SECRET, 'node', 'scheduler'), (SECRET, 'scheduler', 'node'))
    assert first[0][0].nonce != second[0][0].nonce
    assert first[1][0].nonce != second[1][0].nonce


def test_peer_with_wrong_role_is_refused(pair):
    """The initiator expects a scheduler but a node answers: it tells the peer and raises
    ProtocolError; the peer learns why from the error frame."""
    (_, error_i), (_, error_r) = run_handshake(
        pair, (SECRET, 'client', 'scheduler'), (SECRET, 'node', 'client'))
    assert isinstance(error_i, ProtocolError)
    assert 'scheduler' in str(error_i)
    assert isinstance(error_r, (AuthenticationError, ProtocolError))
    assert 'expected a scheduler' in str(error_r)
    left, _ = pair
    assert sent_kinds(left.sent) == ['hello', 'error']  # no proof for a wrong peer


def test_responder_refuses_wrong_role(pair):
    (_, error_i), (_, error_r) = run_handshake(
        pair, (SECRET, 'client', 'scheduler'), (SECRET, 'scheduler', 'node'))
    assert isinstance(error_r, ProtocolError)
    assert error_i is not None
    _, right = pair
    assert 'auth' not in sent_kinds(right.sent)


def fake_peer(sock, hello):
    """A peer that sends its own hello and returns what it received."""
    link = Link(sock, peer='real')
    link.send_now(Hello(**hello))
    return link.recv_now(deadline()), link.recv_now(deadline())


@pytest.mark.parametrize('hello, reason', [
    ({'version': PROTOCOL_VERSION + 1, 'role': 'scheduler', 'nonce': b'n' * NONCE_SIZE},
     'version'),
    ({'version': 0, 'role': 'scheduler', 'nonce': b'n' * NONCE_SIZE}, 'version'),
    ({'version': PROTOCOL_VERSION, 'role': 'scheduler', 'nonce': b'short'}, 'nonce of 5 bytes'),
])
def test_peer_with_wrong_version_or_nonce_is_refused(pair, hello, reason):
    left, right = pair
    join = run_in_thread(fake_peer, right, hello)
    with pytest.raises(ProtocolError, match=reason):
        handshake(Link(left, peer='fake'), SECRET, 'node', 'scheduler', True, deadline())
    received, error = join()
    assert error is None
    assert received[0].kind == 'hello'
    assert received[1].kind == 'error' and reason in received[1].reason


def test_peer_that_skips_hello_is_refused(pair):
    left, right = pair
    Link(right, peer='fake').send_now(Auth(proof=b'x' * 32))
    with pytest.raises(ProtocolError, match='hello'):
        handshake(Link(left, peer='fake'), SECRET, 'scheduler', 'node', False, deadline())


def test_silent_peer_times_out():
    left, right = socket.socketpair()
    try:
        with pytest.raises(socket.timeout):
            handshake(Link(left, peer='silent'), SECRET, 'scheduler', 'node', False,
                      time.monotonic() + 0.05)
    finally:
        left.close()
        right.close()


# datagrams

def test_datagram_round_trip():
    data = sign_datagram(SECRET, Announce(port=51348))
    assert open_datagram(SECRET, data) == Announce(port=51348)
    assert SECRET.encode() not in data


def test_datagram_with_wrong_secret_raises():
    data = sign_datagram(SECRET, Ping(addr='127.0.0.1', port=51347))
    with pytest.raises(AuthenticationError):
        open_datagram('another secret', data)
    with pytest.raises(AuthenticationError):
        open_datagram('', data)


def test_datagram_with_any_flipped_byte_raises():
    data = sign_datagram(SECRET, Ping(addr='127.0.0.1', port=51347))
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(AuthenticationError):
            open_datagram(SECRET, bytes(tampered))


def test_truncated_datagram_raises():
    data = sign_datagram(SECRET, Announce(port=1))
    for cut in (0, 10, 32, len(data) - 1):
        with pytest.raises(AuthenticationError):
            open_datagram(SECRET, data[:cut])
