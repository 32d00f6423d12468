"""Files that travel with computations, jobs and results: safe names and chunked writes.

Every file name that arrives from a peer (a client's ``depends``, a job's files, a node's
``dispy_send_file``) is a relative path that must stay inside the directory it is written to:
no absolute paths, no ``..``, no empty or ``.`` parts, no NUL, and no symbolic link on the way
(a link planted in the directory cannot redirect a write elsewhere). Sizes are checked against
the receiver's ``--max_file_size`` as bytes arrive, never after.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from typing import Any, BinaryIO, Callable, Iterator, Union

from ..constants import DISK_RESERVE, FILE_CHUNK_SIZE, SPOOL_LIMIT
from .messages import FileSpec, PayloadPart
from .serialize import PAYLOAD_NAME

logger = logging.getLogger(__name__)

MAX_FILES = 10000
"""Most files one computation or job may bring."""


class FileRefused(ValueError):
    """A file name or size is not acceptable; the message says which and why."""


def safe_relative_path(name: str) -> str:
    """``name`` as a relative path that cannot leave its directory, or ``FileRefused``."""
    if not isinstance(name, str) or not name or '\0' in name:
        raise FileRefused('invalid file name %r' % (name,))
    if name.startswith(('/', '\\')):
        raise FileRefused('file name %r is an absolute path' % (name,))
    parts = name.replace('\\', '/').split('/')
    if any(part in ('', '.', '..') for part in parts):
        raise FileRefused('file name %r may not contain "..", "." or empty parts' % (name,))
    return os.path.join(*parts)


def open_for_writing(directory: str, name: str) -> int:
    """Create (or truncate) ``directory/name`` for writing; returns the file descriptor."""
    relative = safe_relative_path(name)
    path = os.path.join(directory, relative)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:  # a file of the same name is in the way, say ('a', then 'a/b')
        raise FileRefused('cannot write %r: %s' % (name, exc.strerror)) from None
    expected = os.path.join(os.path.realpath(directory), os.path.dirname(relative))
    if os.path.realpath(parent) != expected.rstrip(os.sep):
        raise FileRefused('file name %r leads through a symbolic link' % (name,))
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise FileRefused('cannot write %r: %s' % (name, exc.strerror)) from None


def check_size(name: str, size: int, max_file_size: int) -> None:
    if max_file_size and size > max_file_size:
        raise FileRefused('file %r is %d bytes, more than the limit of %d bytes '
                          '(--max_file_size)' % (name, size, max_file_size))


def check_manifest_entry(entry: FileSpec, max_file_size: int = 0) -> None:
    """A ``(name, size, mode)`` entry announcing a file to come (its message checked its
    shape); ``FileRefused`` if its name or size is not acceptable."""
    name, size, _ = entry
    if size < 0:
        raise FileRefused('invalid file entry %r' % (entry,))
    safe_relative_path(name)
    check_size(name, size, max_file_size)


def check_manifest(directory: str, manifest: list[FileSpec], max_file_size: int = 0) -> None:
    """``FileRefused`` if a file that ``manifest`` announces for ``directory`` is not
    acceptable (``check_manifest_entry``), or all of them would not fit (``check_disk_space``)."""
    for entry in manifest:
        check_manifest_entry(entry, max_file_size)
    check_disk_space(directory, manifest)


def check_disk_space(directory: str, manifest: list[FileSpec]) -> None:
    """``FileRefused`` if the files announced in ``manifest`` would leave less than
    ``DISK_RESERVE`` bytes free where they are to be written."""
    needed = sum(size for _, size, _ in manifest)
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):  # not made yet: the disk it will be made on
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if free - needed < DISK_RESERVE:
        raise FileRefused('%d bytes of files, and %s has %d bytes free (%d are kept free)'
                          % (needed, directory, free, DISK_RESERVE))


def write_file(directory: str, name: str, data: bytes, mode: int = 0o600,
               max_file_size: int = 0) -> str:
    """Write a whole (small) file at once; returns its path."""
    check_size(name, len(data), max_file_size)
    fd = open_for_writing(directory, name)
    try:
        os.write(fd, data)
        os.fchmod(fd, _mode(mode))
    finally:
        os.close(fd)
    return os.path.join(directory, safe_relative_path(name))


def _mode(mode: int) -> int:
    """Owner permissions only, with the executable bit kept (programs must stay runnable)."""
    return 0o700 if mode & 0o111 else 0o600


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written: a disk that fills mid-write takes part of
    it without an error, and the next write says ENOSPC."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class IncomingFiles:
    """Files arriving in chunks, in order, each ended by a chunk with ``last`` set."""

    def __init__(self, directory: str, max_file_size: int = 0,
                 manifest: list[FileSpec] | None = None) -> None:
        self.directory = directory
        self.max_file_size = max_file_size
        self.sizes = None if manifest is None else {name: size for name, size, _ in manifest}
        """Each file's announced size, if they were announced: a file must be exactly that
        long (a sender that announced 1 byte cannot then fill the disk)."""
        self.open: dict[str, list[int]] = {}  # name -> [fd, bytes written]
        self.done: list[str] = []

    def chunk(self, name: str, offset: int, data: bytes | bytearray, last: bool,
              mode: int = 0o600) -> str | None:
        """Write one chunk; returns the file's path when ``last`` completes it, else None."""
        entry = self.open.get(name)
        if entry is None:
            if offset != 0:
                raise FileRefused('file %r: chunk at offset %d before its start' % (name, offset))
            entry = self.open[name] = [open_for_writing(self.directory, name), 0]
        fd, written = entry
        if offset != written:
            raise FileRefused('file %r: chunk at offset %d, expected %d' % (name, offset, written))
        check_size(name, written + len(data), self.max_file_size)
        announced = self.sizes.get(name) if self.sizes is not None else None
        if announced is not None and (written + len(data) > announced
                                      or last and written + len(data) != announced):
            raise FileRefused('file %r: %d bytes sent, %d announced'
                              % (name, written + len(data), announced))
        write_all(fd, data)
        entry[1] += len(data)
        if not last:
            return None
        os.fchmod(fd, _mode(mode))
        os.close(fd)
        del self.open[name]
        self.done.append(name)
        return os.path.join(self.directory, safe_relative_path(name))

    def abort(self) -> None:
        """Close and remove files not completed."""
        for name, (fd, _) in self.open.items():
            os.close(fd)
            try:
                os.unlink(os.path.join(self.directory, safe_relative_path(name)))
            except OSError:
                pass
        self.open.clear()


