"""The daemons' typed configuration: the command line and a program building it directly meet
the same defaults and the same rules; option files follow the option tables."""

import dataclasses

import pytest

from dispyscheduler import optionfile
from dispyscheduler.cli import (NODE_OPTIONS, SCHEDULER_OPTIONS, node_config, node_parser,
                                scheduler_config, scheduler_parser)
from dispyscheduler.config import ConfigError, NodeConfig, SchedulerConfig, TLSFiles


def test_the_command_lines_defaults_are_the_configurations():
    assert scheduler_config(scheduler_parser().parse_args([])) == SchedulerConfig()
    from_cli = node_config(node_parser().parse_args([]))
    assert dataclasses.replace(from_cli, cpus=0) == NodeConfig()
    assert from_cli.cpus == NodeConfig().cpu_count() >= 1


def test_every_option_of_the_tables_reaches_the_configuration():
    fields = {field.name for field in dataclasses.fields(SchedulerConfig)}
    process_only = {'debug', 'config', 'save_config', 'daemon', 'pid_file', 'log_file'}
    for option in SCHEDULER_OPTIONS:
        if option.dest in process_only or not option.effect:  # dispy's, accepted
            continue
        link, _, part = option.dest.partition('_')
        assert option.dest in fields or (link + '_tls' in fields and part in TLSFiles._fields)
    node_fields = {field.name for field in dataclasses.fields(NodeConfig)}
    for option in NODE_OPTIONS:
        if option.dest not in process_only and option.effect:
            assert option.dest in node_fields or option.dest in TLSFiles._fields


@pytest.mark.parametrize('changes, field', [
    ({'pulse_interval': 0.5}, 'pulse_interval'),
    ({'pulse_interval': float('nan')}, 'pulse_interval'),
    ({'ping_interval': 5000}, 'ping_interval'),
    ({'port': 70000}, 'port'),
    ({'node_port': 0}, 'node_port'),
    ({'zombie_interval': 0}, 'zombie_interval'),
    ({'max_file_size': -1}, 'max_file_size'),
    ({'max_node_losses': 0}, 'max_node_losses'),
    ({'max_unauthenticated_per_source': 0}, 'max_unauthenticated_per_source'),
    ({'node_tls': TLSFiles(keyfile='k.pem')}, 'node_keyfile'),
    ({'cluster_tls': TLSFiles(cafile='ca.pem')}, 'cluster_cafile'),
    ({'ip_addr': ['127.0.0.1'], 'ext_ip_addr': ['192.0.2.1', '192.0.2.2']}, 'ext_ip_addr'),
])
def test_a_program_gets_the_rules_of_the_command_line(changes, field):
    with pytest.raises(ConfigError) as info:
        SchedulerConfig(**changes).check()
    assert info.value.field == field


def test_free_ports_are_for_programs_that_read_back_what_they_got():
    assert SchedulerConfig(port=0, scheduler_port=0).check().port == 0
    with pytest.raises(SystemExit):
        scheduler_parser().parse_args(['--port', '0'])


def test_node_cpus():
    assert NodeConfig(cpus=3).cpu_count(available=8) == 3
    assert NodeConfig(cpus=0).cpu_count(available=8) == 8
    assert NodeConfig(cpus=-2).cpu_count(available=8) == 6
    with pytest.raises(ConfigError) as info:
        NodeConfig(cpus=-10000).check()
    assert info.value.field == 'cpus'


def test_the_state_directory_defaults_below_the_files_directory():
    assert SchedulerConfig(dest_path_prefix='/srv/d').state_path == '/srv/d/state'
    assert SchedulerConfig(state_dir='/var/lib/s').state_path == '/var/lib/s'


def write(tmp_path, text):
    path = tmp_path / 'options.conf'
    path.write_text(text)
    return str(path)


def test_an_option_file_under_the_command_line(tmp_path):
    path = write(tmp_path, '[dispyscheduler]\nnodes = a\n  b\ndebug = yes\nport = 9000\n'
                           'node_secret = from-file\n')
    parse = lambda *argv: optionfile.parse_args(  # noqa: E731
        scheduler_parser(), SCHEDULER_OPTIONS, ['--config', path] + list(argv))
    options = parse()
    assert options.nodes == ['a', 'b'] and options.debug is True and options.port == 9000
    options = parse('-n', 'c', '--port', '9001')
    assert options.nodes == ['c'] and options.port == 9001  # replaced, not added to
    assert options.node_secret == 'from-file'


@pytest.mark.parametrize('text, reason', [
    ('[dispynode]\nport = 1\n', 'no [dispyscheduler] section'),
    ('[dispyscheduler]\nno_such = 1\n', "unknown option 'no_such'"),
    ('[dispyscheduler]\nconfig = other.conf\n', "unknown option 'config'"),
    ('[dispyscheduler]\nport = http\n', 'option port'),
    ('[dispyscheduler]\ndebug = perhaps\n', 'option debug'),
])
def test_a_bad_option_file_is_one_clear_error(tmp_path, text, reason):
    with pytest.raises(ValueError) as info:
        optionfile.read_option_file('dispyscheduler', SCHEDULER_OPTIONS, write(tmp_path, text))
    assert reason in str(info.value)


def test_saved_options_read_back_the_same(tmp_path):
    argv = ['-n', 'a', '-n', 'b', '--debug', '--httpd', '8181', '--pulse_interval', '2',
            '--node_secret', 's']
    options = scheduler_parser().parse_args(argv)
    path = str(tmp_path / 'saved.conf')
    optionfile.write_option_file('dispyscheduler', SCHEDULER_OPTIONS, options, path)
    again = optionfile.parse_args(scheduler_parser(), SCHEDULER_OPTIONS, ['--config', path])
    assert scheduler_config(again) == scheduler_config(options)
    assert again.debug is True


@pytest.mark.parametrize('argv', [
    ['--memory', '64G', '--gpus', '0,1', '--resource', 'licence=2', '--resource', 'disk=1'],
    ['--gpus', ''],  # none, not "find them with nvidia-smi"
])
def test_a_nodes_resources_read_back_the_same_from_its_saved_options(tmp_path, argv):
    options = node_parser().parse_args(argv)
    path = str(tmp_path / 'node.conf')
    optionfile.write_option_file('dispynode', NODE_OPTIONS, options, path)
    again = optionfile.parse_args(node_parser(), NODE_OPTIONS, ['--config', path])
    assert node_config(again) == node_config(options)
    assert node_config(again).gpus == (['0', '1'] if len(argv) > 2 else [])


@pytest.mark.parametrize('argv, reason', [
    (['--resource', 'licence'], 'say name=count'),
    (['--resource', 'cpus=2'], 'use --cpus'),
    (['--resource', 'licence=-1'], 'cannot be negative'),
    (['--gpus', '0,0'], 'names a GPU twice'),
    (['--memory', 'lots'], 'a size'),
])
def test_bad_resource_options_are_one_clear_error(argv, reason, capsys):
    with pytest.raises(SystemExit):
        node_parser().parse_args(argv)
    assert reason in capsys.readouterr().err
