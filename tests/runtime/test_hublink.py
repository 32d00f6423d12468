"""``HubLink`` in a gevent process (a subprocess, so that this one is not monkey-patched): a
peer that stops reading never blocks the sender, and every frame arrives, in order; a peer
that sends without pause never starves the other links' readers."""

import subprocess
import sys
import textwrap

from daemons import REPO

SCRIPT = textwrap.dedent('''
    import gevent.monkey
    gevent.monkey.patch_all()
    import socket, time
    import gevent
    from dispyscheduler.runtime.hublink import HubLink
    from dispyscheduler.wire.messages import JobFile
    from dispyscheduler.wire.protocol import FrameDecoder

    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    link = HubLink(ours, 'peer')
    writer = gevent.spawn(link.run_writer)
    payload = b'x' * 1000
    started = time.monotonic()
    for number in range(2000):  # about 2 MB: far more than the socket buffers hold
        link.send(JobFile(jid=number, name='f', offset=0, data=payload, last=False))
    took = time.monotonic() - started
    assert took < 1.0, 'send blocked for %.2f s on a peer that does not read' % took
    assert link.outbox, 'the socket cannot have taken it all'
    gevent.sleep(0.05)  # the flush and the writer run; the peer still reads nothing
    decoder, seen = FrameDecoder(), []
    theirs.setblocking(False)
    deadline = time.monotonic() + 20
    while len(seen) < 2000 and time.monotonic() < deadline:
        try:
            data = theirs.recv(65536)
        except BlockingIOError:
            gevent.sleep(0.001)
            continue
        seen.extend(message.jid for message in decoder.messages_from(data))
    assert seen == list(range(2000)), 'frames lost or out of order: %d' % len(seen)
    link.close()
    writer.join(5)
    print('OK')
''')

FLOOD = textwrap.dedent('''
    import gevent.monkey
    gevent.monkey.patch_all()
    import socket
    import gevent
    from dispyscheduler.runtime.hublink import HubLink
    from dispyscheduler.wire.messages import Pulse
    from dispyscheduler.wire.protocol import encode

    busy, busy_peer = socket.socketpair()
    quiet, quiet_peer = socket.socketpair()
    for sock in (busy, busy_peer):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    frame = encode(Pulse(busy=1))
    busy_peer.setblocking(False)
    sent = 0
    try:
        while sent < 40000:  # as much as the buffers take: input waiting at every read
            busy_peer.send(frame * 100)
            sent += 100
    except BlockingIOError:
        pass
    quiet_peer.sendall(encode(Pulse(busy=2)))
    handled = {'busy': 0, 'quiet_at': None}

    def on_busy(message):
        handled['busy'] += 1

    def on_quiet(message):
        handled['quiet_at'] = handled['busy']

    readers = [gevent.spawn(HubLink(busy, 'busy').run_reader, on_busy),
               gevent.spawn(HubLink(quiet, 'quiet').run_reader, on_quiet)]
    with gevent.Timeout(20):
        while handled['quiet_at'] is None or handled['busy'] < sent:
            gevent.sleep(0.01)
    assert sent > 5000, 'the buffers took only %d frames' % sent
    assert handled['quiet_at'] < sent // 2, (
        'the quiet link was read only after %d of %d frames of the busy one'
        % (handled['quiet_at'], sent))
    gevent.killall(readers)
    print('OK')
''')


def run(script):
    done = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == 'OK', done.stderr[-2000:]


def test_a_peer_that_does_not_read_never_blocks_the_sender():
    run(SCRIPT)


def test_a_peer_that_sends_without_pause_does_not_starve_the_others():
    run(FLOOD)
