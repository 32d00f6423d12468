"""Many simulated nodes in one gevent process, for the scale benchmark (``scale.py``).

Each simulated node opens its own link to the scheduler's node port and speaks the real
protocol with the package's own modules: ``hublink.HubLink`` (as the daemons),
``auth.handshake`` as a node, then ``node_info`` / ``welcome``, then a writer greenlet and
``run_reader``. It installs every
computation at once (``compute`` -> ``compute_ready``) and answers every ``job`` at once with a
``job_done`` (Finished, result ``None``), but only while the shared gate is open: while it is
held, jobs are kept and answered when it opens. The gate may open for a budget of jobs, after
which it closes by itself, so that a measurement covers an exact number of job completions.
Pulses go every ``welcome['pulse_interval']``.

Every node has one CPU and nothing else, or with ``--mixed`` a size of its own, the same on
every run (``node_size``): CPUs 1, 2, 4, 8, 16 in turn, memory 4G to 64G, one node in five
with one or two GPUs, one in four with ``licence=2``, sent in ``node_info`` (``cpus`` and
``resources``) as a real node sends them. A job holds nothing here whatever it asked for: it
is answered when the gate allows, as on a plain run.

Control, one command per line on stdin; answers on stdout:

    hold            close the gate (jobs received from now on are kept)     -> OK hold
    go [N]          open it (for N more jobs, or for good); kept jobs first  -> OK go K
                    (K: kept jobs answered now)
    count           counters (``larger``: jobs received that need more than
                    one CPU)                                                 -> COUNT k=v ...
    quit (or EOF)   close every link and exit                                -> BYE

``READY n`` is printed once all ``n`` links are up (``FAILED reason`` if they cannot be).
Runs until told to quit, at most ``--max_seconds``. Loopback only.
"""

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.lock  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from dispyscheduler.resources import Offer  # noqa: E402
from dispyscheduler.wire.auth import handshake  # noqa: E402
from dispyscheduler.constants import CANCELLED, FINISHED  # noqa: E402
from dispyscheduler.runtime.hublink import HubLink  # noqa: E402
from dispyscheduler.wire.link import set_nodelay  # noqa: E402
from dispyscheduler.wire import messages as m  # noqa: E402

HANDSHAKE_TIMEOUT = 30.0
RESULT_NONE = pickle.dumps(None, protocol=pickle.HIGHEST_PROTOCOL)
PLATFORM = platform.platform()

MIXED_CPUS = (1, 2, 4, 8, 16)
GIB = 1 << 30


