"""Every port, interval, limit and protocol number of dispyscheduler, in one place.

Each default is a named constant with a docstring, so that the command line, the daemons and the
client all read the same value and a reader can see why it is what it is.
"""

import os
import tempfile

PROTOCOL_VERSION = 1
"""Wire protocol version carried in every hello; peers with another version are refused."""

SCHEDULER_NODE_PORT = 51347
"""``--port``: the scheduler's TCP port for node links and its UDP port for discovery."""

NODE_PORT = 51348
"""``--node_port``: the UDP port on which nodes listen for discovery pings."""

SCHEDULER_CLIENT_PORT = 51349
"""``--scheduler_port``: the scheduler's TCP port for clients (``SharedJobCluster``)."""

MAX_FRAME_SIZE = 64 * 1024 * 1024
"""Largest frame accepted on any link; the length prefix is checked against it before any
allocation, so a peer announcing 4 GB costs nothing but a closed connection."""

FRAME_MARGIN = 64 * 1024
"""Bytes of a job's message beyond its arguments and files, at most (its other fields, msgpack's
framing): ``submit()`` refuses a job whose arguments and files leave less of
``MAX_FRAME_SIZE``."""

MAX_DATAGRAM_SIZE = 1400
"""Largest discovery datagram sent or read; fits one Ethernet frame."""

HANDSHAKE_MAX_FRAME = 4096
"""Largest frame accepted before a peer has authenticated (a hello or a proof is tiny), so an
unauthenticated peer cannot make a daemon hold 64 MB per connection."""

MAX_UNAUTHENTICATED = 1024
"""Default ``--max_unauthenticated``: connections still in their handshake, overall; past it
the oldest of them is dropped for each new one."""

MAX_UNAUTHENTICATED_PER_SOURCE = 128
"""Default ``--max_unauthenticated_per_source``: connections still in their handshake from one
address; past it, new ones from there are closed at once."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a peer has to finish hello and authentication before it is dropped."""

CONNECT_TIMEOUT = 10.0
"""Seconds a TCP connect may take before it counts as failed."""

RECV_SIZE = 64 * 1024
"""Bytes asked of the kernel per read: enough for hundreds of small frames at once, and below
malloc's mmap threshold (128 KiB): a larger read buffer is mapped and unmapped on every read,
which costs more than the read itself (15-20 us against 3 us here)."""

BULK_RECV_SIZE = 320 * 1024
"""Most bytes asked per read while a large frame (a chunk of a file) is under way: the rest
of a chunk in one or two reads rather than five, still below the size from which a daemon's
buffers are mapped apart (``LARGE_BUFFER``)."""

PULSE_INTERVAL = 10.0
"""Default ``--pulse_interval``: seconds between a node's pulses to the scheduler."""

PULSE_INTERVAL_RANGE = (1.0, 600.0)
"""Allowed ``--pulse_interval`` values, as the seed document gives them."""

PULSES_MISSED_BEFORE_DEAD = 5
"""A node silent for this many pulse intervals is presumed dead (power off, partition)."""

PING_INTERVAL = 10.0
"""Default ``--ping_interval``: seconds between discovery pings while nodes may be missing."""

PING_INTERVAL_RANGE = (1.0, 1000.0)
"""Allowed ``--ping_interval`` values (as in dispy)."""

NAME_LOOKUP_TIMEOUT = 3.0
"""Seconds a host name (a cluster's ``nodes``, ``-n``) may take to resolve; one that takes
longer is taken as unresolvable, with a warning, so that a slow name service holds up no one
for long."""

MAX_NODE_NAMES = 32
"""Host names (not addresses or patterns) a cluster's ``nodes`` may hold: each is looked up
when the cluster is created, so a cluster naming hundreds of unknown hosts is refused at once
rather than keeping the scheduler busy with lookups."""

