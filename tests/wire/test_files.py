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