def node_size(index, mixed):
    """What node ``index`` has for jobs, as an ``Offer``: one CPU and nothing else, or with
    ``mixed``, by its index: CPUs from ``MIXED_CPUS`` in turn; memory 4, 8, 16, 32 or 64 GiB,
    changing every five nodes (so each size of CPUs meets each size of memory within 25
    nodes); one GPU on nodes 3, 13, 23, ... (8 CPUs), two on nodes 6, 16, 26, ... (2 CPUs);
    ``licence=2`` on nodes 1, 5, 9, ... Deterministic: the same nodes on every run."""
    if not mixed:
        return Offer(1)
    gpus = {3: 1, 6: 2}.get(index % 10, 0)
    named = {'licence': 2} if index % 4 == 1 else {}
    return Offer(MIXED_CPUS[index % len(MIXED_CPUS)], (4 * GIB) << ((index // 5) % 5), gpus,
                 named)


class Simulator:
    def __init__(self, options):
        self.options = options
        self.budget = 0  # jobs still to answer: 0 while held, None when open for good
        self.held = []  # (node, jid, cid) received while the gate was closed
        self.nodes = []
        self.linked = 0
        self.lost = 0
        self.received = 0  # 'job' messages
        self.larger = 0  # of which for jobs that need more than one CPU (``Job.need``)
        self.done = 0  # 'job_done' sent
        self.acked = 0  # job ids acknowledged by the scheduler ('result_ack')
        self.computes = 0
        self.pulse_interval = None
        self.quit = gevent.event.Event()
        self.handshakes = gevent.lock.BoundedSemaphore(options.concurrency)

    def say(self, line):
        sys.stdout.write(line + '\n')
        sys.stdout.flush()

    # links

    def connect_all(self):
        """Open every node's link, at most ``--concurrency`` handshakes at a time, each from
        one of the ``--sources`` loopback addresses in turn."""
        for index in range(self.options.nodes):
            node = SimNode(self, index)
            self.nodes.append(node)
            gevent.spawn(node.run)
        deadline = time.monotonic() + self.options.connect_timeout
        while self.linked + self.lost < self.options.nodes:
            if time.monotonic() > deadline or self.quit.is_set():
                break
            gevent.sleep(0.05)
        if self.linked == self.options.nodes:
            self.say('READY %d' % self.linked)
        else:
            self.say('FAILED %d of %d links up, %d failed (see stderr)'
                     % (self.linked, self.options.nodes, self.lost))

    def pulse_loop(self):
        """Every pulse interval, a pulse on every link, spread over the interval."""
        while not self.quit.is_set():
            interval = self.pulse_interval or 10.0
            step = interval / max(1, len(self.nodes))
            for node in list(self.nodes):
                if node.link is not None and not node.link.closed:
                    node.link.send(m.Pulse(busy=1 if node.held else 0))
                gevent.sleep(step)

    # jobs

    def finished(self, jid, status=FINISHED, exception=None):
        now = time.time()
        self.done += 1
        return m.JobDone(jid=jid, status=status,
                         result=RESULT_NONE if status == FINISHED else None,
                         exception=exception, stdout='', stderr='', start_time=now,
                         end_time=now)

    def take(self):
        """Whether a job may be answered now (and count it against the budget)."""
        if self.budget is None:
            return True
        if self.budget > 0:
            self.budget -= 1
            return True
        return False

    def open_gate(self, budget):
        """Answer kept jobs, oldest first, then new ones as they come, ``budget`` of them in
        all (None: every one, for good). Returns how many kept jobs were answered now."""
        count = len(self.held) if budget is None else min(budget, len(self.held))
        answered, self.held = self.held[:count], self.held[count:]
        self.budget = None if budget is None else budget - count
        for node, jid, _ in answered:
            node.held.discard(jid)
            if not node.link.closed:
                node.link.send(self.finished(jid))
        return count

    # control

    def control(self):
        stdin = FileObjectPosix(sys.stdin.fileno(), 'rb', close=False)
        while True:
            line = stdin.readline()
            if not line:
                break
            command = line.decode(errors='replace').strip()
            if command == 'hold':
                self.budget = 0
                self.say('OK hold')
            elif command.split()[:1] == ['go']:
                budget = command.split()[1:]
                self.say('OK go %d' % self.open_gate(int(budget[0]) if budget else None))
            elif command == 'count':
                self.say('COUNT links=%d lost=%d received=%d larger=%d done=%d acked=%d '
                         'held=%d computes=%d budget=%d' % (
                             self.linked, self.lost, self.received, self.larger, self.done,
                             self.acked, len(self.held), self.computes,
                             -1 if self.budget is None else self.budget))
            elif command == 'quit':
                break
            elif command:
                self.say('ERROR unknown command %r' % command)
        self.quit.set()


class SimNode:
    def __init__(self, simulator, index):
        self.simulator = simulator
        self.index = index
        options = simulator.options
        self.source = options.sources[index % len(options.sources)]
        self.port = options.base_port + index
        self.offer = node_size(index, options.mixed)
        self.link = None
        self.held = set()

    def run(self):
        sim = self.simulator
        try:
            with sim.handshakes:
                link, welcome = self.connect()
        except BaseException as exc:  # noqa: B902 - gevent.Timeout is a BaseException
            sim.lost += 1
            sys.stderr.write('node %d: cannot link: %r\n' % (self.index, exc))
            return
        sim.pulse_interval = welcome.pulse_interval
        self.link = link
        sim.linked += 1
        writer = gevent.spawn(link.run_writer)
        try:
            link.run_reader(self.on_message)
        except Exception as exc:
            sys.stderr.write('node %d: link failed: %r\n' % (self.index, exc))
        finally:
            writer.kill(block=False)
            if not sim.quit.is_set():
                sim.lost += 1
                sim.linked -= 1

    def connect(self):
        """Connect from this node's source address and authenticate as a node, as
        ``dispynode`` does; returns ``(link, welcome)``."""
        options = self.simulator.options
        sock = socket.create_connection((options.host, options.port), 10.0, (self.source, 0))
        try:
            sock.settimeout(None)
            set_nodelay(sock)
            with gevent.Timeout(HANDSHAKE_TIMEOUT):
                link = HubLink(sock, '%s:%s' % (options.host, options.port))
                deadline = time.monotonic() + HANDSHAKE_TIMEOUT
                handshake(link, options.secret, 'node', 'scheduler', initiator=True,
                          deadline=deadline)
                link.send_now(m.NodeInfo(name='sim-%d' % self.index, ip_addr=self.source,
                                         port=self.port, cpus=self.offer.cpus,
                                         platform=PLATFORM, jobs=[], avail=None,
                                         resources=self.offer.to_wire()
                                         if options.mixed else []))
                welcome = link.expect(m.Welcome, deadline)
        except BaseException:
            sock.close()
            raise
        return link, welcome

    def on_message(self, message):
        sim = self.simulator
        kind = type(message)
        if kind is m.Job:
            sim.received += 1
            if message.need:
                sim.larger += 1
            if sim.take():
                self.link.send(sim.finished(message.jid))
            else:
                self.held.add(message.jid)
                sim.held.append((self, message.jid, message.cid))
        elif kind is m.ResultAck:
            sim.acked += len(message.ids)
        elif kind is m.Compute:
            sim.computes += 1
            self.link.send(m.ComputeReady(cid=message.cid))
        elif kind is m.CancelJob:
            jid = message.jid
            if jid in self.held:  # not answered yet: it ends Cancelled, as on a real node
                self.held.discard(jid)
                sim.held = [entry for entry in sim.held if entry[1] != jid]
                self.link.send(sim.finished(jid, CANCELLED, 'job was cancelled'))
        elif kind is m.Uninstall:
            cid = message.cid
            dropped = [entry for entry in sim.held if entry[0] is self and entry[2] == cid]
            if dropped:  # a real node drops the jobs of a computation it uninstalls
                sim.held = [entry for entry in sim.held
                            if not (entry[0] is self and entry[2] == cid)]
                for entry in dropped:
                    self.held.discard(entry[1])
        # 'welcome' (only during the handshake) and 'compute_file' need nothing here


def address_range(text):
    """'127.0.0.10-29' -> ['127.0.0.10', ..., '127.0.0.29']; '127.0.0.5' -> ['127.0.0.5']."""
    if '-' not in text:
        return [text]
    first, last = text.rsplit('-', 1)
    prefix, start = first.rsplit('.', 1)
    return ['%s.%d' % (prefix, n) for n in range(int(start), int(last) + 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, required=True, help="the scheduler's node port")
    parser.add_argument('--secret', required=True, help="the scheduler's --node_secret")
    parser.add_argument('--nodes', type=int, default=1000)
    parser.add_argument('--base_port', type=int, default=20000,
                        help='node i announces port BASE_PORT + i (its identity: ip:port)')
    parser.add_argument('--sources', type=address_range, default=address_range('127.0.0.10-29'),
                        help='loopback source addresses, used in turn (default %(default)s)')
    parser.add_argument('--mixed', action='store_true',
                        help='nodes of mixed sizes (CPUs, memory, GPUs, licence=2; see '
                             'node_size) instead of one CPU each')
    parser.add_argument('--concurrency', type=int, default=50,
                        help='handshakes in progress at once')
    parser.add_argument('--connect_timeout', type=float, default=120.0)
    parser.add_argument('--max_seconds', type=float, default=1800.0,
                        help='exit after this long whatever happens')
    options = parser.parse_args()
    for address in [options.host] + options.sources:
        if not address.startswith('127.'):
            parser.error('loopback addresses only: %s' % address)
    sim = Simulator(options)
    gevent.spawn(sim.control)
    gevent.spawn(sim.connect_all)
    gevent.spawn(sim.pulse_loop)
    sim.quit.wait(options.max_seconds)
    for node in sim.nodes:
        if node.link is not None:
            node.link.close()
    gevent.sleep(0.2)
    sim.say('BYE')
    sys.stdout.flush()
    os._exit(0)


if __name__ == '__main__':
    main()