NO_NODE_PINGS = 3
"""Discovery rounds (``--ping_interval``) after which a client whose cluster no node has set up
is warned in its log, with the nodes the scheduler knows, so that a typo in ``nodes`` or a
missing node is seen at once instead of jobs waiting in silence."""

ZOMBIE_INTERVAL = 60.0
"""Default ``--zombie_interval`` in minutes: a cluster whose client is gone and that has
nothing running is cleaned up after this long; a node drops computations of a scheduler it has
not heard from for this long."""

IDLE_ORPHAN_PULSES = 10
"""Pulse intervals (100 s by default) after which a cluster whose client is gone and that has
nothing left to run frees its nodes (their worker processes end), if ``--zombie_interval`` is
not shorter; its results stay for ``recover_jobs``, and a client that comes back has it set up
again."""

MAX_DISPATCH_DEPTH = 8
"""Most jobs the scheduler keeps in flight per node CPU (one running, the rest waiting on the
node, so a worker never idles for a round trip between jobs). Each cluster gets a depth by how
long its jobs run (``policy.dispatch_depth``): deep for millisecond jobs, one for long ones,
which then never wait on a busy node while another is idle."""

RECONNECT_DELAY_RANGE = (0.1, 5.0)
"""Back-off (first, largest delay in seconds) for a node reconnecting to its scheduler."""

CLIENT_CLUSTER_TIMEOUT = 30.0
"""Seconds ``SharedJobCluster()`` waits for the scheduler to accept the computation."""

DEFAULT_DEST_PATH_PREFIX = os.path.join(tempfile.gettempdir(), 'dispyscheduler')
"""Default ``--dest_path_prefix``: where a daemon keeps computations' files."""

DEFAULT_NODE_DEST_PATH_PREFIX = os.path.join(tempfile.gettempdir(), 'dispynode')
"""Default ``--dest_path_prefix`` of a node: one directory per computation below it."""

MAX_FILE_SIZE = 10 * 1024 ** 3
"""Default ``--max_file_size`` in bytes (10 GiB): the largest file a daemon accepts (a
computation's ``depends``, a job's files, a result's ``dispy_send_file``); 0 means no limit.
dispy has none, so one mistaken ``depends`` could fill a shared disk."""

DISK_RESERVE = 256 * 1024 ** 2
"""Bytes a daemon keeps free on the disk of its ``--dest_path_prefix``: files whose announced
sizes would leave less are refused before any arrives."""

ACK_DELAY = 0.05
"""Seconds an acknowledgement may wait to travel with other traffic (a client's for results,
the scheduler's to nodes) before it is sent on its own: on a busy host every message is a
process to wake."""

ACK_BATCH = 256
"""Acknowledgements that are sent at once, without waiting for other traffic."""

STARTED_REPORT_DELAY = 0.002
"""A job that ends within this many seconds is not reported as started on its own: its end
says when it started, and the client shows Running and the end together. Three messages through
three processes saved, for the many jobs that take a millisecond."""

WORKER_START_TIMEOUT = 60.0
"""Seconds a node waits for a computation's worker host to load it and run ``setup``."""

# Job statuses, numbered as in dispy 4.x so that programs comparing them keep working; final
# statuses sort after the provisional ones.
CREATED = 5
RUNNING = 6
PROVISIONAL_RESULT = 7
CANCELLED = 8
TERMINATED = 9
ABANDONED = 10
FINISHED = 11
FINAL_STATUSES = frozenset((CANCELLED, TERMINATED, ABANDONED, FINISHED))
STATUS_NAMES = {CREATED: 'Created', RUNNING: 'Running', PROVISIONAL_RESULT: 'ProvisionalResult',
                CANCELLED: 'Cancelled', TERMINATED: 'Terminated', ABANDONED: 'Abandoned',
                FINISHED: 'Finished'}

MAX_JOB_OUTPUT = 2 * 1024 * 1024
"""Characters of a job's stdout and of its stderr kept; beyond that the output is cut and a note
says how much was dropped (a job printing 100 MB must not take the node down)."""

