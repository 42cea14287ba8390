"""Host-key policy for boards: known_hosts is checked, an unknown key is refused unless the user opts in."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any


class SSHFailure(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status



class StrictHostKeys:
    """paramiko policy: refuse unknown hosts, or with ``accept_new`` add them to known_hosts (trust on first use)."""

    def __init__(self, known_hosts: Path, accept_new: bool, host: str = "HOST", port: int = 22,
                 profile_ref: str = "PROFILE") -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.host = host
        self.port = port
        self.profile_ref = profile_ref

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        import paramiko

        if not self.accept_new:
            raise SSHFailure(
                "host_key",
                f"host key of {hostname} ({key.get_name()} SHA256:{fingerprint(key)}) is not in {self.known_hosts}; "
                f"verify it on the board (ssh-keygen -lf /etc/ssh/ssh_host_{_short(key)}_key.pub) and add it with "
                f"`ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}`, or run `edgeslim doctor --profile "
                f"{self.profile_ref} --accept-new-host-keys` to trust it on first use",
            )
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        host_keys = paramiko.HostKeys()
        if self.known_hosts.exists():
            host_keys.load(str(self.known_hosts))
        host_keys.add(hostname, key.get_name(), key)
        host_keys.save(str(self.known_hosts))


def fingerprint(key: Any) -> str:
    """SHA256 fingerprint as ssh-keygen -l prints it."""
    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _short(key: Any) -> str:
    name = key.get_name()
    return {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(name, "ecdsa" if "ecdsa" in name else name)
