"""Child processes of the local stack: start, wait until ready, stop by PID."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Ports handed out by this process: a port given to one server is not given to the next before it binds.
_handed_out: set[int] = set()
_LOWEST_PORT = 15000


def free_port() -> int:
    """A port free now on 127.0.0.1, below the system's ephemeral range where it can: a port the kernel
    picks for `bind(0)` comes from the range its outgoing connections use too, and one of those (the
    stack's own clients) could take it before the server that was given it binds (seen in the tests:
    "Address already in use")."""
    low, high = _LOWEST_PORT, _ephemeral_start() - 1
    for _ in range(200 if high > low else 0):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def grpc_serving(address: str, service: str = "") -> bool:
    """True when the gRPC server at `address` reports `service` SERVING (grpc.health.v1)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{tail}")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def terminate(self) -> None:
        """SIGTERM to the whole process group, without waiting (see `stop`)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then waits up to `timeout` seconds before SIGKILL."""
        self.terminate()
        if self.process.poll() is not None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL to the whole process group, then reap it."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.process.wait(10)


def spawn(
    name: str, argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Child:
    """Starts argv in its own process group, output appended to log_dir/name.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    handle = log.open("ab")
    process = subprocess.Popen(
        list(argv),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    handle.close()
    return Child(name, process, log)
