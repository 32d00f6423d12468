"""Unit tests of the command-line parsers (never the mains: they monkey-patch gevent)."""

import pytest

from dispyscheduler.cli import node_parser, scheduler_parser, size
from dispyscheduler.constants import (
    DEFAULT_DEST_PATH_PREFIX,
    DEFAULT_NODE_DEST_PATH_PREFIX,
    MAX_FILE_SIZE,
    NODE_PORT,
    PING_INTERVAL,
    PULSE_INTERVAL,
    SCHEDULER_CLIENT_PORT,
    SCHEDULER_NODE_PORT,
    ZOMBIE_INTERVAL,
)


def refused(parser, argv, capsys):
    """Parse ``argv`` expecting exit status 2 and a single line on stderr; return that line."""
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ''
    assert err.endswith('\n') and err.count('\n') == 1, err
    return err


def test_port_constants():
    assert (SCHEDULER_NODE_PORT, NODE_PORT, SCHEDULER_CLIENT_PORT) == (51347, 51348, 51349)


def test_scheduler_defaults():
    options = scheduler_parser().parse_args([])
    assert options.port == SCHEDULER_NODE_PORT == 51347
    assert options.node_port == NODE_PORT == 51348
    assert options.scheduler_port == SCHEDULER_CLIENT_PORT == 51349
    assert options.pulse_interval == PULSE_INTERVAL
    assert options.ping_interval == PING_INTERVAL
    assert options.zombie_interval == ZOMBIE_INTERVAL
    assert options.max_file_size == MAX_FILE_SIZE
    assert options.dest_path_prefix == DEFAULT_DEST_PATH_PREFIX
    assert options.nodes == [] and options.ip_addr == [] and options.ext_ip_addr == []
    assert options.node_secret == '' and options.cluster_secret == ''
    assert options.debug is False and options.state_dir is None


def test_node_defaults():
    options = node_parser().parse_args([])
    assert options.node_port == NODE_PORT == 51348
    assert options.scheduler_port == SCHEDULER_NODE_PORT == 51347
    assert options.zombie_interval == ZOMBIE_INTERVAL
    assert options.max_file_size == MAX_FILE_SIZE
    assert options.dest_path_prefix == DEFAULT_NODE_DEST_PATH_PREFIX
    assert options.cpus == 0 and options.secret == ''
    assert options.ip_addr is None and options.ext_ip_addr is None


def test_defaults_are_fresh_lists_per_parse():
    """``action='append'`` with a shared default list must not leak between parses."""
    scheduler_parser().parse_args(['-n', 'a'])
    assert scheduler_parser().parse_args([]).nodes == []


def test_repeatable_options():
    options = scheduler_parser().parse_args([
        '-n', 'node1', '--nodes', '10.0.0.7', '-n', 'node3',
        '-i', '127.0.0.1', '--ip_addr', '127.0.0.2',
        '--ext_ip_addr', '192.0.2.1', '--ext_ip_addr', '192.0.2.2'])
    assert options.nodes == ['node1', '10.0.0.7', 'node3']
    assert options.ip_addr == ['127.0.0.1', '127.0.0.2']
    assert options.ext_ip_addr == ['192.0.2.1', '192.0.2.2']


def test_ip_address_accepted_by_both_parsers():
    assert scheduler_parser().parse_args(['-i', '127.0.0.1']).ip_addr == ['127.0.0.1']
    assert node_parser().parse_args(['-i', '127.0.0.1']).ip_addr == '127.0.0.1'


def test_valid_values():
    options = scheduler_parser().parse_args([
        '--pulse_interval', '1', '--ping_interval', '1000', '-p', '1',
        '--scheduler_port', '65535', '--node_port', '9000', '--zombie_interval', '0.5'])
    assert options.pulse_interval == 1.0 and options.ping_interval == 1000.0
    assert (options.port, options.scheduler_port, options.node_port) == (1, 65535, 9000)
    assert options.zombie_interval == 0.5
    assert scheduler_parser().parse_args(['--pulse_interval', '600']).pulse_interval == 600.0


