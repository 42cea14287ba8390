"""`edgeslim doctor`: can we reach and measure on the profile's devices? What is wrong, and how to fix it."""

from __future__ import annotations

import platform
import shutil
from typing import Any

from edgeslim.profile import Profile
from edgeslim.target import Target

MIN_FREE_BYTES = 500 * 1024 * 1024
HOT_C = 75.0


def check_facts(facts: dict[str, Any], target: type[Target] | None) -> tuple[list[str], list[str]]:
    """Problems (the device cannot measure) and warnings (it measures unsteadily) in a device's facts, for the
    modules and commands ``target``'s agent needs there."""
    problems, warnings = [], []
    runtimes = facts.get("runtimes") or {}
    commands = facts.get("commands") or {}
    for module in (target.agent_modules if target else ()):
        if not runtimes.get(module):
            problems.append(f"Python module {module} is missing: pip install {module} (in the board's `python`)")
    for command in (target.agent_commands if target else ()):
        if not commands.get(command):
            problems.append(f"{command} not on PATH: install it on the device or add its folder to PATH "
                            f"(target {target.name if target else '?'})")
    if facts.get("free_bytes", MIN_FREE_BYTES) < MIN_FREE_BYTES:
        problems.append(f"only {facts['free_bytes'] / 1e6:.0f} MB free for the workdir {facts.get('workdir')}: "
                        "free space or point workdir at a larger disk")
    governor = facts.get("governor")
    if governor and governor != "performance":
        warnings.append(f"CPU governor is {governor!r}: timings vary with frequency; for steady numbers run "
                        "`sudo cpupower frequency-set -g performance`")
    for zone, temp in (facts.get("temperatures_c") or {}).items():
        if temp >= HOT_C:
            warnings.append(f"{zone} is at {temp:.0f} C: the board may throttle; add cooling or let it cool down")
    load = (facts.get("load_avg") or [0])[0]
    if load > 1.0:
        warnings.append(f"load average {load:.1f}: other work on the board distorts measurements")
    return problems, warnings


def local_facts(modules: tuple[str, ...] = (), commands: tuple[str, ...] = ()) -> dict[str, Any]:
    import os

    def version(module: str) -> str | None:
        try:
            return __import__(module).__version__
        except Exception:
            return None

    return {"python": platform.python_version(), "machine": platform.machine(), "workdir": os.getcwd(),
            "free_bytes": shutil.disk_usage(os.getcwd()).free, "load_avg": list(os.getloadavg()),
            "runtimes": {m: version(m) for m in modules},
            "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "commands": {c: shutil.which(c) for c in commands}}


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def diagnose(profile: Profile, accept_new_host_keys: bool = False) -> dict[str, Any]:
    from edgeslim.host import load_registry

    target = load_registry().targets.get(profile.target.name)
    modules = target.agent_modules if target else ()
    commands = target.agent_commands if target else ()
    boards = []
    if not profile.boards:
        facts = local_facts(modules, commands)
        problems, warnings = check_facts(facts, target)
        boards.append({"where": "local", "ok": not problems, "problems": problems, "warnings": warnings,
                       "facts": facts})
        return {"profile": profile.name, "target": profile.target.name, "boards": boards, "warnings": []}
    from edgeslim.pool import BoardPool
    from edgeslim.ssh import SSHFailure, SSHRunner

    runners = [SSHRunner(b, accept_new_host_keys=accept_new_host_keys, profile_ref=profile.ref)
               for b in profile.boards]
    for runner in runners:
        entry: dict[str, Any] = {"where": runner.where, "problems": [], "warnings": [], "facts": {}}
        try:
            runner.connect()
            entry["host_key"] = f"SHA256:{runner.host_key_fingerprint} (known)"
            entry["facts"] = runner.probe(modules, commands)
            entry["transfer"] = runner.check_upload_and_run()  # "sftp", or "exec" when the server has no SFTP
            problems, warnings = check_facts(entry["facts"], target)
            entry["problems"] += problems
            entry["warnings"] += warnings
        except SSHFailure as failure:
            entry["problems"].append(f"{failure.status}: {failure}")
        finally:
            runner.close()
        entry["ok"] = not entry["problems"]
        boards.append(entry)
    pool = BoardPool(runners)
    warnings = pool.check_host_keys()
    pool.close()
    return {"profile": profile.name, "target": profile.target.name, "boards": boards, "warnings": warnings}
