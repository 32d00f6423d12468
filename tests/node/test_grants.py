"""What a node hands each job (``Grants``), GPU discovery, and job memory limits (cgroup v2 on a
fake cgroup tree, RLIMIT_AS in a real process), CPU pinning."""

import errno
import os
import resource
import shutil
import subprocess
import sys
import textwrap

import pytest

from dispyscheduler.node import grants
from dispyscheduler.node.grants import (CGROUP, RLIMIT, Grant, Grants, MemoryLimits, find_gpus,
                                        limit_address_space, node_memory, pin, unpin)
from dispyscheduler.resources import Need

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GiB = 1 << 30


def need(**request):
    return Need.from_user(request)


# ---- Grants


def test_cpus_memory_gpus_and_named_resources_are_taken_and_given_back():
    node = Grants(cpus=4, memory=16 * GiB, gpu_ids=['0', '1'], named={'licence': 2},
                  os_cpus=[0, 1, 2, 3])
    assert node.free() == {'cpus': 4, 'memory': 16 * GiB, 'gpus': 2, 'licence': 2}
    first = node.take(need(cpus=2, memory='8G', gpus=1, licence=1))
    assert first == Grant(slots=(0, 1), cpu_ids=(0, 1), gpu_ids=('0',), memory=8 * GiB,
                          named=(('licence', 1),))
    assert first.as_dict() == {'cpus': 2, 'cpu_ids': [0, 1], 'memory': 8 * GiB, 'gpus': ['0'],
                               'licence': 1}
    assert node.in_use() == {'cpus': 2, 'memory': 8 * GiB, 'gpus': 1, 'licence': 1}
    assert node.free() == {'cpus': 2, 'memory': 8 * GiB, 'gpus': 1, 'licence': 1}

    assert node.take(need(memory='9G')) is None  # 8 GiB left
    assert node.take(need(licence=2)) is None  # 1 left
    assert node.take(need(gpus=2)) is None  # 1 left
    light = node.take(Need())
    assert light == Grant(slots=(2,), cpu_ids=(2,), gpu_ids=(), memory=0, named=())
    assert light.as_dict() == {'cpus': 1, 'cpu_ids': [2]}  # no memory, no gpus
    assert node.free()['memory'] == 8 * GiB  # a job without memory counts none

    node.give_back(first)
    assert node.free() == {'cpus': 3, 'memory': 16 * GiB, 'gpus': 2, 'licence': 2}
    node.give_back(light)
    assert node.in_use() == {'cpus': 0, 'memory': 0, 'gpus': 0, 'licence': 0}


def test_a_need_of_all_cpus_waits_for_the_one_held():
    node = Grants(cpus=4, memory=GiB, gpu_ids=[], named={}, os_cpus=[0, 1, 2, 3])
    held = node.take(Need())
    assert held is not None and held.slots == (0,)
    assert node.take(need(cpus=4)) is None
    assert node.free()['cpus'] == 3  # a refused take holds nothing
    node.give_back(held)
    whole = node.take(need(cpus=4))
    assert whole is not None and whole.slots == (0, 1, 2, 3)


def test_lowest_free_slots_and_gpus_are_taken_and_no_gpu_is_given_twice():
    node = Grants(cpus=8, memory=0, gpu_ids=['0', '1', '2', '3'], named={},
                  os_cpus=list(range(8)))
    held = [node.take(need(gpus=1)) for _ in range(4)]
    assert [grant.gpu_ids for grant in held] == [('0',), ('1',), ('2',), ('3',)]
    assert node.take(need(gpus=1)) is None
    node.give_back(held[2])
    node.give_back(held[0])
    pair = node.take(need(gpus=2, cpus=2))
    assert pair.gpu_ids == ('0', '2') and pair.slots == (0, 2)
    handed = [gpu for grant in (pair, held[1], held[3]) for gpu in grant.gpu_ids]
    assert sorted(handed) == ['0', '1', '2', '3']  # each once
    assert node.take(need(gpus=1)) is None


def test_giving_back_twice_fails_and_counts_nothing():
    node = Grants(cpus=2, memory=4 * GiB, gpu_ids=['0'], named={'disk': 1}, os_cpus=[0, 1])
    grant = node.take(need(memory='1G', gpus=1, disk=1))
    node.give_back(grant)
    with pytest.raises(AssertionError):
        node.give_back(grant)
    assert node.free() == {'cpus': 2, 'memory': 4 * GiB, 'gpus': 1, 'disk': 1}
    assert node.in_use() == {'cpus': 0, 'memory': 0, 'gpus': 0, 'disk': 0}


