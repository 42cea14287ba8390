"""Real OpenSSH servers for tests: Debian's sshd on 127.0.0.1, a free port, generated host and user keys."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@dataclass
class Sshd:
    root: Path
    port: int
    host_key: Path
    user_key: Path
    known_hosts: Path
    workdir: Path
    proc: subprocess.Popen | None = None
    extra: list[str] = field(default_factory=list)
    sftp: bool = True  # False: no SFTP subsystem, as Dropbear and many embedded images

    @property
    def user(self) -> str:
        return getpass.getuser()

    def config_text(self) -> str:
        lines = [
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "StrictModes no", "UsePAM no", "PermitRootLogin yes", "LogLevel ERROR", "MaxSessions 50",
            "MaxStartups 50", *(["Subsystem sftp internal-sftp"] if self.sftp else []), *self.extra,
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> Sshd:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory, needed when run as root
        config = self.root / "sshd_config"
        config.write_text(self.config_text())
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.root / "sshd.log", "ab"), start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def kill(self) -> None:
        """SIGKILL the server and every session under it (the agent included), as a pulled cable would."""
        if self.proc is None:
            return
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def board_toml(self, python: str, key: Path | None = None, known_hosts: Path | None = None) -> str:
        return (f'[[boards]]\nhost = "127.0.0.1"\nport = {self.port}\nuser = "{self.user}"\n'
                f'key = "{key or self.user_key}"\nknown_hosts = "{known_hosts or self.known_hosts}"\n'
                f'python = "{python}"\nworkdir = "{self.workdir}"\n')

    def board(self, python: str, **overrides):
        from edgeslim.profile import BoardSettings

        data = dict(host="127.0.0.1", port=self.port, user=self.user, key=str(self.user_key),
                    known_hosts=str(self.known_hosts), python=python, workdir=str(self.workdir))
        data.update(overrides)
        return BoardSettings(**data)


def make_sshd(root: Path, user_key: Path, host_key: Path | None = None, sftp: bool = True) -> Sshd:
    root.mkdir(parents=True, exist_ok=True)
    host_key = host_key or keygen(root / "host_ed25519")
    (root / "authorized_keys").write_text(Path(str(user_key) + ".pub").read_text())
    port = free_port()
    known_hosts = root / "known_hosts"
    pub = Path(str(host_key) + ".pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    return Sshd(root=root, port=port, host_key=host_key, user_key=user_key, known_hosts=known_hosts,
                workdir=root / "board-workdir", sftp=sftp).start()