INLINE_RESULT_LIMIT = 1024 * 1024
"""A pickled result (or provisional result) up to this many bytes travels in the message that
reports it; a larger one is written to a file by the worker process and travels on its own, in
chunks, before that message (a ``PayloadPart`` stream): from the node to the scheduler, which
keeps it as a file until the client has it, and on to the client. Its size is bounded by disk
only; with the job's output (at most ``MAX_JOB_OUTPUT`` characters each of stdout and stderr,
up to 4 bytes each) every message stays below the frame limit."""

FILE_CHUNK_SIZE = 256 * 1024
"""Bytes per frame when files, large arguments and large results travel. Below
``LARGE_BUFFER``: each chunk's buffers (read, encoded, received, decoded) then come from the
heap and are reused; at 1 MiB each was a mapping of its own, mapped, faulted in page by page
and unmapped again, which cost the scheduler and the nodes twice the CPU of the copies
themselves (10 MB jobs: 180 against 320 MB/s)."""

NODE_DISPY_MODULES = ('os', 'sys', 'time', 'stat', 'socket', 'multiprocessing', 'threading',
                      'subprocess', 'signal', 'traceback', 'logging', 'tempfile', 'shutil', 'glob',
                      'functools', 'inspect', 'pickle', 'io')
"""Modules that dispynode's globals give computations (dispy programs use ``os`` and ``sys``
without importing them), added to a computation's globals where it has no name of its own."""

BUSY_WARNING_INTERVAL = 600.0
"""Seconds between a scheduler's warnings about one node that serves another scheduler."""

DEFAULT_HTTP_PORT = 8181
"""dispy's port for status pages: a program's ``DispyHTTPServer``, the scheduler's bare
``--httpd``."""

UPLOADS_DIRECTORY = '.uploads'
"""Where, in a cluster's directory at the scheduler, files uploaded after its creation are kept
(``NodeAllocate.depends`` set in ``allocate``, ``send_file``), one directory per upload."""

MAX_UPLOADS = 1000
"""Most files a cluster may upload after its creation (they are kept until it closes)."""

NODE_ALLOCATE_TIMEOUT = 30.0
"""Seconds the scheduler waits for a client's ``NodeAllocate.allocate`` answer for a node."""

NODE_INITIALIZED = 4
"""``DispyNode.Initialized``: a node has set up a cluster's computation (dispy 4.x number)."""

NODE_CLOSED = 16
"""``DispyNode.Closed``: a node no longer runs a cluster's jobs (dispy 4.x number)."""

NODE_AVAIL_INFO = 17
"""``DispyNode.AvailInfo``: a node reported what it has free (dispy 4.x number)."""

NODE_SETUP_FAILED = 18
"""``DispyNode.SetupFailed`` (not in dispy, which only logs it): a node could not set up a
cluster's computation; ``cluster_status`` gets the node, whose ``setup_failure`` says why."""

FILE_TIMEOUT = 60.0
"""Seconds a peer may take between two chunks of a file it is sending."""

COMMIT_INTERVAL = 0.02
"""Seconds the scheduler lets state changes gather before committing them in one transaction
(group commit): a submission waits at most this long for its acknowledgement, and a node for
that of a result. Nothing is at risk meanwhile (the client keeps a submission and the node a
result until then), and each commit costs a fsync and a thread's wake-up on a host that has
few CPUs to spare: at 5 ms, with jobs one at a time, a tenth of a job's round trip."""

MAX_KEPT_SHORTFALLS = 4096
"""Jobs' needs for which the scheduler keeps worked out what no node has (to refuse a job
that could never run without looking at every node again): at most this many, then it
starts over."""

UNMET_NEED_PULSES = 5
"""Pulse intervals that jobs wait for a need no connected node could meet (the only node
with a GPU left, say) before their client is warned that they wait for such a node."""