def test_slots_beyond_the_machines_cpus_share_them_in_turn():
    node = Grants(cpus=4, memory=0, gpu_ids=[], named={}, os_cpus=[3, 5])
    grant = node.take(need(cpus=4))
    assert grant.cpu_ids == (3, 5, 3, 5)
    assert grant.as_dict() == {'cpus': 4, 'cpu_ids': [3, 5, 3, 5]}
    assert [node.cpu_id(slot) for slot in range(4)] == [3, 5, 3, 5]


def test_os_cpus_default_to_the_affinity_of_the_node():
    node = Grants(cpus=1, memory=0, gpu_ids=[], named={})
    if hasattr(os, 'sched_getaffinity'):
        assert node.os_cpus == tuple(sorted(os.sched_getaffinity(0)))
    assert node.os_cpus


def test_covers_is_about_the_idle_node():
    node = Grants(cpus=4, memory=8 * GiB, gpu_ids=['0'], named={'licence': 1},
                  os_cpus=[0, 1])
    node.take(need(cpus=4, memory='8G', gpus=1, licence=1))  # all of it held
    assert node.covers(need(cpus=4, memory='8G', gpus=1, licence=1))
    assert not node.covers(need(cpus=5))
    assert not node.covers(need(memory='9G'))
    assert not node.covers(need(gpus=2))
    assert not node.covers(need(licence=2))
    assert not node.covers(need(disk=1))


def test_node_memory_is_the_machines():
    assert node_memory() > 0


# ---- find_gpus


def fake_command(tmp_path, script):
    path = tmp_path / 'nvidia-smi'
    path.write_text('#!/bin/sh\n' + textwrap.dedent(script))
    path.chmod(0o755)
    return str(path)


def test_gpus_are_listed_by_nvidia_smi(tmp_path):
    command = fake_command(tmp_path, '''\
        [ "$1" = "-L" ] || exit 2
        echo "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5e3b2c1a-0000-1111-2222-333344445555)"
        echo "  MIG 1g.5gb      Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)"
        echo "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-6f4c3d2b-0000-1111-2222-333344445555)"
        ''')
    assert find_gpus(command) == ['0', '1']


def test_no_gpus_when_nvidia_smi_fails_is_missing_or_hangs(tmp_path, caplog):
    failing = fake_command(tmp_path, '''\
        echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
        exit 1
        ''')
    assert find_gpus(failing) == []
    assert "status 1: NVIDIA-SMI has failed" in caplog.text
    assert find_gpus(str(tmp_path / 'absent' / 'nvidia-smi')) == []
    assert find_gpus('no-such-nvidia-smi-command') == []
    hanging = fake_command(tmp_path, 'echo "GPU 0: x"\nsleep 60\n')
    assert find_gpus(hanging, timeout=0.5) == []
    assert 'did not answer in 0.5 seconds' in caplog.text


# ---- MemoryLimits on a fake cgroup tree


@pytest.fixture
def cgroup_tree(tmp_path):
    """A cgroup2 mount at tmp_path/cg with the node in /user.slice/node, which has the memory
    controller; returns (mounts, own_cgroup, the node's cgroup directory)."""
    mount = tmp_path / 'cg'
    own = mount / 'user.slice' / 'node'
    own.mkdir(parents=True)
    (own / 'cgroup.controllers').write_text('cpuset cpu io memory pids\n')
    (own / 'cgroup.procs').write_text('')  # the node runs elsewhere (its group's parent)
    mounts = tmp_path / 'mounts'
    mounts.write_text('proc /proc proc rw,nosuid 0 0\n'
                      'cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n'
                      'cgroup2 %s cgroup2 rw,nosuid,nodev 0 0\n' % mount)
    own_cgroup = tmp_path / 'cgroup'
    own_cgroup.write_text('4:memory:/whatever\n0::/user.slice/node\n')
    return str(mounts), str(own_cgroup), own


@pytest.fixture
def cgroupfs_rmdir(monkeypatch):
    """``os.rmdir`` as cgroupfs has it: a group goes with its interface files; the first try
    on each group fails EBUSY (as while a killed process is reaped). Returns the tries."""
    real_rmdir = os.rmdir
    tries = []

    def rmdir(path, *args, **kwargs):
        tries.append(str(path))
        if tries.count(str(path)) == 1:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        for entry in os.scandir(path):
            if entry.is_dir():
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
            os.unlink(entry.path)
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, 'rmdir', rmdir)
    return tries


