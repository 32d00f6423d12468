"""Files that travel with computations, jobs and results: safe names and chunked writes.

Every file name that arrives from a peer (a client's ``depends``, a job's files, a node's
``dispy_send_file``) is a relative path that must stay inside the directory it is written to:
no absolute paths, no ``..``, no empty or ``.`` parts, no NUL, and no symbolic link on the way
(a link planted in the directory cannot redirect a write elsewhere). Sizes are checked against
the receiver's ``--max_file_size`` as bytes arrive, never after.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, BinaryIO, Callable, Iterator

from ..constants import DISK_RESERVE, FILE_CHUNK_SIZE
from .messages import FileSpec

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


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: a disk that fills mid-write takes part of
    it without an error, and the next write says ENOSPC."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class IncomingFiles:
    """Files arriving in chunks, in order, each ended by a chunk with ``last`` set."""

    def __init__(self, directory: str, max_file_size: int = 0,
                 manifest: list[FileSpec] | None = None,
                 sync: Callable[[int], Any] | None = None) -> None:
        self.directory = directory
        self.sync = sync  # ``sync(fd)`` makes a completed file durable (before it counts)
        self.max_file_size = max_file_size
        self.sizes = None if manifest is None else {name: size for name, size, _ in manifest}
        """Each file's announced size, if they were announced: a file must be exactly that
        long (a sender that announced 1 byte cannot then fill the disk)."""
        self.open: dict[str, list[int]] = {}  # name -> [fd, bytes written]
        self.done: list[str] = []

    def chunk(self, name: str, offset: int, data: bytes, last: bool,
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
        if self.sync is not None:
            try:
                self.sync(fd)
            except BaseException:
                os.close(fd)
                del self.open[name]
                raise
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


def refusal_reason(exc: Exception) -> str:
    """Why a file could not be written, in words: an OSError's own ("No space left on
    device"), or a ``FileRefused``'s message."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
