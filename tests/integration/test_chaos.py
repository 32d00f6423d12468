"""The chaos soak: a scheduler, three nodes and several user programs, each its own process on
loopback, killed (``kill -9``), frozen (SIGSTOP) and stopped (SIGTERM) at random, and started
again, while the programs submit jobs; at the end every job has Finished exactly once with its
result, and no process is left.

``CHAOS_SECONDS`` (default 120) bounds the soak: the chaos lasts all of it but ``MARGIN``
seconds (starting, and the jobs the programs submit last). ``CHAOS_SEED`` (default below)
seeds every random choice (events, their targets and delays, the programs' pace); it is printed
at the start and named in every failure. A replay makes the same choices, though not at the
same instants of the work, which races with them.

The programs (``chaos_client.py``) check their own jobs (status, result, and that the callback
saw one final status for each) and print a JSON summary. A program killed by the chaos is
replaced by another, which collects its jobs with ``recover_jobs``; the dead one's journal says
which jobs the scheduler had saved and which it had seen end, and each of those must be in the
journal or the recovered jobs, Finished with its result.
"""

import bisect
import collections
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time

from daemons import CLUSTER_SECRET, REPO, die_with_parent, session_members

from dispyscheduler import DispyJob

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_PROGRAM = os.path.join(HERE, 'chaos_client.py')
SEED = int(os.environ.get('CHAOS_SEED', '20260117'))
SECONDS = float(os.environ.get('CHAOS_SECONDS', '120'))
MARGIN = 10.0
"""Seconds of ``CHAOS_SECONDS`` without chaos: starting the daemons, the last jobs."""
NODES = ('127.0.0.2', '127.0.0.3', '127.0.0.4')
CPUS = 2
CLIENTS = 4
JOBS_PER_SECOND = 8
"""Jobs each program submits per second of chaos (a job sleeps 0-50 ms)."""
MAX_JOBS = 5000
"""Most jobs one program submits, however long the soak."""
MAX_CLIENT_KILLS = 2
KILL_UNDER_WAY = 5
"""A program is killed once it has this many jobs saved by the scheduler whose ends it has not
seen (so that recover_jobs has some to collect), or after ``KILL_WAIT`` seconds."""
KILL_WAIT = 5.0
EVENT_GAP = (1.0, 5.0)
"""Seconds between two chaos events."""
PRESUMED_DEAD = 5.0
"""Seconds a node may be silent before the scheduler presumes it dead: 5 missed pulses of
``--pulse_interval 1`` (tests/daemons.py starts the scheduler so)."""
MAX_NODE_LOSSES = 1000
"""``--max_node_losses``: nodes are killed at random here, and a job that ran on three of
them did not kill them; 1000 is never reached, so a job Abandoned is a real failure."""
START_TIMEOUT = 60.0
"""Seconds a scheduler started again has to say it serves (its state loaded)."""
STOP_TIMEOUT = 60.0
"""Seconds a daemon told to stop (SIGTERM) has to exit (a node lets its running jobs finish
for up to 30 s)."""
CONNECT_TIMEOUT = 120.0
"""Seconds a program keeps trying to reach a scheduler that is down to create its cluster."""
DRAIN_TIMEOUT = 300.0
"""Seconds the programs have, after the chaos, to get their jobs and exit."""
FINISHED = DispyJob.Finished
SCOPES = {'daemon': 'the daemon alone', 'group': 'its process group',
          'session': 'all its processes'}
"""What of a node is killed or frozen: the daemon; its process group (the daemon and its
computations' setup processes: each worker process leads a group of its own); or every process
of its session (the whole host, as if it crashed or froze)."""


def expected(n, salt):
    """The result of job ``n`` of a program with ``salt`` (chaos_client.compute)."""
    return n * n + salt