def test_cgroup_groups_per_job(cgroup_tree, cgroupfs_rmdir):
    mounts, own_cgroup, own = cgroup_tree
    limits = MemoryLimits.detect('dispynode-51348', mounts=mounts, own_cgroup=own_cgroup)
    group = own / 'dispynode-51348'
    assert limits.method == CGROUP and limits.group == str(group)
    assert limits.describe() == 'job memory limits: cgroup v2 (%s)' % group
    assert (own / 'cgroup.subtree_control').read_text() == '+memory'
    assert (group / 'cgroup.subtree_control').read_text() == '+memory'
    assert (group / 'idle').is_dir()

    limits.enter(4242, 7, 8 * GiB)
    job = group / 'job-7'
    assert (job / 'memory.max').read_text() == str(8 * GiB)
    assert (job / 'cgroup.procs').read_text() == '4242'
    assert not (job / 'memory.swap.max').exists()  # no swap accounting: not made
    (job / 'memory.events').write_text('low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n')
    assert limits.leave(4242, 7) is False
    assert (group / 'idle' / 'cgroup.procs').read_text() == '4242'
    assert not job.exists()  # removed once no longer busy
    assert cgroupfs_rmdir.count(str(job)) == 2

    (group / 'job-8').mkdir()
    (group / 'job-8' / 'memory.swap.max').write_text('max')  # the kernel accounts swap
    limits.enter(4243, 8, GiB)
    assert (group / 'job-8' / 'memory.swap.max').read_text() == '0'
    (group / 'job-8' / 'memory.events').write_text(
        'low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n')
    assert limits.leave(4243, 8) is True
    assert not (group / 'job-8').exists()

    limits.enter(4244, 9, 0)  # no grant of memory: no limit
    assert (group / 'job-9' / 'memory.max').read_text() == 'max'
    limits.close()  # job-9's group too
    assert not group.exists()
    assert own.exists()


def test_leave_never_raises(cgroup_tree):
    mounts, own_cgroup, own = cgroup_tree
    limits = MemoryLimits.detect('dispynode-1', mounts=mounts, own_cgroup=own_cgroup)
    assert limits.leave(4242, 99) is False  # no such job group: no events, nothing to remove
    limits.enter(4242, 5, GiB)
    shutil.rmtree(own / 'dispynode-1' / 'idle')  # the move fails
    assert limits.leave(4242, 5) is False


def test_no_cgroup2_mount_or_no_memory_controller_means_rlimit(cgroup_tree, tmp_path):
    mounts, own_cgroup, own = cgroup_tree
    no_mount = tmp_path / 'mounts-v1'
    no_mount.write_text('cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n')
    limits = MemoryLimits.detect('n', mounts=str(no_mount), own_cgroup=own_cgroup)
    assert limits.method == RLIMIT and limits.group is None
    assert 'no cgroup2 file system' in limits.describe()
    assert limits.describe().startswith("job memory limits: RLIMIT_AS of each job's worker "
                                        "process (no cgroup v2: ")
    assert MemoryLimits.detect('n', mounts=str(tmp_path / 'absent'),
                               own_cgroup=own_cgroup).method == RLIMIT

    (own / 'cgroup.controllers').write_text('hugetlb\n')
    limits = MemoryLimits.detect('n', mounts=mounts, own_cgroup=own_cgroup)
    assert limits.method == RLIMIT
    assert limits.reason == 'no memory controller in %s (its cgroup.controllers lists: ' \
        'hugetlb)' % own
    assert not (own / 'n').exists()

    elsewhere = tmp_path / 'cgroup-elsewhere'
    elsewhere.write_text('0::/system.slice/other\n')
    limits = MemoryLimits.detect('n', mounts=mounts, own_cgroup=str(elsewhere))
    assert limits.method == RLIMIT and 'system.slice/other' in limits.reason

    # rlimit: the worker process limits itself; the node has nothing to do
    limits.enter(4242, 1, GiB)
    assert limits.leave(4242, 1) is False
    limits.close()


def test_a_parent_that_refuses_the_memory_controller_means_rlimit(cgroup_tree):
    mounts, own_cgroup, own = cgroup_tree
    (own / 'cgroup.subtree_control').mkdir()  # its write fails, as EBUSY would
    limits = MemoryLimits.detect('dispynode-2', mounts=mounts, own_cgroup=own_cgroup)
    assert limits.method == RLIMIT
    assert 'cannot enable the memory controller below %s' % own in limits.reason
    assert limits.reason in limits.describe()
    assert not (own / 'dispynode-2').exists()


