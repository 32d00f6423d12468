"""Files from peers: names that cannot leave their directory, sizes as announced, disk room."""

import os
import shutil

import pytest

from dispyscheduler.constants import DISK_RESERVE
from dispyscheduler.wire.files import (FileRefused, IncomingFiles, check_disk_space,
                                       safe_relative_path)


@pytest.mark.parametrize('name', ['', '/etc/passwd', '../x', 'a/../../b', 'a//b', './a', 'a\0b'])
def test_names_that_could_leave_the_directory_are_refused(name):
    with pytest.raises(FileRefused):
        safe_relative_path(name)


def test_a_file_must_be_as_long_as_announced(tmp_path):
    incoming = IncomingFiles(str(tmp_path), 0, [('a', 3, 0o600), ('b', 3, 0o600)])
    with pytest.raises(FileRefused, match="file 'a': 4 bytes sent, 3 announced"):
        incoming.chunk('a', 0, b'abcd', False)
    with pytest.raises(FileRefused, match="file 'b': 2 bytes sent, 3 announced"):
        incoming.chunk('b', 0, b'ab', True)
    incoming.abort()
    assert os.listdir(tmp_path) == []
    complete = IncomingFiles(str(tmp_path), 0, [('c', 3, 0o600)])
    assert complete.chunk('c', 0, b'ab', False) is None
    assert open(complete.chunk('c', 2, b'c', True), 'rb').read() == b'abc'


def test_files_that_would_fill_the_disk_are_refused_before_any_arrives(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    check_disk_space(str(tmp_path / 'not' / 'made' / 'yet'), [('small', 1000, 0o600)])
    with pytest.raises(FileRefused, match='bytes free'):
        check_disk_space(str(tmp_path), [('big', free - DISK_RESERVE // 2, 0o600)])


def test_a_short_write_is_finished_or_fails(tmp_path, monkeypatch):
    """A disk that fills mid-write takes part of a chunk without an error: the rest is
    written, or the next write's ENOSPC refuses the file, never a short file kept whole."""
    import errno
    import os

    from dispyscheduler.wire import files
    real_write = os.write
    writes = []

    def short_write(fd, data):
        writes.append(len(data))
        if len(writes) == 1:
            return real_write(fd, bytes(data[:3]))  # part of it, no error
        if len(writes) == 2:
            return real_write(fd, data)
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(files.os, 'write', short_write)
    incoming = files.IncomingFiles(str(tmp_path), 0, [('v', 10, 0o600)])
    assert incoming.chunk('v', 0, b'0123456789', True) == str(tmp_path / 'v')
    assert (tmp_path / 'v').read_bytes() == b'0123456789' and writes == [10, 7]
    incoming = files.IncomingFiles(str(tmp_path), 0, [('w', 4, 0o600)])
    with pytest.raises(OSError):
        incoming.chunk('w', 0, b'abcd', True)
