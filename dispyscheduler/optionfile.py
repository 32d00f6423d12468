"""Option files (``--config FILE``, ``--save_config FILE``) and the option tables they follow.

An option file is an INI file with a section named after the program (``[dispyscheduler]`` or
``[dispynode]``) whose keys are the long option names; a repeatable option takes one value per
line, a switch yes/no. Values on the command line win over the file's; a repeatable option
given on the command line replaces the file's values rather than adding to them.

Option files that dispy 4.15 saved (``--save_config``) work too: one ``[DEFAULT]`` section,
Python-style values (``['10.0.0.1']``, ``True``, ``None``), a few options under other names.

Each program's options are a table of ``Option`` entries (``cli.py``), from which its argparse
parser is built; the file is read and written through the same table, so it knows which
options are switches or repeatable without looking inside argparse.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import dataclasses
import os
from typing import Any, Callable, NoReturn, Optional, Sequence

DISPY_FILE_NAMES = {'loglevel': 'debug', 'hosts': 'host', 'ext_hosts': 'ext_host',
                    'http_server': 'httpd', 'dispy_port': None, 'ipv4_udp_multicast': None,
                    'scheduler_alg': None, 'node_init': None, 'force_cleanup': None,
                    'admin_secret': None, 'safe_setup': None}
"""dispy 4.15's names in its option files, as named here; None: no meaning here (dispy's own
ports and multicast, its scheduling algorithm, node admin features), left out."""

DISPY_FILE_DEFAULTS = {('pulse_interval', '0'), ('ping_interval', '0'), ('serve', '-1')}
"""dispy's way of writing "the default" for these options."""

VALUE, LIST, SWITCH = 'value', 'list', 'switch'
"""What an option takes: one value (the last given wins), a value each time it is given, or
nothing (it turns something on)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option."""

    flags: tuple[str, ...]
    help: str
    kind: str = VALUE
    type: Optional[Callable[[str], Any]] = None
    default: Any = None
    metavar: Optional[str] = None
    in_files: bool = True
    """Whether an option file may hold it (``--config`` itself may not, say)."""
    effect: bool = True
    """False for dispy's options that mean nothing here: accepted, and ignored."""
    const: Any = None
    """The value of the option given bare (``--httpd`` alone); None: it needs a value."""
    show: Optional[Callable[[Any], str]] = None
    """How a file holds a value that ``type`` made (``--gpus``' list, ``--resource``'s
    pair): the text ``type`` reads back; None: the value's own text."""

    @property
    def dest(self) -> str:
        return self.flags[-1].lstrip('-')

    def convert(self, text: str) -> Any:
        return self.type(text) if self.type is not None else text


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, '%s: error: %s\n' % (self.prog, message))