MAX_NODE_LOSSES = 3
"""Default ``--max_node_losses``: a job whose runs have killed or lost this many nodes ends
``Abandoned`` instead of going round the cluster for ever."""

CANCEL_GRACE = 5.0
"""Seconds a cancelled job has, after its interrupt (SIGINT, KeyboardInterrupt), to end before
its worker process is killed."""

NODE_SHUTDOWN_GRACE = 30.0
"""Seconds a node told to stop (SIGTERM) lets its running jobs finish before killing them."""

READER_RETAKE_DELAY = 0.005
"""Seconds without a thread waiting for a job after which a client's reader thread reads the
scheduler's link again (``client/seat.py``): short enough that callbacks and statuses are not
held up, long enough that a program waiting for one job after another never wakes it."""

CLIENT_RECONNECT_TIMEOUT = 600.0
"""Seconds a client keeps trying to reach its scheduler again before abandoning its jobs."""

RESULT_RETENTION = 24
"""Zombie intervals (a day, by default) that undelivered results of a cluster whose client is
gone are kept for a client to collect them (``recover_jobs``); its nodes are freed after one."""

RESULT_WINDOW = 32 * 1024 * 1024
"""Bytes of a cluster's results the scheduler sends its client ahead of the client's
acknowledgements. The rest wait on disk (in the state database), not in memory, so that a
client that stops reading costs the scheduler no more than this (``scheduler/outbox.py``)."""

MAX_CLUSTER_JOBS = 100000
"""Default ``--max_cluster_jobs``: jobs of one cluster the scheduler holds at once (queued or
running). ``submit()`` waits while its cluster has this many jobs not ended, so a program that
submits a million jobs goes at the pace its nodes run them; a client that sends more anyway
has them refused (Cancelled, with the reason)."""

MAX_CLUSTER_BYTES = 256 * 1024 * 1024
"""Default ``--max_cluster_bytes``: bytes of arguments and job files (``dispy_job_depends``)
of one cluster's jobs the scheduler holds at once, in memory and in its state database;
``submit()`` waits for room as for ``MAX_CLUSTER_JOBS``. A single job larger than this is
refused by ``submit()`` with a ValueError."""

MAX_UNSAVED_BYTES = 32 * 1024 * 1024
"""Bytes of results the scheduler has received and not yet saved past which it stops reading
results from nodes until its disk catches up (nodes keep their results until they are saved,
so nothing is lost and the scheduler's memory stays bounded)."""

LARGE_BUFFER = 512 * 1024
"""Bytes from which a daemon's buffers (arguments, results, file chunks) are mapped apart from
its heap and so returned to the system when freed (``runtime/memory.py``). Above msgpack's
256 KiB packing buffer, which every message's encoding allocates and frees: mapping that
would cost two system calls and page faults per message."""

INLINE_ARGUMENTS_LIMIT = 1024 * 1024
"""A job's pickled arguments up to this many bytes travel in its ``Submit``; beyond, each
large argument travels on its own, in chunks (``SharedJobCluster._store_arguments``)."""

STORED_VALUE_THRESHOLD = 64 * 1024
"""Of a job's arguments too large to travel inline, those of at least this many bytes
(pickled) travel on their own; the smaller ones stay inline."""

SPOOL_LIMIT = 32 * 1024 * 1024
"""Bytes of a large argument's pickle a client keeps in memory until the scheduler has saved
it; a larger one waits in a temporary file (``wire.files.Spool``), so that what a program
holds beyond its own objects does not grow with them."""

IMMUTABLE_DATA = frozenset((bytes, str))
"""Arguments that cannot change between two jobs: one given to job after job is pickled once
(a client remembers which value it became while that value is kept)."""

SMALL_TYPES = frozenset((int, float, bool, complex, type(None)))
"""Arguments never worth pickling on their own."""

VALUE_LINGER = 30.0
"""Seconds a job's large argument is kept (by the client, the scheduler and the nodes) after
the last job that used it ended, for jobs submitted later with the same data."""