class IncomingBytes:
    """One payload assembled in memory, with ``IncomingFiles``' calls."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.written = 0

    def chunk(self, name: str, offset: int, data: bytes | bytearray, last: bool,
              mode: int = 0o600) -> bytearray | None:
        end = offset + len(data)
        if offset != self.written:
            raise FileRefused('payload %r: chunk at offset %d, expected %d'
                              % (name, offset, self.written))
        if end > len(self.data) or last and end != len(self.data):
            raise FileRefused('payload %r: %d bytes sent, %d announced'
                              % (name, end, len(self.data)))
        self.data[offset:end] = data
        self.written = end
        return self.data if last else None

    def abort(self) -> None:
        self.data = bytearray()


Payload = Union[str, bytearray]
"""A payload received: the path of its file, or its bytes."""


class IncomingPayloads:
    """The payload streams (``PayloadPart``) arriving on one link, by id: each is written to
    a file as it comes (or kept in memory), and taken by the message that names it, which
    follows its stream. A link carries one stream at a time, but a stream may be cut and sent
    again from its start."""

    def __init__(self) -> None:
        # id -> (file, its writer)
        self.incoming: dict[int, tuple[str, IncomingFiles | IncomingBytes]] = {}
        self.received: dict[int, tuple[str, Payload]] = {}  # id -> (name, payload), complete
        self.failed: dict[int, str] = {}  # id -> why its stream could not be written

    def part(self, directory: str | None, file: str, part: PayloadPart) -> None:
        """Write one chunk to ``directory/file`` (no ``directory``: keep it in memory). A
        stream that cannot be written is dropped, and the reason kept for ``take``."""
        key = part.id
        entry = self.incoming.pop(key, None)
        if part.offset == 0:
            if entry is not None:  # sent again: it starts afresh
                entry[1].abort()
            entry = None
            self.failed.pop(key, None)
        elif key in self.failed:
            return  # the rest of a stream already refused
        try:
            if entry is None:
                if not PAYLOAD_NAME.fullmatch(part.name):
                    raise FileRefused('invalid payload name %r' % (part.name,))
                if directory is None:
                    entry = file, IncomingBytes(part.size)
                else:
                    manifest = [(file, part.size, 0o600)]
                    check_manifest(directory, manifest)
                    entry = file, IncomingFiles(directory, 0, manifest)
            elif entry[0] != file:
                raise FileRefused('payload %r: chunk of another stream' % (part.name,))
            path = entry[1].chunk(file, part.offset, part.data, part.last)
        except (FileRefused, OSError) as exc:
            if entry is not None:
                entry[1].abort()
            self.failed[key] = refusal_reason(exc)
            return
        if path is None:
            self.incoming[key] = entry
        else:
            self.received[key] = (part.name, path)

    def take(self, key: int, name: str) -> tuple[Payload | None, str]:
        """Payload ``name`` of ``key`` once complete, or None and why not."""
        received = self.received.pop(key, None)
        reason = self.failed.pop(key, '')
        if received is not None and received[0] == name:
            return received[1], ''
        if received is not None:
            discard(received[1])
        entry = self.incoming.pop(key, None)
        if entry is not None:
            entry[1].abort()
            reason = reason or 'its stream was cut short'
        return None, reason or 'its stream did not arrive'

    def abandon(self) -> None:
        """The link ended: streams not complete, and payloads no message took, go."""
        for _, incoming in self.incoming.values():
            incoming.abort()
        for _, payload in self.received.values():
            discard(payload)
        self.incoming.clear()
        self.received.clear()
        self.failed.clear()


def discard(payload: Payload | None) -> None:
    """A payload no one will take: its file goes."""
    if isinstance(payload, str):
        remove_file(payload)


def remove_file(path: str) -> None:
    """Remove a file that may be gone already (with its directory, say)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning('cannot remove %s: %s', path, exc)