@pytest.mark.parametrize('text, expected', [
    ('0', 0), ('123', 123), ('10k', 10240), ('10K', 10240), ('10kb', 10240),
    ('2m', 2 * 1024 * 1024), ('1g', 1 << 30), ('1t', 1 << 40), ('1.5k', 1536),
])
def test_max_file_size_with_suffixes(text, expected):
    assert scheduler_parser().parse_args(['--max_file_size', text]).max_file_size == expected
    assert node_parser().parse_args(['--max_file_size', text]).max_file_size == expected


@pytest.mark.parametrize('argv, option', [
    (['--pulse_interval', '0'], '--pulse_interval'),
    (['--pulse_interval', '601'], '--pulse_interval'),
    (['--pulse_interval', 'abc'], '--pulse_interval'),
    (['--pulse_interval', 'nan'], '--pulse_interval'),
    (['--ping_interval', '0'], '--ping_interval'),
    (['--port', '0'], '--port'),
    (['--port', '70000'], '--port'),
    (['--port', 'http'], '--port'),
    (['--scheduler_port', '0'], '--scheduler_port'),
    (['--max_file_size', '-1'], '--max_file_size'),
    (['--max_file_size', '10x'], '--max_file_size'),
    (['--max_file_size', ''], '--max_file_size'),
    (['--zombie_interval', '0'], '--zombie_interval'),
    (['--no_such_option'], 'no_such_option'),
])
def test_bad_scheduler_values_exit_2_with_one_line(argv, option, capsys):
    err = refused(scheduler_parser(), argv, capsys)
    assert err.startswith('dispyscheduler: error:')
    assert option in err


@pytest.mark.parametrize('argv, option', [
    (['--node_port', '0'], '--node_port'),
    (['-p', '70000'], '--node_port'),
    (['--scheduler_port', '65536'], '--scheduler_port'),
    (['--max_file_size', '-1'], '--max_file_size'),
    (['-c', 'two'], '--cpus'),
])
def test_bad_node_values_exit_2_with_one_line(argv, option, capsys):
    err = refused(node_parser(), argv, capsys)
    assert err.startswith('dispynode: error:')
    assert option in err


def test_max_file_size_overflow_is_a_usage_error(capsys):
    """Regression: ``int(float('inf'))`` raises OverflowError, which argparse does not turn
    into a usage error; ``--max_file_size inf`` (or ``1e400``) once crashed with a traceback."""
    for text in ('inf', '1e400'):
        refused(scheduler_parser(), ['--max_file_size', text], capsys)


def test_size_function_directly():
    assert size('10k') == 10240
    assert size(' 3M ') == 3 << 20


def test_dispy_4_15_option_names_are_aliases(tmp_path):
    """dispy 4.15's command lines and saved option files work: --host, --ext_host, --node,
    --scheduler_host are the seed's -i, --ext_ip_addr, -n, --scheduler_node; its options that
    mean nothing here are accepted without effect."""
    options = scheduler_parser().parse_args(
        ['--host', '127.0.0.1', '--ext_host', '10.0.0.1', '--node', '10.0.0.2', '--node',
         '10.0.0.3', '--msg_timeout', '20', '--fair_cluster_scheduler', '--cooperative',
         '--cleanup_nodes', '--clean', '--early_cluster_scheduler'])
    assert options.ip_addr == ['127.0.0.1'] and options.ext_ip_addr == ['10.0.0.1']
    assert options.nodes == ['10.0.0.2', '10.0.0.3']
    node = node_parser().parse_args(['--host', '127.0.0.2', '--scheduler_host', '127.0.0.1',
                                     '--msg_timeout', '5', '--client_shutdown'])
    assert node.ip_addr == '127.0.0.2' and node.scheduler_node == '127.0.0.1'
    saved = tmp_path / 'dispynode.conf'
    saved.write_text('[dispynode]\nhost = 127.0.0.3\nscheduler_host = 127.0.0.1\n'
                     'msg_timeout = 10\n')
    from dispyscheduler.cli import NODE_OPTIONS
    from dispyscheduler.optionfile import parse_args
    parsed = parse_args(node_parser(), NODE_OPTIONS, ['--config', str(saved)])
    assert parsed.ip_addr == '127.0.0.3' and parsed.scheduler_node == '127.0.0.1'


