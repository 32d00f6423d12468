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


# payloads: large results in chunks (PayloadPart), large arguments spooled (Spool)

NAME = '_dispyscheduler_result_7.pickle'


def parts(data, name=NAME, key=7, chunk=4):
    from dispyscheduler.wire.messages import PayloadPart
    offsets = list(range(0, len(data), chunk)) or [0]
    return [PayloadPart(id=key, name=name, size=len(data), offset=offset,
                        data=data[offset:offset + chunk], last=offset == offsets[-1])
            for offset in offsets]


def test_a_payload_stream_is_written_as_it_comes_and_taken_by_its_name(tmp_path):
    from dispyscheduler.wire.files import IncomingPayloads
    payloads = IncomingPayloads()
    stream = parts(b'0123456789')
    payloads.part(str(tmp_path), 'f', stream[0])
    assert (tmp_path / 'f').read_bytes() == b'0123'  # on disk as it comes, not held here
    for part in stream[1:]:
        payloads.part(str(tmp_path), 'f', part)
    path, reason = payloads.take(7, NAME)
    assert reason == '' and open(path, 'rb').read() == b'0123456789'
    assert payloads.take(7, NAME) == (None, 'its stream did not arrive')


def test_a_payload_stream_sent_again_from_its_start_replaces_a_cut_one(tmp_path):
    from dispyscheduler.wire.files import IncomingPayloads
    payloads = IncomingPayloads()
    first = parts(b'abcdefghij')
    for part in first[:2]:  # cut short (the link broke)
        payloads.part(str(tmp_path), 'f', part)
    for part in parts(b'ABCDEFGHIJ'):
        payloads.part(str(tmp_path), 'f', part)
    path, _ = payloads.take(7, NAME)
    assert open(path, 'rb').read() == b'ABCDEFGHIJ'


def test_a_payload_that_cannot_be_kept_says_why_and_leaves_nothing(tmp_path):
    from dispyscheduler.wire.files import IncomingPayloads
    payloads = IncomingPayloads()
    stream = parts(b'0123456789')
    payloads.part(str(tmp_path), 'f', stream[0])
    payloads.part(str(tmp_path), 'f', stream[2])  # a chunk missing
    payloads.part(str(tmp_path), 'f', stream[1])  # the rest of a refused stream: dropped
    assert payloads.take(7, NAME) == (None, "file 'f': chunk at offset 8, expected 4")
    assert os.listdir(tmp_path) == []
    bad = parts(b'xy', name='../../etc/passwd')[0]
    payloads.part(str(tmp_path), 'g', bad)
    assert payloads.take(7, '../../etc/passwd')[1].startswith('invalid payload name')


def test_a_cut_stream_is_removed_when_its_link_ends(tmp_path):
    from dispyscheduler.wire.files import IncomingPayloads
    payloads = IncomingPayloads()
    payloads.part(str(tmp_path), 'f', parts(b'0123456789')[0])
    for part in parts(b'xyz', key=8, name='_dispyscheduler_result_8.pickle'):
        payloads.part(str(tmp_path), 'g', part)  # complete, never claimed
    assert sorted(os.listdir(tmp_path)) == ['f', 'g']
    payloads.abandon()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('size', [0, 5, 4096, 10000])
def test_a_spool_gives_back_what_was_written_in_memory_or_in_a_file(size):
    import hashlib
    from dispyscheduler.wire.files import Spool
    data = os.urandom(size)
    spool = Spool(limit=4096)
    for offset in range(0, size, 1000):
        spool.write(memoryview(data)[offset:offset + 1000])
    assert (spool.file is not None) == (size > 4096)
    chunks = [(offset, bytes(chunk), last) for offset, chunk, last in spool.chunks(3000)]
    assert b''.join(chunk for _, chunk, _ in chunks) == data
    assert [offset for offset, _, _ in chunks] == list(range(0, max(size, 1), 3000))[
        :len(chunks)]
    assert [last for _, _, last in chunks] == [False] * (len(chunks) - 1) + [True]
    assert spool.size == size and spool.reference() == hashlib.sha256(data).hexdigest()[:32]
    assert Spool.of(data).reference() == spool.reference()
    spool.close()


def test_a_large_value_is_pickled_into_a_spool_a_frame_at_a_time():
    """``serialize.dump`` of 50 MB into a spool with a 1 MB limit: a bytearray's data (which
    may change) land in its file; a bytes object's (which cannot) are kept as they are, not
    copied; either loads back equal."""
    import pickle
    from dispyscheduler.wire import serialize
    from dispyscheduler.wire.files import Spool
    for data, in_file in ((bytearray(os.urandom(50 * 1000 * 1000)), True),
                          (os.urandom(50 * 1000 * 1000), False)):
        value = {'data': data, 'name': 'x'}
        spool = Spool(limit=1024 * 1024)
        serialize.dump(value, spool)
        assert (spool.file is not None) == in_file and spool.in_memory < 1024 * 1024
        assert pickle.loads(b''.join([bytes(chunk) for _, chunk, _ in spool.chunks()])) == value
        spool.close()


def test_a_chunk_and_its_frame_stay_below_the_size_that_is_mapped_apart():
    """Each chunk's buffers (read, encoded, received with the next read's bytes, decoded)
    must come from the heap, below ``LARGE_BUFFER``: each buffer mapped apart costs page
    faults on every chunk (it once halved the speed of large transfers)."""
    from dispyscheduler.constants import (BULK_RECV_SIZE, FILE_CHUNK_SIZE, LARGE_BUFFER,
                                          RECV_SIZE)
    from dispyscheduler.wire import messages as m
    from dispyscheduler.wire.protocol import encode
    frame = encode(m.PayloadPart(id=2 ** 62, name='_dispyscheduler_result_%d.pickle' % 2 ** 62,
                                 size=2 ** 62, offset=2 ** 62, data=b'x' * FILE_CHUNK_SIZE,
                                 last=False))
    assert len(frame) + RECV_SIZE < LARGE_BUFFER
    assert len(frame) < BULK_RECV_SIZE < LARGE_BUFFER  # a chunk's rest in one read
