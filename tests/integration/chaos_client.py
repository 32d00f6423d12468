"""A user program of the chaos soak (test_chaos.py), run as a process of its own.

    chaos_client.py work CONFIG      submit jobs, wait for them all, check them
    chaos_client.py recover CONFIG   collect the jobs of a killed ``work`` with recover_jobs

CONFIG is a JSON object (see ``work`` and ``recover``). Each mode prints one JSON line on
stdout, its summary, and exits 0 only if it found nothing wrong.

``work`` writes a journal (one JSON object a line) so that the soak can account for the jobs
of a process it kills: ``{"saved": [ids]}`` once the scheduler has said it saved those
submissions (the client keeps a submission until then, so a job the process dies holding may
never have reached the scheduler), ``{"end": id, ...}`` for each job's end, written before the
client acknowledges the result to the scheduler (a result acknowledged is not given to
``recover_jobs``), and ``{"closing": true}`` before it closes its cluster.
"""

import collections
import json
import os
import random
import sys
import threading
import time

FINISHED = 11  # DispyJob.Finished
FINAL = (8, 9, 10, 11)  # Cancelled, Terminated, Abandoned, Finished
CONNECT_RETRY = 0.5  # seconds between attempts while the scheduler is down


def compute(n, salt):
    import random
    import time
    time.sleep(random.Random(n * 1000003 + salt).uniform(0, 0.05))
    return n * n + salt


def expected(n, salt):
    return n * n + salt


def stamp(when):
    """A time as the daemons' logs show it."""
    if when is None:
        return None
    return time.strftime('%H:%M:%S', time.localtime(when)) + ',%03d' % (when % 1 * 1000)


def log(message):
    sys.stderr.write('%s %s\n' % (time.strftime('%H:%M:%S'), message))
    sys.stderr.flush()


def connect(make, deadline):
    """``make()``, tried again while the scheduler cannot be reached (it is being restarted)
    until ``deadline``."""
    while True:
        try:
            return make()
        except (ConnectionError, OSError) as exc:
            if time.monotonic() > deadline:
                raise
            log('scheduler not reachable (%r); trying again' % (exc,))
            time.sleep(CONNECT_RETRY)