def test_bare_httpd_serves_on_dispys_port():
    assert scheduler_parser().parse_args(['--httpd']).httpd == ('127.0.0.1', 8181)
    assert scheduler_parser().parse_args(['--httpd', '9000']).httpd == ('127.0.0.1', 9000)
    assert scheduler_parser().parse_args([]).httpd is None


def test_node_serve_service_window_and_clean():
    options = node_parser().parse_args(['--serve', '3', '--service_start', '08:00',
                                        '--service_stop', '17:30', '--service_end',
                                        '18:00:30', '--clean'])
    assert options.serve == 3 and options.clean
    assert (options.service_start, options.service_stop, options.service_end) == (
        8 * 3600, 17 * 3600 + 1800, 18 * 3600 + 30)


@pytest.mark.parametrize('argv, option', [
    (['--service_start', '25:00'], '--service_start'),
    (['--service_end', 'tonight'], '--service_end'),
    (['--serve', '0'], '--serve'),
])
def test_bad_node_service_values_exit_2_with_one_line(argv, option, capsys):
    assert option in refused(node_parser(), argv, capsys)


# what dispy 4.15.2's ``dispyscheduler.py --save_config`` and ``dispynode.py --save_config``
# wrote for the command lines in their first lines
DISPY_SCHEDULER_FILE = '''# -i 127.0.0.1 -n 127.0.0.2 --httpd --clean
[DEFAULT]
loglevel = False
nodes = ['127.0.0.2']
hosts = ['127.0.0.1']
ext_hosts = []
dispy_port = 9700
ipv4_udp_multicast = False
node_secret = s
node_keyfile =
node_certfile =
cluster_secret = c
cluster_certfile =
cluster_keyfile =
pulse_interval = 0
ping_interval = 0
zombie_interval = 60
msg_timeout = 10
dest_path_prefix = None
max_file_size = 0
clean = True
http_server = True
scheduler_alg = None
cooperative = False
cleanup_nodes = False
daemon = False
'''

DISPY_NODE_FILE = '''# -i 127.0.0.2 --serve 3 --service_start 08:00 --service_end 18:00 -s sec
[DEFAULT]
cpus = 0
loglevel = True
hosts = ['127.0.0.2']
ext_hosts = []
dispy_port = 9700
ipv4_udp_multicast = False
name =
dest_path_prefix =
node_init =
scheduler_host =
max_file_size = 0
zombie_interval = 60.0
ping_interval = 0
service_start = 08:00
service_stop =
service_end = 18:00
serve = 3
client_shutdown = False
force_cleanup = False
msg_timeout = 10
secret = sec
admin_secret =
certfile =
keyfile =
clean = False
safe_setup = True
daemon = False
'''


def test_option_files_dispy_4_15_saved_are_read(tmp_path):
    from dispyscheduler.cli import NODE_OPTIONS, SCHEDULER_OPTIONS, scheduler_config
    from dispyscheduler.optionfile import parse_args
    scheduler_file = tmp_path / 'dispyscheduler.conf'
    scheduler_file.write_text(DISPY_SCHEDULER_FILE)
    options = parse_args(scheduler_parser(), SCHEDULER_OPTIONS, ['--config',
                                                                 str(scheduler_file)])
    assert options.ip_addr == ['127.0.0.1'] and options.nodes == ['127.0.0.2']
    assert options.ext_ip_addr == [] and options.httpd == ('127.0.0.1', 8181)
    assert (options.node_secret, options.cluster_secret) == ('s', 'c')
    assert options.pulse_interval == PULSE_INTERVAL and not options.debug
    config = scheduler_config(options)
    assert config.max_file_size == 0 and config.zombie_interval == 60
    node_file = tmp_path / 'dispynode.conf'
    node_file.write_text(DISPY_NODE_FILE)
    node = parse_args(node_parser(), NODE_OPTIONS, ['--config', str(node_file), '--cpus', '1'])
    assert node.ip_addr == '127.0.0.2' and node.secret == 'sec' and node.debug
    assert (node.serve, node.service_start, node.service_stop, node.service_end) == (
        3, 8 * 3600, None, 18 * 3600)
    assert node.cpus == 1 and node.scheduler_node is None and not node.clean
