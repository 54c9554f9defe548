"""Ports for the local stack's servers (devstack.processes.free_port): free, not handed out twice, and
outside the range the system draws its outgoing connections' ports from (where a client of the stack
could take a server's port before it binds: seen as "Address already in use" in the tests)."""

from __future__ import annotations

import socket
from pathlib import Path

from services.devstack.processes import free_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(port < ephemeral for port in ports), ports
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: a server can take it