def build_parser(prog: str, description: str, options: Sequence[Option],
                 version: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument('--version', action='version', version='%(prog)s ' + version)
    for option in options:
        if option.kind == SWITCH:
            parser.add_argument(*option.flags, action='store_true', help=option.help,
                                dest=option.dest)
        else:
            default = [] if option.kind == LIST else option.default
            # type=None is argparse's default (no conversion), which typeshed does not allow
            extra = {} if option.const is None else {'nargs': '?', 'const': option.const}
            parser.add_argument(*option.flags, type=option.type,  # type: ignore[arg-type]
                                default=default, metavar=option.metavar, help=option.help,
                                action='append' if option.kind == LIST else 'store',
                                dest=option.dest, **extra)
    return parser


def given_on(argv: Sequence[str], option: Option) -> bool:
    return any(arg == flag or arg.startswith(flag + '=')
               for arg in argv for flag in option.flags)


def parse_args(parser: ArgumentParser, options: Sequence[Option],
               argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` with the values of ``--config FILE`` (if given) as defaults under it."""
    argv = list(argv)
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument('--config')
    known, _ = early.parse_known_args(argv)
    if known.config:
        values = read_option_file(parser.prog, options, known.config, argv, parser.error)
        parser.set_defaults(**values)
    return parser.parse_args(argv)


def read_option_file(prog: str, options: Sequence[Option], path: str,
                     argv: Sequence[str] = (),
                     error: Optional[Callable[[str], Any]] = None) -> dict[str, Any]:
    """The values ``path`` gives, converted and checked as on the command line; repeatable
    options given in ``argv`` are left out (the command line replaces them). ``error(text)``
    is called for a bad file (default: raise ValueError)."""
    def fail(text: str) -> NoReturn:
        if error is not None:
            error(text)
        raise ValueError(text)
    config = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as handle:
            config.read_file(handle)
    except (OSError, configparser.Error) as exc:
        fail('cannot read --config %s: %s' % (path, exc))
    if config.has_section(prog):
        entries = config.items(prog)
    elif config.defaults():
        try:
            entries = list(dispy_file_entries(config.defaults()).items())
        except (ValueError, SyntaxError) as exc:
            fail('--config %s: %s' % (path, exc))
    else:
        fail('--config %s has no [%s] section' % (path, prog))
    # keyed by every long name, so that files saved with dispy 4.15's names (``host``) work
    table = {flag.lstrip('-'): option for option in options if option.in_files
             for flag in option.flags if flag.startswith('--')}
    values: dict[str, Any] = {}
    for key, text in entries:
        option = table.get(key)
        if option is None:
            fail('--config %s: unknown option %r' % (path, key))
            continue
        try:
            if option.kind == SWITCH:
                values[option.dest] = to_bool(text)
            elif option.const is not None and text.strip().lower() in BOOLEANS:
                if to_bool(text):  # given bare (dispy's files say True)
                    values[option.dest] = option.const
            elif option.kind == LIST:
                if not given_on(argv, option):
                    values[option.dest] = [option.convert(item) for item in text.split()]
            else:
                values[option.dest] = option.convert(text.strip())
        except (argparse.ArgumentTypeError, ValueError) as exc:
            fail('--config %s: option %s: %s' % (path, key, exc))
    return values


BOOLEANS = configparser.ConfigParser.BOOLEAN_STATES


def to_bool(text: str) -> bool:
    try:
        return BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError('%r is not yes or no' % (text,)) from None


def dispy_file_entries(defaults: Any) -> dict[str, str]:
    """The options of a file dispy 4.15 saved, under this program's names and in its
    notation."""
    entries = {}
    for key, text in defaults.items():
        text = text.strip()
        name = DISPY_FILE_NAMES.get(key, key)
        if name is None or text in ('', 'None') or (key, text) in DISPY_FILE_DEFAULTS:
            continue
        if text.startswith('['):  # a list, as Python prints one
            items = ast.literal_eval(text)
            if not isinstance(items, list):
                raise ValueError('option %s: %r is not a list' % (key, text))
            if not items:
                continue
            text = '\n'.join(str(item) for item in items)
        entries[name] = text
    return entries


def write_option_file(prog: str, options: Sequence[Option], values: argparse.Namespace,
                      path: str) -> None:
    """Write the options in effect to ``path``, as ``--config`` reads them (mode 0600: it
    holds secrets)."""
    config = configparser.ConfigParser(interpolation=None)
    config.add_section(prog)
    for option in options:
        value = getattr(values, option.dest, None)
        if not option.in_files or value is None or value == [] and option.kind == LIST:
            continue
        if option.show is not None:
            value = '\n'.join(option.show(item) for item in value) if option.kind == LIST \
                else option.show(value)
        elif isinstance(value, bool):
            value = 'yes' if value else 'no'
        elif isinstance(value, tuple):  # an address: host:port, as given
            value = ':'.join(str(part) for part in value)
        elif isinstance(value, list):
            value = '\n'.join(str(item) for item in value)
        config.set(prog, option.dest, str(value))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        config.write(handle)
