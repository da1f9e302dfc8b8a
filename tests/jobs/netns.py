"""Hosts for tests: network namespaces joined by a bridge in the test's own namespace (root only, `ip` from
iproute2). Each namespace gets one address on a private /24 that exists only on that bridge; the test reaches every
"host" through it, and the hosts reach each other."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str

    def command(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *args]


def namespaces_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def bridged_hosts(count: int) -> Iterator[tuple[str, list[Host]]]:
    """Yields (the /24 in CIDR form, the hosts)."""
    tag = uuid.uuid4().hex[:6]
    octet = random.randint(10, 250)
    network = f"10.231.{octet}.0/24"
    bridge = f"jbr{tag}"
    hosts = [Host(f"jobs-{tag}-{index}", f"10.231.{octet}.{index + 2}") for index in range(count)]
    created: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"10.231.{octet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for index, host in enumerate(hosts):
            _ip("netns", "add", host.namespace)
            created.append(host.namespace)
            veth = f"jv{tag}{index}"
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            _ip("link", "set", veth, "master", bridge, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        yield network, hosts
    finally:
        for namespace in created:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
