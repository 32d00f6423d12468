"""Hosts for tests that need real networks: network namespaces, veth links, bridges, a router,
NAT. Everything is made by the test (as root) and removed afterwards; addresses are private
(10.x) and exist only inside these namespaces.

A "LAN" is a namespace holding a bridge; a host is a namespace with one veth end in that
bridge. A router is a host with a leg on two LANs and forwarding on; it can also do NAT.
"""

import itertools
import os
import shutil
import subprocess

_counter = itertools.count()


def run(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def available():
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return 'network namespaces need root'
    if shutil.which('ip') is None:
        return 'the ip command (iproute2) is not installed'
    name = 'dsp-probe-%d' % os.getpid()
    probe = run('ip', 'netns', 'add', name, check=False)
    if probe.returncode != 0:
        return 'cannot create a network namespace: %s' % probe.stderr.strip()
    run('ip', 'netns', 'del', name, check=False)
    return None


def nat_available():
    return shutil.which('nft') is not None


class Network:
    """The namespaces of one test."""

    def __init__(self):
        self.tag = '%x%x' % (os.getpid() % 0xfff, next(_counter))
        self.namespaces = []
        self.links = {}  # host -> (its interface, the bridge side's interface, the LAN)

    def ns(self, name):
        return 'dsp%s-%s' % (self.tag, name)

    def _add_namespace(self, name):
        namespace = self.ns(name)
        run('ip', 'netns', 'add', namespace)
        self.namespaces.append(namespace)
        self.exec(name, 'ip', 'link', 'set', 'lo', 'up')
        return namespace

    def exec(self, name, *argv, check=True):
        return run('ip', 'netns', 'exec', self.ns(name), *argv, check=check)

    def lan(self, name):
        """A LAN: a namespace with a bridge in it."""
        self._add_namespace(name)
        self.exec(name, 'ip', 'link', 'add', 'br0', 'type', 'bridge')
        self.exec(name, 'ip', 'link', 'set', 'br0', 'up')
        return name

    def host(self, name, lan, address, gateway=None):
        """A host with ``address`` (CIDR) on ``lan``, and a default route via ``gateway``."""
        self._add_namespace(name)
        self.attach(name, lan, address)
        if gateway:
            self.exec(name, 'ip', 'route', 'add', 'default', 'via', gateway)
        return name

    def attach(self, name, lan, address):
        """One more leg for ``name``, on ``lan``."""
        legs = sum(1 for (host, _) in self.links if host == name)
        inside, outside = 'eth%d' % legs, 'v%s%d%s' % (self.tag, legs, name)[:15]
        run('ip', 'link', 'add', inside, 'netns', self.ns(name), 'type', 'veth', 'peer', 'name',
            outside, 'netns', self.ns(lan))
        self.exec(lan, 'ip', 'link', 'set', outside, 'master', 'br0')
        self.exec(lan, 'ip', 'link', 'set', outside, 'up')
        self.exec(name, 'ip', 'addr', 'add', address, 'dev', inside)
        self.exec(name, 'ip', 'link', 'set', inside, 'up')
        self.links[(name, lan)] = (inside, outside)

    def router(self, name, legs):
        """A host on several LANs (``[(lan, address), ...]``) that forwards between them."""
        self._add_namespace(name)
        for lan, address in legs:
            self.attach(name, lan, address)
        self.exec(name, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1')
        return name

    def forward_ports(self, router, public, private, tcp_ports, udp_ports):
        """NAT on ``router``: connections to ``public`` on these ports go to ``private``, and
        what the inside sends out leaves with the router's address (nftables)."""
        rules = ['table ip nat {',
                 ' chain prerouting { type nat hook prerouting priority -100;']
        for protocol, ports in (('tcp', tcp_ports), ('udp', udp_ports)):
            for port in ports:
                rules.append('  ip daddr %s %s dport %d dnat to %s;'
                             % (public, protocol, port, private))
        rules += [' }', ' chain postrouting { type nat hook postrouting priority 100;',
                  '  ip saddr %s masquerade;' % private, ' }', '}']
        subprocess.run(['ip', 'netns', 'exec', self.ns(router), 'nft', '-f', '-'],
                       input='\n'.join(rules), text=True, check=True, capture_output=True,
                       timeout=30)

    def link(self, name, lan, up):
        """Take the cable of ``name`` on ``lan`` out (or put it back): no close, no reset."""
        _, outside = self.links[(name, lan)]
        self.exec(lan, 'ip', 'link', 'set', outside, 'up' if up else 'down')

    def command(self, name, argv):
        """``argv`` to run on host ``name``."""
        return ['ip', 'netns', 'exec', self.ns(name)] + list(argv)

    def remove(self):
        for namespace in reversed(self.namespaces):
            run('ip', 'netns', 'del', namespace, check=False)
        self.namespaces = []


def drop_udp(network, host, port, percent):
    """Make ``host`` lose ``percent`` % of the UDP datagrams arriving on ``port`` (nftables)."""
    keep = max(1, 100 - percent)
    rules = ('table inet lossy {\n chain input { type filter hook input priority 0;\n'
             '  udp dport %d numgen random mod 100 >= %d drop;\n }\n}\n' % (port, keep))
    subprocess.run(['ip', 'netns', 'exec', network.ns(host), 'nft', '-f', '-'], input=rules,
                   text=True, check=True, capture_output=True, timeout=30)