class Spool:
    """Bytes written once (a pickle, as the pickler makes it) and sent, maybe more than once,
    a chunk at a time: kept in memory up to ``limit`` bytes, beyond that in an unnamed
    temporary file (or the file at ``path``), so that a 1 GB argument costs the program a
    chunk of memory, not a second gigabyte. With ``by_reference``, a large ``bytes`` object
    the pickler writes whole (the data of a ``bytes`` argument: it cannot change) is kept by
    reference, never copied, and does not count against ``limit``. Hashed as it is written
    (its reference is its content's) unless ``hashed`` is False. Read from any thread;
    ``close`` frees it (a file at ``path`` stays)."""

    reference_size = 64 * 1024
    """Size from which a ``bytes`` object written is kept rather than copied."""

    def __init__(self, limit: int = SPOOL_LIMIT, path: str | None = None,
                 hashed: bool = True, by_reference: bool = True) -> None:
        self.limit = limit
        self.by_reference = by_reference
        self.path = path
        self.parts: list[bytes | bytearray] = []  # in memory, in order
        self.copied = 0  # bytes of ``parts`` that are copies (bytearrays)
        self.file: BinaryIO | None = None
        self.size = 0
        self.hash = hashlib.sha256() if hashed else None

    @classmethod
    def of(cls, data: bytes) -> 'Spool':
        """A spool of bytes already made (kept as they are: no copy)."""
        spool = cls()
        spool.write(data)
        return spool

    def write(self, data: Any) -> int:
        """The file interface a pickler writes to (``data``: bytes or a buffer)."""
        size = memoryview(data).nbytes
        if not size:
            return 0
        if self.hash is not None:
            self.hash.update(data)
        kept = self.by_reference and type(data) is bytes and size >= self.reference_size
        if self.file is None and not kept and self.copied + size > self.limit:
            self.file = (tempfile.TemporaryFile() if self.path is None
                         else open(self.path, 'w+b', buffering=0))
            for part in self.parts:
                write_all(self.file.fileno(), part)
            self.parts, self.copied = [], 0
        if self.file is not None:
            write_all(self.file.fileno(), data)
        elif kept:
            self.parts.append(data)
        else:
            if not self.parts or type(self.parts[-1]) is not bytearray:
                self.parts.append(bytearray())
            self.parts[-1] += data
            self.copied += size
        self.size += size
        return size

    @property
    def in_memory(self) -> int:
        """Bytes of it held in memory that are not the program's own objects."""
        return self.copied

    def getvalue(self) -> bytes:
        """All of it, as bytes (for a small one)."""
        if self.file is not None:
            return os.pread(self.file.fileno(), self.size, 0)
        return b''.join(self.parts)

    def reference(self) -> str:
        assert self.hash is not None, 'a spool made with hashed=False has no reference'
        return self.hash.hexdigest()[:32]

    def chunks(self, chunk_size: int = FILE_CHUNK_SIZE
               ) -> Iterator[tuple[int, bytes | memoryview, bool]]:
        """``(offset, data, last)`` as ``read_chunks`` gives them (at least one); from
        memory, ``data`` is a view of the spool (not a copy), valid until the next."""
        if self.file is not None:
            offset = 0
            while True:
                data = os.pread(self.file.fileno(), chunk_size, offset)
                last = offset + len(data) >= self.size or not data
                yield offset, data, last
                offset += len(data)
                if last:
                    return
        if not self.size:
            yield 0, b'', True
            return
        offset = 0
        for part in self.parts:
            with memoryview(part) as view:
                for start in range(0, len(view), chunk_size):
                    with view[start:start + chunk_size] as piece:
                        size = len(piece)
                        yield offset, piece, offset + size >= self.size
                    offset += size

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.parts, self.copied = [], 0


