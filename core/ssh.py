"""Measuring on a board over SSH (paramiko): the same agent as the local runner, run on the device.

Every step has a deadline, every failure becomes a typed LatencyStats (never a latency of 0), host keys
are checked against the profile's known_hosts, and artifacts are cached on the board by content hash.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeslim.host_keys import SSHFailure, StrictHostKeys, fingerprint
from edgeslim.measure import LatencyStats, agent_path
from edgeslim.model import file_sha256 as sha256_of
from edgeslim.profile import BoardSettings
from edgeslim.ssh_files import BoardFiles, ExecFiles, SftpFiles, read_until_exit, send_stdin

#: Failures that say something about the board or the network, not about the model.
BOARD_FAILURES = ("unreachable", "auth", "host_key", "disconnected", "timeout")


@dataclass
class Deadlines:
    connect_s: float = 10.0
    banner_s: float = 10.0
    auth_s: float = 10.0
    upload_s: float = 300.0
    command_s: float = 60.0


@dataclass
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes


class SSHRunner:
    """One board. One connection, reused; artifacts and the agent cached on the board by sha256."""

    def __init__(self, board: BoardSettings, accept_new_host_keys: bool = False,
                 deadlines: Deadlines | None = None, profile_ref: str = "PROFILE") -> None:
        self.board = board
        self.profile_ref = profile_ref  # how the user named the profile: the hints tell them what to run
        self.accept_new_host_keys = accept_new_host_keys
        self.deadlines = deadlines or Deadlines()
        self.where = f"ssh://{board.user + '@' if board.user else ''}{board.host}:{board.port}"
        self._client: Any = None
        self._lock = threading.Lock()
        self.uploads = 0  # artifacts sent (tests and benchmarks read it)
        self._files: Any = None  # SftpFiles or ExecFiles, for the connection in _files_owner
        self._files_owner: Any = None
        self.transfer: str | None = None  # "sftp" or "exec", known after the first file operation
        self._present: set[str] = set()  # remote files seen on this connection: no need to stat them again
        self.host_key_fingerprint: str | None = None

    # --- connection ------------------------------------------------------------------------------------

    def connect(self) -> Any:
        import paramiko

        if self._client is not None and self._client.get_transport() and self._client.get_transport().is_active():
            return self._client
        self.close()
        known_hosts = Path(self.board.known_hosts).expanduser()
        client = paramiko.SSHClient()
        if known_hosts.exists():
            try:
                client.load_host_keys(str(known_hosts))
            except Exception as exc:
                raise SSHFailure("host_key", f"cannot read known_hosts {known_hosts}: {exc}") from None
        client.set_missing_host_key_policy(StrictHostKeys(known_hosts, self.accept_new_host_keys, self.board.host,
                                                          self.board.port, self.profile_ref))
        key = str(Path(self.board.key).expanduser()) if self.board.key else None
        if key and not Path(key).is_file():
            raise SSHFailure("auth", f"{self.where}: key file {self.board.key} not found")
        try:
            client.connect(
                self.board.host, port=self.board.port, username=self.board.user, key_filename=key,
                timeout=self.deadlines.connect_s, banner_timeout=self.deadlines.banner_s,
                auth_timeout=self.deadlines.auth_s, channel_timeout=self.deadlines.connect_s,
                allow_agent=key is None, look_for_keys=key is None, password=None,
            )
        except SSHFailure:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SSHFailure(
                "host_key",
                f"host key of {self.where} CHANGED (now {exc.key.get_name()} SHA256:{fingerprint(exc.key)}, "
                f"known_hosts has SHA256:{fingerprint(exc.expected_key)}): refusing to connect. If the board was "
                f"reinstalled, verify the new key on the board and replace its line in {known_hosts} "
                f"(ssh-keygen -R '[{self.board.host}]:{self.board.port}' -f {known_hosts})",
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SSHFailure("auth", f"{self.where}: authentication failed ({exc}); check key = ... in the profile "
                                     "and the board's ~/.ssh/authorized_keys") from None
        except TimeoutError as exc:
            client.close()
            raise SSHFailure("unreachable", f"{self.where}: no answer within {self.deadlines.connect_s:.0f}s "
                                            f"({exc or 'timeout'})") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            if "No authentication methods" in str(exc):  # no key given, none in ~/.ssh, no agent
                raise SSHFailure("auth", self._no_key_hint()) from None
            raise SSHFailure("unreachable", f"{self.where}: cannot connect: {type(exc).__name__}: {exc}") from None
        transport = client.get_transport()
        transport.set_keepalive(5)
        self.host_key_fingerprint = fingerprint(transport.get_remote_server_key())
        self._client = client
        return client

    def _no_key_hint(self) -> str:
        login = f"{self.board.user + '@' if self.board.user else ''}{self.board.host}"
        return (f"{self.where}: no SSH key to log in with (the profile's [[boards]] entry sets no key, ~/.ssh has "
                f"none and no ssh-agent runs): create one with `ssh-keygen -t ed25519`, install it with "
                f"`ssh-copy-id -p {self.board.port} {login}`, and set key = \"~/.ssh/id_ed25519\" in "
                f"{self.profile_ref}")

    def close(self) -> None:
        self._files = None
        self._files_owner = None
        self._present = set()
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
        self._client = None

    # --- commands ----------------------------------------------------------------------------------------

    def exec(self, command: str, deadline_s: float | None = None, max_output: int = 64 << 20,
             stdin: bytes | Path | None = None) -> CommandResult:
        """Run a shell command on the board; stdout and stderr drained concurrently; a deadline on the whole.
        ``stdin`` (bytes or a file) is sent first and then closed: how files reach boards without SFTP."""
        client = self.connect()
        allowed_s = deadline_s or self.deadlines.command_s
        deadline = time.monotonic() + allowed_s
        try:
            channel = client.get_transport().open_session(timeout=self.deadlines.connect_s)
            channel.exec_command(command)
        except Exception as exc:
            self.close()
            raise SSHFailure("disconnected", f"{self.where}: cannot start a command: {exc}") from None
        if stdin is not None:
            try:
                send_stdin(channel, stdin, deadline, self.where)
            except SSHFailure:
                channel.close()
                raise
            except (OSError, EOFError, Exception) as exc:
                self.close()
                raise SSHFailure("disconnected", f"{self.where}: connection lost while sending a file: "
                                                 f"{type(exc).__name__}: {exc}") from None
        try:
            try:
                out, err = read_until_exit(channel, client.get_transport(), deadline, max_output, self.where,
                                           allowed_s)
            except SSHFailure as failure:
                if failure.status == "disconnected":
                    self.close()
                raise
            status = channel.recv_exit_status()
            if status == -1:  # the server never sent an exit status: the connection died under the command
                self.close()
                raise SSHFailure("disconnected", f"{self.where}: connection lost while running a command")
            return CommandResult(status, bytes(out), bytes(err))
        finally:
            channel.close()

    def _python(self) -> str:
        return self.board.python  # a command line on purpose (e.g. "/opt/venv/bin/python3 -X utf8"): not quoted

    def _remote(self, *parts: str) -> str:
        return "/".join([self.board.workdir.rstrip("/"), *parts])

    def files(self) -> BoardFiles:
        """The board's files over SFTP, one session per connection, reused (opening one costs a round trip);
        over exec channels when the server has no SFTP subsystem (Dropbear, many embedded images)."""
        import paramiko

        client = self.connect()
        if self._files is not None and self._files_owner is client and (
                self._files.kind == "exec" or not self._files.sftp.get_channel().closed):
            return self._files
        self._present = set()
        self._files_owner = client
        if self.transfer == "exec":
            self._files = ExecFiles(self)
            return self._files
        try:
            sftp = client.open_sftp()
        except (paramiko.SSHException, EOFError, OSError):
            if not client.get_transport() or not client.get_transport().is_active():
                self.close()
                raise SSHFailure("disconnected", f"{self.where}: connection lost while opening SFTP") from None
            self.transfer = "exec"  # no SFTP subsystem: files go as the stdin of `cat`, sha256-checked
            self._files = ExecFiles(self)
            return self._files
        sftp.get_channel().settimeout(self.deadlines.connect_s)
        self.transfer = "sftp"
        self._files = SftpFiles(sftp, self.where)
        return self._files

    def ensure_file(self, local: Path, remote_name: str, digest: str) -> str:
        """Upload ``local`` as ``workdir/cache/remote_name`` unless the board already has it.

        Uploads go to a temporary name, are checked by sha256 on the board, then renamed: a connection that
        dies half-way never leaves a partial file under the final name.
        """
        final = self._remote("cache", remote_name)
        files = self.files()
        if final in self._present:
            return final
        if files.exists(final):
            self._present.add(final)
            return final
        files.mkdirs(self._remote("cache"))
        tmp = self._remote("cache", f".{remote_name}.{secrets.token_hex(4)}.part")
        try:
            files.put(local, tmp, self.deadlines.upload_s)
        except SSHFailure:
            self._try_remove(files, tmp)
            raise
        except (OSError, EOFError, Exception) as exc:
            self.close()
            raise SSHFailure("disconnected", f"{self.where}: upload of {local.name} over {files.kind} failed: "
                                             f"{type(exc).__name__}: {exc}") from None
        check = (f"{self._python()} -c {shlex.quote(_SHA_SNIPPET)} {shlex.quote(tmp)}")
        result = self.exec(check, deadline_s=self.deadlines.upload_s)
        remote_digest = result.stdout.decode().strip()
        if remote_digest != digest:
            self._try_remove(files, tmp)
            raise SSHFailure("crash", f"{self.where}: uploaded {local.name} has sha256 {remote_digest[:16]} on "
                                      f"the board, {digest[:16]} here (python: {result.stderr.decode()[-200:]})")
        files.rename(tmp, final)
        self._present.add(final)
        self.uploads += 1
        return final

    @staticmethod
    def _try_remove(files: BoardFiles, path: str) -> None:
        try:
            files.remove(path)
        except Exception:
            pass

    def upload_agent(self) -> str:
        """The board agent in the board's cache (uploaded once, checked by sha256); its remote path."""
        agent = agent_path()
        agent_digest = sha256_of(agent)
        return self.ensure_file(agent, f"agent-{agent_digest[:16]}.py", agent_digest)

    # --- the Runner protocol -------------------------------------------------------------------------------

    def run_job(self, job: dict[str, Any], timeout_s: float) -> LatencyStats:
        with self._lock:  # one job per board at a time
            import paramiko

            try:
                return self._run_job(job, timeout_s)
            except SSHFailure as failure:
                return LatencyStats(status=failure.status, error=str(failure), where=self.where)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self.close()
                return LatencyStats(status="disconnected", where=self.where,
                                    error=f"{self.where}: connection lost: {type(exc).__name__}: {exc}")

    def _run_job(self, job: dict[str, Any], timeout_s: float) -> LatencyStats:
        result = self._run_job_once(job, timeout_s)
        if result.status == "bad_job" and "not found" in (result.error or "") and self._present:
            self._present = set()  # someone cleaned the board's cache behind our back: upload again
            result = self._run_job_once(job, timeout_s)
        return result

    def _run_job_once(self, job: dict[str, Any], timeout_s: float) -> LatencyStats:
        artifact = Path(job["artifact"])
        if not artifact.is_file():
            return LatencyStats(status="bad_job", error=f"artifact not found: {artifact}", where=self.where)
        extras = [Path(e) for e in job.get("extra_files", [])]  # e.g. OpenVINO's .bin next to the .xml
        missing = [str(p) for p in extras if not p.is_file()]
        if missing:
            return LatencyStats(status="bad_job", error=f"files of the artifact not found: {missing}",
                                where=self.where)
        digests = [sha256_of(artifact)] + [sha256_of(p) for p in extras]
        # Cache names come from the whole bundle: two IRs can share an .xml and differ only in their .bin.
        bundle = hashlib.sha256("".join(digests).encode()).hexdigest() if extras else digests[0]
        remote_agent = self.upload_agent()
        remote_artifact = self.ensure_file(artifact, f"{bundle}{artifact.suffix}", digests[0])
        for extra_path, extra_digest in zip(extras, digests[1:], strict=True):
            self.ensure_file(extra_path, f"{bundle}{extra_path.suffix}", extra_digest)
        remote_job = dict(job, artifact=remote_artifact)
        remote_job.pop("extra_files", None)
        job_name = self._remote("jobs", f"{secrets.token_hex(8)}.json")
        files = self.files()
        try:
            files.mkdirs(self._remote("jobs"))
            files.write_text(job_name, json.dumps(remote_job))
        except (OSError, EOFError) as exc:
            self.close()
            raise SSHFailure("disconnected", f"{self.where}: cannot write the job file: {exc}") from None
        command = (f"cd {shlex.quote(self.board.workdir)} 2>/dev/null || cd ~/{shlex.quote(self.board.workdir)}; "
                   f"{self._python()} {shlex.quote(remote_agent)} --job {shlex.quote(job_name)}; "
                   f"status=$?; rm -f {shlex.quote(job_name)}; exit $status")
        result = self.exec(command, deadline_s=timeout_s + 10)
        lines = [ln for ln in result.stdout.decode("utf-8", "replace").splitlines() if ln.startswith("{")]
        if not lines:
            tail = (result.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
            status = "unsupported" if result.exit_status == 127 else "crash"
            return LatencyStats(status=status, error=f"agent exited {result.exit_status} on {self.where}: {tail}",
                                where=self.where)
        return LatencyStats.from_agent(json.loads(lines[-1]), self.where)

    def check_upload_and_run(self) -> str:
        """What `doctor` proves before a search relies on it: the agent uploads (sha256 checked on the board)
        and the board's python runs it. Returns how files travel ("sftp" or "exec"); raises SSHFailure."""
        remote_agent = self.upload_agent()
        result = self.exec(f"{self._python()} {shlex.quote(remote_agent)} --help", deadline_s=self.deadlines.command_s)
        if result.exit_status != 0:
            raise SSHFailure("unsupported", f"{self.where}: the uploaded agent does not run with `{self.board.python}`"
                                            f" (exit {result.exit_status}): "
                                            f"{result.stderr.decode('utf-8', 'replace').strip()[-300:]}")
        return self.transfer or "sftp"

    def probe(self, modules: tuple[str, ...] = (), commands: tuple[str, ...] = ()) -> dict[str, Any]:
        """Facts for `edgeslim doctor`: Python, the target's modules and commands, governor, temperature, free
        space in the workdir."""
        wanted = shlex.quote(json.dumps({"modules": list(modules), "commands": list(commands)}))
        result = self.exec(f"{self._python()} -c {shlex.quote(_PROBE_SNIPPET)} {shlex.quote(self.board.workdir)} "
                           f"{wanted}", deadline_s=self.deadlines.command_s)
        if result.exit_status != 0:
            raise SSHFailure("unsupported", f"{self.where}: `{self.board.python}` failed (exit "
                                            f"{result.exit_status}): {result.stderr.decode()[-300:].strip()}")
        return json.loads(result.stdout.decode().strip().splitlines()[-1])


_SHA_SNIPPET = (
    "import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n"
    "for b in iter(lambda: f.read(1<<20), b''): h.update(b)\nprint(h.hexdigest())"
)

_PROBE_SNIPPET = r"""
import json, os, platform, shutil, sys, glob
wd = sys.argv[1]
wanted = json.loads(sys.argv[2])
wd = wd if os.path.isabs(wd) else os.path.join(os.path.expanduser('~'), wd)
def ver(m):
    try:
        return __import__(m).__version__
    except Exception:
        return None
def read(p):
    try:
        return open(p).read().strip()
    except OSError:
        return None
temps = {}
for z in sorted(glob.glob('/sys/class/thermal/thermal_zone*')):
    t = read(z + '/temp')
    if t and t.lstrip('-').isdigit():
        temps[read(z + '/type') or z] = int(t) / 1000.0
probe_dir = wd if os.path.isdir(wd) else os.path.dirname(wd.rstrip('/')) or '/'
print(json.dumps({
    'python': platform.python_version(), 'machine': platform.machine(), 'workdir': wd,
    'workdir_exists': os.path.isdir(wd), 'free_bytes': shutil.disk_usage(probe_dir).free,
    'runtimes': dict((m, ver(m)) for m in wanted['modules']),
    'governor': read('/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor'),
    'temperatures_c': temps, 'load_avg': list(os.getloadavg()),
    'commands': dict((c, shutil.which(c)) for c in wanted['commands']),
}))
"""
