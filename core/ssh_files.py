"""Files on a board: over SFTP when the SSH server offers it, over plain exec channels when it does not.

Dropbear and many embedded images run an SSH server without the SFTP subsystem; opening one there fails with
"Channel closed". Such boards still run commands, so files travel as the stdin of ``cat > path`` and are
checked by sha256 on the board before they are used (the caller does that for both ways).
"""

from __future__ import annotations

import select
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgeslim.host_keys import SSHFailure

if TYPE_CHECKING:
    from edgeslim.ssh import SSHRunner

CHUNK = 1 << 16


class BoardFiles(Protocol):
    """What the runner needs from a board's file system; paths are relative to the login directory or absolute."""

    kind: str  # "sftp" or "exec": shown by doctor and in the failure messages

    def exists(self, path: str) -> bool: ...

    def mkdirs(self, path: str) -> None: ...

    def put(self, local: Path, remote: str, deadline_s: float) -> None: ...

    def write_text(self, remote: str, text: str) -> None: ...

    def rename(self, old: str, new: str) -> None: ...

    def remove(self, path: str) -> None: ...


class SftpFiles:
    kind = "sftp"

    def __init__(self, sftp: Any, where: str) -> None:
        self.sftp = sftp
        self.where = where

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
            return True
        except OSError:
            return False

    def mkdirs(self, path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and not self.exists(sub):
                self.sftp.mkdir(sub)

    def put(self, local: Path, remote: str, deadline_s: float) -> None:
        started = time.monotonic()

        def check_deadline(done: int, total: int) -> None:
            if time.monotonic() - started > deadline_s:
                raise SSHFailure("timeout", f"{self.where}: upload of {local.name} exceeded "
                                            f"{deadline_s:.0f}s ({done}/{total} bytes)")

        self.sftp.put(str(local), remote, callback=check_deadline, confirm=True)

    def write_text(self, remote: str, text: str) -> None:
        with self.sftp.open(remote, "w") as fh:
            fh.write(text)

    def rename(self, old: str, new: str) -> None:
        self.sftp.posix_rename(old, new)

    def remove(self, path: str) -> None:
        self.sftp.remove(path)


class ExecFiles:
    """The same operations as shell commands (POSIX sh, test, mkdir, cat, mv, rm: present on any board)."""

    kind = "exec"

    def __init__(self, runner: SSHRunner) -> None:
        self.runner = runner

    def _run(self, command: str, stdin: bytes | Path | None = None, deadline_s: float | None = None) -> None:
        result = self.runner.exec(command, deadline_s=deadline_s, stdin=stdin)
        if result.exit_status != 0:
            raise OSError(f"`{command}` exited {result.exit_status} on {self.runner.where}: "
                          f"{result.stderr.decode('utf-8', 'replace').strip()[-200:]}")

    def exists(self, path: str) -> bool:
        return self.runner.exec(f"test -f {shlex.quote(path)}").exit_status == 0

    def mkdirs(self, path: str) -> None:
        self._run(f"mkdir -p {shlex.quote(path)}")

    def put(self, local: Path, remote: str, deadline_s: float) -> None:
        self._run(f"cat > {shlex.quote(remote)}", stdin=local, deadline_s=deadline_s)

    def write_text(self, remote: str, text: str) -> None:
        self._run(f"cat > {shlex.quote(remote)}", stdin=text.encode())

    def rename(self, old: str, new: str) -> None:
        self._run(f"mv -f {shlex.quote(old)} {shlex.quote(new)}")

    def remove(self, path: str) -> None:
        self._run(f"rm -f {shlex.quote(path)}")


def send_stdin(channel: Any, stdin: bytes | Path, deadline: float, where: str) -> None:
    """Write ``stdin`` to a started command and close its input; the deadline covers the whole transfer."""
    if isinstance(stdin, Path):
        with open(stdin, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                _send(channel, block, deadline, where)
    else:
        for start in range(0, len(stdin), CHUNK):
            _send(channel, stdin[start:start + CHUNK], deadline, where)
    channel.shutdown_write()


def _send(channel: Any, block: bytes, deadline: float, where: str) -> None:
    if time.monotonic() > deadline:
        raise SSHFailure("timeout", f"{where}: sending a file to the board did not finish in time")
    channel.sendall(block)


def read_until_exit(channel: Any, transport: Any, deadline: float, max_output: int, where: str,
                    allowed_s: float) -> tuple[bytearray, bytearray]:
    """A started command's stdout and stderr, drained concurrently (either may fill its window while the other
    is read) until the board has sent both the exit status and the end of the output; each kept to its last
    ``max_output`` bytes. SSHFailure "disconnected", or "timeout" past ``deadline`` (``allowed_s`` after the
    start)."""
    out, err = bytearray(), bytearray()
    while True:
        progressed = False
        while channel.recv_ready():
            out += channel.recv(1 << 16)
            progressed = True
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 16)
            progressed = True
        del out[: max(0, len(out) - max_output)], err[: max(0, len(err) - max_output)]
        drained = not channel.recv_ready() and not channel.recv_stderr_ready()
        # the exit status AND the end of output: OpenSSH may send the status before the tail still in the
        # command's pipes (10 MB of stderr read 9,961,472 bytes when the status alone ended the loop)
        if drained and channel.exit_status_ready() and (channel.eof_received or channel.closed):
            return out, err
        if channel.closed or not transport.is_active():
            if drained and channel.exit_status_ready():
                return out, err
            raise SSHFailure("disconnected", f"{where}: connection lost while running a command")
        if time.monotonic() > deadline:
            channel.close()
            raise SSHFailure("timeout", f"{where}: command did not finish within {allowed_s:.0f}s")
        if not progressed:
            select.select([channel], [], [], 0.05)