def work(config):
    """CONFIG: port, secret, name, count, salt, spread (seconds over which to submit), seed,
    journal, recover_file, connect_timeout."""
    from dispyscheduler import SharedJobCluster

    journal = open(config['journal'], 'a', buffering=1)
    journal_lock = threading.Lock()  # the main thread and whichever thread reads the link
    salt, count = config['salt'], config['count']

    def write(record):
        line = json.dumps(record, default=repr) + '\n'
        with journal_lock:
            journal.write(line)

    class JournaledCluster(SharedJobCluster):
        """Journals each job's end as the client takes it (``_end``), which comes before
        the client acknowledges the result to the scheduler (``_acknowledge``)."""

        def _end(self, uid, status, end, exception):
            job = self._jobs.get(uid)
            super()._end(uid, status, end, exception)
            if job is not None:
                write({'end': job.id, 'status': job.status, 'result': job.result,
                       'exception': job.exception, 'ip_addr': job.ip_addr,
                       'start_time': job.start_time, 'end_time': job.end_time})

    if not callable(getattr(SharedJobCluster, '_end', None)):  # what the journal relies on
        raise SystemExit('SharedJobCluster has no _end: chaos_client.py needs updating')

    final_seen = collections.Counter()  # job id -> final statuses the callback saw
    callback_status = {}

    def callback(job):
        if job.status in FINAL:
            final_seen[job.id] += 1
            callback_status[job.id] = job.status

    rng = random.Random(config['seed'])
    cluster = connect(lambda: JournaledCluster(
        compute, scheduler_node='127.0.0.1', scheduler_port=config['port'],
        secret=config['secret'], reentrant=True, callback=callback,
        recover_file=config['recover_file']),
        time.monotonic() + config['connect_timeout'])
    log('cluster %s created' % (cluster.cid,))
    if not (isinstance(getattr(cluster, '_jobs', None), dict)
            and isinstance(getattr(cluster, '_unsaved', None), dict)):
        raise SystemExit('SharedJobCluster has no _jobs or _unsaved: chaos_client.py needs '
                         'updating')
    jobs = []
    not_known_saved = []  # jobs submitted, not yet journaled as saved
    saved_lock = threading.Lock()
    submitted = threading.Event()

    def journal_saved():
        with saved_lock:
            unsaved = set(cluster._unsaved)
            saved = [job for job in not_known_saved if job._uid not in unsaved]
            if saved:
                write({'saved': [job.id for job in saved]})
                not_known_saved[:] = [job for job in not_known_saved if job._uid in unsaved]
            return not not_known_saved

    def saved_loop():  # every 10 ms, so that the journal soon says what the scheduler has
        while not (journal_saved() and submitted.is_set()):
            time.sleep(0.01)

    saver = threading.Thread(target=saved_loop, daemon=True)
    saver.start()
    started = time.monotonic()
    spread = config['spread']
    while len(jobs) < count:
        elapsed = time.monotonic() - started
        target = count if elapsed >= spread else int(count * elapsed / spread)
        if rng.random() < 0.1:  # now and then a burst, which queues for a while
            target += rng.randrange(10, 100)
        for n in range(len(jobs), min(target, count)):
            job = cluster.submit_job_id(n, n, salt)
            with saved_lock:
                jobs.append(job)
                not_known_saved.append(job)
        if jobs and rng.random() < 0.2:  # wait for a job now and then: this thread reads
            jobs[rng.randrange(len(jobs))](timeout=rng.uniform(0, 1))  # the link itself
        else:
            time.sleep(rng.uniform(0.05, 0.5))
    submitted.set()
    saver.join()
    log('all %d jobs submitted and saved' % (count,))
    cluster.wait()
    write({'closing': True})
    cluster.close()
    log('cluster %s closed' % (cluster.cid,))

    problems = []
    for n, job in enumerate(jobs):
        if job.status != FINISHED or job.result != expected(n, salt):
            problems.append('job %d: status %s, result %r (expected %r), exception %r, on '
                            'node %s, from %s to %s'
                            % (n, job.status, job.result, expected(n, salt), job.exception,
                               job.ip_addr, stamp(job.start_time), stamp(job.end_time)))
        if final_seen[n] != 1 or callback_status.get(n) != FINISHED:
            problems.append('job %d: the callback saw %d final statuses, the last %s'
                            % (n, final_seen[n], callback_status.get(n)))
    unknown = set(final_seen) - set(range(count))
    if unknown:
        problems.append('the callback saw jobs never submitted: %s' % (sorted(unknown)[:20],))
    if os.path.exists(config['recover_file']):
        problems.append('the recovery file is still there after close()')
    print(json.dumps({
        'name': config['name'], 'cid': cluster.cid, 'jobs': len(jobs),
        'finished': sum(job.status == FINISHED for job in jobs),
        'problem_count': len(problems), 'problems': problems[:30],
    }), flush=True)
    return 1 if problems else 0


def recover(config):
    """CONFIG: secret, recover_file, connect_timeout."""
    from dispyscheduler import recover_jobs
    from dispyscheduler.client.connection import Refused

    path = config['recover_file']
    summary = {'recover_file': None, 'recovered': [], 'refused': None}
    if os.path.exists(path):
        try:
            with open(path) as handle:
                json.load(handle)
        except ValueError:
            summary['recover_file'] = 'unreadable'  # killed while writing it
        else:
            summary['recover_file'] = 'found'
    if summary['recover_file'] == 'found':
        try:
            jobs = connect(lambda: recover_jobs(path, secret=config['secret']),
                           time.monotonic() + config['connect_timeout'])
        except Refused as exc:  # the cluster was closed (killed just after closing it)
            summary['refused'] = str(exc)
        else:
            summary['recovered'] = [[job.id, job.status, job.result, job.exception,
                                     job.ip_addr, stamp(job.start_time), stamp(job.end_time)]
                                    for job in jobs]
            summary['recover_file_left'] = os.path.exists(path)
            log('recovered %d jobs' % (len(jobs),))
    print(json.dumps(summary, default=repr), flush=True)
    return 0


if __name__ == '__main__':
    mode, config = sys.argv[1], json.loads(sys.argv[2])
    sys.exit({'work': work, 'recover': recover}[mode](config))