def read_chunks(path: str, chunk_size: int = FILE_CHUNK_SIZE) -> Iterator[tuple[int, bytes, bool]]:
    """``(offset, data, last)`` for each chunk of a file (at least one, even if empty)."""
    with open(path, 'rb') as handle:
        yield from chunks_of(handle, chunk_size)


def chunks_of(handle: BinaryIO, chunk_size: int = FILE_CHUNK_SIZE
              ) -> Iterator[tuple[int, bytes, bool]]:
    """``read_chunks`` of an open file (``io.BytesIO(data)`` for bytes in memory)."""
    offset = 0
    while True:
        data = handle.read(chunk_size)
        last = len(data) < chunk_size
        yield offset, data, last
        offset += len(data)
        if last:
            return


def payload_part(id: int, name: str) -> Callable[[int, bytes, bool, int], PayloadPart]:
    """What makes each chunk of the payload ``name`` of ``id`` a message, for
    ``HubLink.send_file``."""
    def make(offset: int, data: bytes, last: bool, size: int) -> PayloadPart:
        return PayloadPart(id=id, name=name, size=size, offset=offset, data=data, last=last)
    return make


def refusal_reason(exc: Exception) -> str:
    """Why a file could not be written, in words: an OSError's own ("No space left on
    device"), or a ``FileRefused``'s message."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
