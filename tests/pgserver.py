"""A real PostgreSQL server for tests: Debian's binaries, a throwaway cluster on a free 127.0.0.1 port.

initdb refuses to run as root, so under root the cluster belongs to the ``postgres`` system user the Debian
package creates (commands run through ``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path


def find_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``root`` is created if missing; under root it must be reachable by the ``postgres`` user, so by
    default the cluster lives in a fresh world-traversable folder under the system temp directory."""

    def __init__(self, root: Path | None = None) -> None:
        import tempfile

        if root is None:
            root = Path(tempfile.mkdtemp(prefix="edgeslim-pg-"))
            root.chmod(0o755)
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:1])} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> str:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "edgeslim", "--no-sync")
        self._run(pg_ctl, "-D", str(self.data), "-w", "-t", "60", "-l", str(self.root / "log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return f"postgresql+psycopg2://edgeslim@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        pg_ctl = find_bin("pg_ctl")
        if pg_ctl and self.data.exists():
            subprocess.run([*self.as_user, pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