def test_the_hint_for_ebusy(cgroup_tree, monkeypatch):
    mounts, own_cgroup, own = cgroup_tree

    def busy(path, text):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)

    monkeypatch.setattr(grants, '_write', busy)
    limits = MemoryLimits.detect('dispynode-3', mounts=mounts, own_cgroup=own_cgroup)
    assert limits.method == RLIMIT and 'run the node in a cgroup of its own' in limits.reason


def test_a_node_group_that_refuses_the_memory_controller_means_rlimit(cgroup_tree):
    mounts, own_cgroup, own = cgroup_tree
    (own / 'dispynode-4' / 'cgroup.subtree_control').mkdir(parents=True)
    limits = MemoryLimits.detect('dispynode-4', mounts=mounts, own_cgroup=own_cgroup)
    assert limits.method == RLIMIT
    assert 'below %s' % (own / 'dispynode-4') in limits.reason


def test_detect_on_this_machine():
    limits = MemoryLimits.detect('dispynode-test-%d' % os.getpid())
    try:
        assert limits.method in (CGROUP, RLIMIT)
        assert limits.describe().startswith('job memory limits: ')
    finally:
        limits.close()


# ---- RLIMIT_AS in the worker process


LIMITED = '''
import resource, sys
from dispyscheduler.node.grants import limit_address_space
before = resource.getrlimit(resource.RLIMIT_AS)
restore = limit_address_space(50 << 20)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
assert hard == before[1] and soft != resource.RLIM_INFINITY, (before, soft, hard)
try:
    bytearray(200 << 20)
except MemoryError:
    print('refused')
else:
    print('allowed')
within = bytearray(10 << 20)  # less than 50 MiB more: allowed
restore()
assert resource.getrlimit(resource.RLIMIT_AS) == before
print('after restore', len(bytearray(200 << 20)))
'''


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='no /proc')
def test_address_space_limited_for_a_job_then_restored():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    result = subprocess.run([sys.executable, '-c', LIMITED], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['refused', 'after restore %d' % (200 << 20)]


def test_no_memory_grant_no_limit():
    before = resource.getrlimit(resource.RLIMIT_AS)
    limit_address_space(0)()
    assert resource.getrlimit(resource.RLIMIT_AS) == before


# ---- pinning


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='no sched_setaffinity')
def test_pin_to_one_cpu_then_unpin():
    everywhere = sorted(os.sched_getaffinity(0))
    one = everywhere[-1]
    try:
        pin(os.getpid(), [one, one])
        assert os.sched_getaffinity(0) == {one}
    finally:
        unpin(os.getpid(), everywhere)
    assert os.sched_getaffinity(0) == set(everywhere)


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='no sched_setaffinity')
def test_pinning_a_process_that_is_gone_does_nothing():
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    pin(process.pid, [0])
    unpin(process.pid, [0])



def test_a_node_alone_in_its_cgroup_moves_into_a_leaf_of_it(cgroup_tree):
    """As under systemd with Delegate=yes: the node's own group holds only the node, which
    moves into <name>-daemon so that the memory controller can be given to its jobs' groups."""
    mounts, own_cgroup, own = cgroup_tree
    (own / 'cgroup.procs').write_text('%d\n' % os.getpid())
    limits = MemoryLimits.detect('dispynode-5', mounts=mounts, own_cgroup=own_cgroup)
    assert limits.method == CGROUP
    assert (own / 'dispynode-5-daemon' / 'cgroup.procs').read_text() == str(os.getpid())
    assert (own / 'cgroup.subtree_control').read_text() == '+memory'


def test_a_node_sharing_its_cgroup_leaves_it_alone_and_limits_by_rlimit(cgroup_tree):
    mounts, own_cgroup, own = cgroup_tree
    (own / 'cgroup.procs').write_text('%d\n1\n77\n' % os.getpid())
    limits = MemoryLimits.detect('dispynode-6', mounts=mounts, own_cgroup=own_cgroup)
    assert limits.method == RLIMIT
    assert 'shares its cgroup %s with 2 other processes' % own in limits.reason
    assert 'Delegate=yes' in limits.reason
    assert not (own / 'dispynode-6-daemon').exists()
    assert not (own / 'cgroup.subtree_control').exists()