class Client:
    """A chaos_client.py process; its output goes to files (a pipe nobody reads while the
    chaos runs could fill and block it)."""

    def __init__(self, directory, mode, name, config):
        self.mode, self.name, self.config = mode, name, config
        self.out_path = os.path.join(directory, name + '.out')
        self.err_path = os.path.join(directory, name + '.err')
        self.doomed = False  # chosen to be killed
        self.killed = False
        self.journal = Journal(config.get('journal'))
        self.recoverer = None  # the Client collecting this one's jobs once it is killed
        with open(self.out_path, 'wb') as out, open(self.err_path, 'wb') as err:
            self.process = subprocess.Popen(
                [sys.executable, CLIENT_PROGRAM, mode, json.dumps(config)], stdout=out,
                stderr=err, stdin=subprocess.DEVNULL, cwd=directory,
                env=dict(os.environ, PYTHONPATH=REPO), start_new_session=True,
                preexec_fn=die_with_parent)

    @property
    def pid(self):
        return self.process.pid

    def alive(self):
        return self.process.poll() is None

    def kill(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def summary(self):
        """The JSON line the program printed last, or None."""
        with open(self.out_path, errors='replace') as handle:
            lines = [line for line in handle.read().splitlines() if line.startswith('{')]
        return json.loads(lines[-1]) if lines else None

    def report(self):
        """What to show of this program in a failure."""
        with open(self.out_path, errors='replace') as handle:
            out = handle.read()
        with open(self.err_path, errors='replace') as handle:
            err = handle.read()
        return '%s (pid %d, exit status %s)\nstdout: %s\nstderr (end): %s' % (
            self.name, self.pid, self.process.returncode, out[-2000:], err[-3000:])


class Journal:
    """A program's journal (chaos_client.py), read as it grows."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.saved, self.ended, self.closing = set(), collections.Counter(), False
        self.records = []

    def read(self):
        """Take in the lines written since the last read (not a last line cut short)."""
        if self.path is None or not os.path.exists(self.path):
            return
        with open(self.path, 'rb') as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[:data.rfind(b'\n') + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            record = json.loads(line)
            self.records.append(record)
            if 'saved' in record:
                self.saved.update(record['saved'])
            elif 'end' in record:
                self.ended[record['end']] += 1
            elif 'closing' in record:
                self.closing = True

    def under_way(self):
        """Jobs saved by the scheduler whose ends the program has not seen yet."""
        self.read()
        return len(self.saved - set(self.ended))


class Chaos:
    """The daemons and programs of the soak, and the events that befall them."""

    def __init__(self, daemons, directory, seed, seconds):
        self.daemons = daemons
        self.directory = directory
        self.rng = random.Random(seed)
        self.seed = seed
        self.replay = 'chaos seed %d (replay with CHAOS_SEED=%d CHAOS_SECONDS=%g)' % (
            seed, seed, seconds)
        self.window = max(10.0, seconds - MARGIN)
        self.started = time.monotonic()
        self.nodes = {}  # address -> the Daemon of its current incarnation
        self.disturbed = set()  # addresses of nodes dead, frozen or stopping
        self.frozen = {}  # address -> (scope, PIDs) of what of the node is frozen
        self.scheduler_busy = False  # down, stopping or frozen
        self.scheduler_frozen = False
        self.agenda = []  # (when, sequence number, what, action): what comes of an event
        self.sequence = itertools.count()
        self.incarnations = collections.Counter()
        self.clients = []
        self.client_kills = 0
        self.events = collections.Counter()

    # bookkeeping

    def elapsed(self):
        return time.monotonic() - self.started

    def note(self, text):
        print('[%7.2fs] %s' % (self.elapsed(), text), flush=True)

    def fail(self, message):
        raise AssertionError('%s: %s' % (self.replay, message))

    def check(self, condition, message):
        if not condition:
            self.fail(message)

    def later(self, delay, what, action):
        self.agenda.append((time.monotonic() + delay, next(self.sequence), what, action))
        self.agenda.sort()

    def run_due(self):
        while self.agenda and self.agenda[0][0] <= time.monotonic():
            _, _, what, action = self.agenda.pop(0)
            action()

    def retire(self, daemon):
        """Keep the log of a node's incarnation that ended: the next one writes a log of
        the same name."""
        base = daemon.name
        self.incarnations[base] += 1
        path = '%s.%d.log' % (daemon.log_path[:-len('.log')], self.incarnations[base])
        os.rename(daemon.log_path, path)
        daemon.log_path = path
        daemon.name = '%s.%d' % (base, self.incarnations[base])

    def log_tail(self, daemon):
        return '%s log (end):\n%s' % (daemon.name, daemon.log()[-3000:])

    # the daemons

    def start_scheduler(self):
        self.incarnations['scheduler'] += 1
        count = self.incarnations['scheduler']
        scheduler = self.daemons.start_scheduler(
            '--max_node_losses', str(MAX_NODE_LOSSES), nodes=NODES, wait=False,
            name='scheduler' if count == 1 else 'scheduler-%d' % count)
        scheduler.wait_log('serving nodes', timeout=START_TIMEOUT)
        return scheduler

    def restart_scheduler(self):
        scheduler = self.start_scheduler()
        self.scheduler_busy = False
        self.note('scheduler started again (%s, pid %d)' % (scheduler.name, scheduler.pid))

    def start_node(self, address, wait=False):
        self.nodes[address] = self.daemons.start_node(address, cpus=CPUS, wait=wait)
        self.disturbed.discard(address)

    def restart_node(self, address):
        self.start_node(address)
        self.note('node %s started again (pid %d)' % (address, self.nodes[address].pid))

    def when_stopped(self, daemon, deadline, then):
        """Once ``daemon``, told to stop, has exited (with status 0), ``then()``."""
        if daemon.alive():
            if time.monotonic() > deadline:
                daemon.kill()
                self.fail('%s did not stop within %gs of SIGTERM\n%s'
                          % (daemon.name, STOP_TIMEOUT, self.log_tail(daemon)))
            self.later(0.1, 'wait for %s to stop' % (daemon.name,),
                       lambda: self.when_stopped(daemon, deadline, then))
            return
        self.check(daemon.process.returncode == 0, '%s stopped by SIGTERM exited with status %s'
                   '\n%s' % (daemon.name, daemon.process.returncode, self.log_tail(daemon)))
        then()

    def check_health(self):
        """Fail at once if a daemon died that the chaos did not kill."""
        for address, node in self.nodes.items():
            if address not in self.disturbed and not node.alive():
                self.fail('node %s died by itself (exit status %s)\n%s'
                          % (address, node.process.returncode, self.log_tail(node)))
        scheduler = self.daemons.scheduler
        if not self.scheduler_busy and not scheduler.alive():
            self.fail('the scheduler died by itself (exit status %s)\n%s'
                      % (scheduler.process.returncode, self.log_tail(scheduler)))

    # the programs

    def start_client(self, spread):
        index = len([client for client in self.clients if client.mode == 'work']) + 1
        name = 'client-%d' % index
        count = max(20, min(MAX_JOBS, int(JOBS_PER_SECOND * spread)))
        config = dict(port=self.daemons.scheduler_port, secret=CLUSTER_SECRET, name=name,
                      count=count, salt=1000 * index + 7, spread=spread,
                      seed=self.seed * 100 + index, connect_timeout=CONNECT_TIMEOUT,
                      journal=os.path.join(self.directory, name + '.journal'),
                      recover_file=os.path.join(self.directory, name + '.recover.json'))
        client = Client(self.directory, 'work', name, config)
        self.clients.append(client)
        self.note('%s started (pid %d): %d jobs over %.0fs' % (name, client.pid, count, spread))
        return client

    def start_recoverer(self, dead):
        config = dict(secret=CLUSTER_SECRET, recover_file=dead.config['recover_file'],
                      connect_timeout=CONNECT_TIMEOUT)
        dead.recoverer = Client(self.directory, 'recover', dead.name + '-recoverer', config)
        self.clients.append(dead.recoverer)
        self.note('%s started (pid %d)' % (dead.recoverer.name, dead.recoverer.pid))

    # events

    def event(self):
        """One chaos event. Every event draws the same random numbers whatever it turns out
        to be, so that the choices of a replay follow the seed even where the state of the
        processes differs."""
        kind_roll, target_roll, scope_roll = self.rng.random(), self.rng.random(), self.rng.random()
        delay_roll = self.rng.random()
        calm = sorted(address for address in NODES if address not in self.disturbed)
        killable = [client for client in self.clients
                    if client.mode == 'work' and not client.doomed and client.alive()]
        options = []
        if len(calm) >= 2:  # one node stays up whatever happens
            options += [(3, self.kill_node), (2, self.freeze_node_past_death),
                        (1, self.freeze_node_briefly), (1, self.stop_node)]
        if not self.scheduler_busy:
            options += [(2, self.kill_scheduler), (1, self.stop_scheduler),
                        (1, self.freeze_scheduler)]
        if killable and self.client_kills < MAX_CLIENT_KILLS:
            options += [(1, self.kill_client)]
        if not options:
            return
        bounds = list(itertools.accumulate(weight for weight, _ in options))
        action = options[bisect.bisect_right(bounds, kind_roll * bounds[-1])][1]
        self.events[action.__name__] += 1
        action(calm=calm, killable=killable, target_roll=target_roll,
               scope=list(SCOPES)[int(scope_roll * len(SCOPES))], delay_roll=delay_roll)

    def signal_node(self, node, signum, scope, pids=None):
        """Send ``signum`` to the part of ``node`` that ``scope`` names (SCOPES): to
        ``pids`` if given, else to the processes that are that part now, whose PIDs it
        returns (None for a process group, signalled as one)."""
        if scope == 'group':
            try:
                os.killpg(node.pid, signum)
            except ProcessLookupError:
                pass
            return None
        if pids is None:
            pids = [node.pid] if scope == 'daemon' else session_members(node.pid)
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return pids

    def kill_node(self, calm, target_roll, scope, delay_roll, **_):
        """kill -9 of a node: of the daemon alone (its computations' processes must then end
        by themselves), of its process group, or of all its processes (a host that crashed);
        back after a short while."""
        address = calm[int(target_roll * len(calm))]
        node = self.nodes[address]
        self.disturbed.add(address)
        self.signal_node(node, signal.SIGKILL, scope)
        node.process.wait()
        for _ in range(10) if scope == 'session' else ():  # any forked meanwhile
            if not self.signal_node(node, signal.SIGKILL, scope):
                break
        self.retire(node)
        delay = 0.2 + 2.8 * delay_roll
        self.note('kill -9 node %s (%s); back in %.1fs' % (address, SCOPES[scope], delay))
        self.later(delay, 'start node %s' % address, lambda: self.restart_node(address))

    def freeze(self, address, scope, seconds):
        node = self.nodes[address]
        self.disturbed.add(address)
        self.frozen[address] = (scope, self.signal_node(node, signal.SIGSTOP, scope))
        self.note('SIGSTOP node %s (%s) for %.1fs' % (address, SCOPES[scope], seconds))
        self.later(seconds, 'thaw node %s' % address, lambda: self.thaw(address))

    def thaw(self, address):
        scope, pids = self.frozen.pop(address)
        self.signal_node(self.nodes[address], signal.SIGCONT, scope, pids)
        self.disturbed.discard(address)
        self.note('SIGCONT node %s' % address)

    def freeze_node_past_death(self, calm, target_roll, scope, delay_roll, **_):
        """Frozen for longer than it takes to be presumed dead: its jobs run elsewhere, and
        it comes back holding them."""
        self.freeze(calm[int(target_roll * len(calm))], scope,
                    PRESUMED_DEAD + 1 + 3 * delay_roll)

    def freeze_node_briefly(self, calm, target_roll, scope, delay_roll, **_):
        """Frozen for less than it takes to be presumed dead."""
        self.freeze(calm[int(target_roll * len(calm))], scope, 0.5 + 2.5 * delay_roll)

    def stop_node(self, calm, target_roll, delay_roll, **_):
        """SIGTERM: the node hands back the jobs it has not started and ends; started again
        once it has."""
        address = calm[int(target_roll * len(calm))]
        node = self.nodes[address]
        self.disturbed.add(address)
        node.process.send_signal(signal.SIGTERM)
        delay = 0.2 + 1.8 * delay_roll
        self.note('SIGTERM node %s; back %.1fs after it exits' % (address, delay))

        def stopped():
            self.retire(node)
            self.note('node %s stopped' % address)
            self.later(delay, 'start node %s' % address, lambda: self.restart_node(address))
        self.when_stopped(node, time.monotonic() + STOP_TIMEOUT, stopped)

    def kill_scheduler(self, delay_roll, **_):
        """kill -9 of the scheduler; started again with the same state and ports."""
        self.scheduler_busy = True
        self.daemons.scheduler.kill()
        delay = 2 * delay_roll
        self.note('kill -9 the scheduler; back in %.1fs' % delay)
        self.later(delay, 'start the scheduler', self.restart_scheduler)

    def stop_scheduler(self, delay_roll, **_):
        """SIGTERM of the scheduler; started again once it has exited."""
        self.scheduler_busy = True
        scheduler = self.daemons.scheduler
        scheduler.process.send_signal(signal.SIGTERM)
        delay = 2 * delay_roll
        self.note('SIGTERM the scheduler; back %.1fs after it exits' % delay)

        def stopped():
            self.note('the scheduler stopped')
            self.later(delay, 'start the scheduler', self.restart_scheduler)
        self.when_stopped(scheduler, time.monotonic() + STOP_TIMEOUT, stopped)

    def freeze_scheduler(self, delay_roll, **_):
        """SIGSTOP of the scheduler, for up to longer than nodes take to be presumed dead
        (their pulses wait unread meanwhile)."""
        self.scheduler_busy = self.scheduler_frozen = True
        scheduler = self.daemons.scheduler
        os.kill(scheduler.pid, signal.SIGSTOP)
        seconds = 1 + 7 * delay_roll
        self.note('SIGSTOP the scheduler for %.1fs' % seconds)

        def thaw():
            os.kill(scheduler.pid, signal.SIGCONT)
            self.scheduler_busy = self.scheduler_frozen = False
            self.note('SIGCONT the scheduler')
        self.later(seconds, 'thaw the scheduler', thaw)

    def kill_client(self, killable, target_roll, **_):
        """kill -9 of a program, as soon as it has jobs the scheduler saved and it has not
        seen end (within a few seconds); another collects its jobs (recover_jobs), and a new
        one takes its place for the rest of the chaos."""
        client = killable[int(target_roll * len(killable))]
        self.client_kills += 1
        client.doomed = True
        deadline = time.monotonic() + KILL_WAIT
        self.note('%s to be killed when it has jobs under way' % client.name)

        def attempt():
            if client.alive() and time.monotonic() < deadline and \
                    client.journal.under_way() < KILL_UNDER_WAY:
                self.later(0.01, 'kill %s' % client.name, attempt)
                return
            under_way = client.journal.under_way()
            client.kill()
            if client.process.returncode != -signal.SIGKILL:
                self.note('%s ended by itself before it could be killed' % client.name)
                return
            client.killed = True
            self.note('kill -9 %s (pid %d), %d jobs under way' % (client.name, client.pid,
                                                                  under_way))
            self.start_recoverer(client)
            remaining = self.window - self.elapsed()
            if remaining > 5:
                self.start_client(remaining)
        attempt()

    # the soak

    def run(self):
        print(self.replay, flush=True)
        self.note('chaos for %.0fs' % self.window)
        self.start_scheduler()
        for address in NODES:
            self.start_node(address, wait=True)
        for _ in range(CLIENTS):
            self.start_client(self.window)
        end = self.started + self.window
        next_event = time.monotonic() + self.rng.uniform(*EVENT_GAP)
        while time.monotonic() < end:
            self.run_due()
            self.check_health()
            if time.monotonic() >= next_event:
                self.event()
                next_event = time.monotonic() + self.rng.uniform(*EVENT_GAP)
            time.sleep(0.02)  # the chaos's clock: what is due runs within 20 ms
        self.note('chaos over (%s); bringing everything back' % (dict(self.events),))
        while self.agenda:
            self.run_due()
            self.check_health()
            time.sleep(0.02)
        for address, node in self.nodes.items():
            self.check(node.alive() and address not in self.frozen,
                       'node %s is not running after the chaos' % address)
        self.check(self.daemons.scheduler.alive() and not self.scheduler_frozen,
                   'the scheduler is not running after the chaos')
        self.drain()
        self.verify()

    def drain(self):
        """Wait for every program to exit (its jobs all ended), for DRAIN_TIMEOUT at most."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for client in self.clients:
            while client.alive() and time.monotonic() < deadline:
                self.check_health()
                try:
                    client.process.wait(1)
                except subprocess.TimeoutExpired:
                    pass
        hung = [client for client in self.clients if client.alive()]
        if hung:
            for client in hung:
                client.kill()
            self.fail('%d programs had not ended %gs after the chaos:\n%s' % (
                len(hung), DRAIN_TIMEOUT, '\n'.join(client.report() for client in hung)))
        self.note('every program ended')
        for client in self.clients:
            left = session_members(client.pid)
            self.check(not left, 'processes of %s left running: %s' % (client.name, left))

    def verify(self):
        """Every program's account of its jobs; all that is wrong, in one failure."""
        total, failures = 0, []
        for client in self.clients:
            if client.mode == 'recover':
                continue
            if client.killed:
                try:
                    total += self.verify_killed(client)
                except AssertionError as exc:
                    failures.append(str(exc).replace(self.replay + ': ', '', 1))
                continue
            summary = client.summary()
            if client.process.returncode != 0 or summary is None:
                failures.append('program failed:\n%s' % client.report())
            elif summary['problem_count'] or \
                    not summary['jobs'] == summary['finished'] == client.config['count']:
                failures.append('program %s: %s' % (client.name, summary))
            else:
                total += summary['jobs']
        self.check(not failures, '\n'.join(failures))
        self.note('%d jobs accounted for, each Finished once with its result; events: %s'
                  % (total, dict(self.events)))

    def verify_killed(self, dead):
        """The jobs of a program killed by the chaos: each one the scheduler had saved is in
        its journal (it saw the job end) or among the jobs recovered, Finished with its
        result; nothing recovered twice or that it never submitted."""
        recoverer = dead.recoverer
        summary = recoverer.summary()
        self.check(recoverer.process.returncode == 0 and summary is not None,
                   'recovering the jobs of %s failed:\n%s' % (dead.name, recoverer.report()))
        count, salt = dead.config['count'], dead.config['salt']
        journal = dead.journal
        journal.read()
        saved, ended, closing = journal.saved, journal.ended, journal.closing
        problems = []
        for record in journal.records:
            n = record.get('end')
            if n is not None and (record['status'] != FINISHED or
                                  record['result'] != expected(n, salt)):
                problems.append('job %s ended in the killed program as %s' % (n, record))
        if summary['recover_file'] != 'found':
            # killed before it had written its recovery file (nothing of it was submitted),
            # or after it had closed its cluster and removed the file
            self.check(not saved or closing, '%s: %d jobs saved but no recovery file (%s)'
                       % (dead.name, len(saved), summary['recover_file']))
        if summary['refused'] is not None:  # killed after closing its cluster
            self.check(closing, '%s: recover_jobs refused (%s) though the cluster was never '
                       'closed' % (dead.name, summary['refused']))
        recovered = collections.Counter()
        for n, status, result, exception, ip_addr, started, ended_at in summary['recovered']:
            recovered[n] += 1
            if status != FINISHED or result != expected(n, salt) or not 0 <= n < count:
                problems.append('job %s recovered as status %s, result %r (expected %r), '
                                'exception %r, on node %s, from %s to %s'
                                % (n, status, result, expected(n, salt), exception, ip_addr,
                                   started, ended_at))
        problems += ['job %s recovered %d times' % (n, times)
                     for n, times in recovered.items() if times > 1]
        problems += ['job %s ended %d times in the killed program' % (n, times)
                     for n, times in ended.items() if times > 1]
        lost = saved - set(ended) - set(recovered)
        if lost:
            problems.append('%d jobs saved by the scheduler neither seen to end by the killed '
                            'program nor recovered: %s' % (len(lost), sorted(lost)[:30]))
        if summary.get('recover_file_left'):
            problems.append('the recovery file is still there after recover_jobs')
        self.check(not problems, 'jobs of the killed %s (%d saved, %d seen to end, %d '
                   'recovered): %s\n%s' % (dead.name, len(saved), len(ended), len(recovered),
                                           problems[:30], recoverer.report()))
        self.note('%s: %d jobs saved, %d seen to end before it was killed, %d recovered'
                  % (dead.name, len(saved), len(ended), len(recovered)))
        return len(set(ended) | set(recovered))

    def release(self):
        """Whatever happened: nothing left frozen, no program left running."""
        for address in list(self.frozen):
            self.thaw(address)
        if self.scheduler_frozen:
            try:
                os.kill(self.daemons.scheduler.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for client in self.clients:
            client.kill()


def test_chaos_soak(daemons, tmp_path):
    """A scheduler, 3 nodes of 2 CPUs and 4 programs (more as killed ones are replaced);
    one chaos event every 1-5 s: a node killed and started again, frozen past being presumed
    dead or briefly (the daemon alone, its process group, or all its processes), or stopped
    and started again; the scheduler killed, stopped or frozen, and started again with the same
    state; a program killed and its jobs recovered by another. Then everything is brought
    back, and every job of every program must have Finished once, with its result."""
    chaos = Chaos(daemons, str(tmp_path), SEED, SECONDS)
    try:
        chaos.run()
    except AssertionError as exc:
        if chaos.replay in str(exc):
            raise
        raise AssertionError('%s: %s' % (chaos.replay, exc)) from exc
    finally:
        chaos.release()
