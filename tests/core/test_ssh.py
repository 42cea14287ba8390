"""The SSH runner and the board pool against real OpenSSH servers on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeslim.measure import LocalRunner, measure
from edgeslim.pool import BoardPool
from edgeslim.profile import MeasurementSettings
from edgeslim.ssh import Deadlines, SSHRunner
from tests.conftest import run_cli
from tests.sshd import keygen, make_sshd

pytest.importorskip("paramiko")
if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
    pytest.skip("OpenSSH server not installed (apt-get install openssh-server; .ci/run does it)",
                allow_module_level=True)

FAST = MeasurementSettings(warmup=2, min_runs=10, min_seconds=0.05, retries=0, timeout_s=60)
PYTHON = sys.executable  # the "board" is this machine: its Python has onnxruntime


@pytest.fixture(scope="session")
def user_key(tmp_path_factory) -> Path:
    return keygen(tmp_path_factory.mktemp("keys") / "id_ed25519")


@pytest.fixture
def sshd(tmp_path, user_key):
    server = make_sshd(tmp_path / "sshd", user_key)
    yield server
    server.kill()


@pytest.fixture
def four_sshd(tmp_path, user_key):
    servers = [make_sshd(tmp_path / f"sshd{i}", user_key) for i in range(4)]
    yield servers
    for s in servers:
        s.kill()


def job(path: Path, **extra) -> dict:
    return {"runtime": "onnxruntime", "artifact": str(path), "options": {"threads": 1}, "input_shapes": {}, **extra}


def big_model(path: Path, n: int = 4096) -> Path:
    """A real model with a 64 MB weight: uploads take long enough to be interrupted."""
    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.mark.timing
def test_ssh_measures_what_the_local_agent_measures(sshd, resnet_onnx):
    remote = measure(SSHRunner(sshd.board(PYTHON)), job(resnet_onnx), FAST)
    local = measure(LocalRunner(), job(resnet_onnx), FAST)
    assert 0.33 < remote.p50_ms / local.p50_ms < 3.0  # the same machine, measured by the same agent


def test_bench_over_ssh_matches_local_and_caches_uploads(sshd, resnet_onnx):
    runner = SSHRunner(sshd.board(PYTHON))
    remote = measure(runner, job(resnet_onnx), FAST)
    local = measure(LocalRunner(), job(resnet_onnx), FAST)
    assert remote.usable, remote.error
    assert remote.where.startswith("ssh://") and remote.runtime_version == local.runtime_version
    assert runner.uploads == 2  # the agent and the model
    again = measure(runner, job(resnet_onnx), FAST)
    assert again.usable and runner.uploads == 2  # a re-measure uploads nothing
    # a new connection still finds the cache on the board
    fresh = SSHRunner(sshd.board(PYTHON))
    assert measure(fresh, job(resnet_onnx), FAST).usable and fresh.uploads == 0
    cached = list((sshd.workdir / "cache").iterdir())
    assert not [p for p in cached if p.name.endswith(".part")]
    assert not list((sshd.workdir / "jobs").iterdir())  # job files cleaned up


def test_unknown_host_key_is_refused_unless_asked(sshd, resnet_onnx, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    result = SSHRunner(sshd.board(PYTHON, known_hosts=str(empty))).run_job(job(resnet_onnx), 30)
    assert result.status == "host_key" and "not in" in result.error and "ssh-keyscan" in result.error
    assert result.p50_ms is None
    trusting = SSHRunner(sshd.board(PYTHON, known_hosts=str(empty)), accept_new_host_keys=True)
    trusting.connect()
    assert "127.0.0.1" in empty.read_text()
    assert SSHRunner(sshd.board(PYTHON, known_hosts=str(empty))).run_job(job(resnet_onnx), 30).status != "host_key"


def test_changed_host_key_is_refused(sshd, resnet_onnx, tmp_path):
    other = keygen(tmp_path / "other_host")
    pub = Path(str(other) + ".pub").read_text().split()
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    result = SSHRunner(sshd.board(PYTHON, known_hosts=str(changed)), accept_new_host_keys=True).run_job(
        job(resnet_onnx), 30)
    assert result.status == "host_key" and "CHANGED" in result.error and "ssh-keygen -R" in result.error


def test_wrong_user_key_fails_fast(sshd, resnet_onnx, tmp_path):
    wrong = keygen(tmp_path / "wrong_key")
    started = time.monotonic()
    result = SSHRunner(sshd.board(PYTHON, key=str(wrong))).run_job(job(resnet_onnx), 30)
    assert result.status == "auth" and time.monotonic() - started < 10


def test_unreachable_board_is_typed(tmp_path, resnet_onnx, user_key):
    from tests.sshd import free_port

    board = make_board_settings(free_port(), user_key, tmp_path)
    result = SSHRunner(board, deadlines=Deadlines(connect_s=2)).run_job(job(resnet_onnx), 30)
    assert result.status == "unreachable" and result.p50_ms is None


def make_board_settings(port, key, tmp_path):
    from edgeslim.profile import BoardSettings

    (tmp_path / "kh").write_text("")
    return BoardSettings(host="127.0.0.1", port=port, key=str(key), known_hosts=str(tmp_path / "kh"), python=PYTHON,
                         workdir=str(tmp_path / "wd"))


def kill_when(predicate, server, timeout=60.0) -> threading.Thread:
    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                server.kill()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sshd_killed_during_upload(four_sshd, tmp_path):
    model = big_model(tmp_path / "big.onnx")
    victim, spare = four_sshd[0], four_sshd[1]
    runner = SSHRunner(victim.board(PYTHON), deadlines=Deadlines(upload_s=60))
    cache = victim.workdir / "cache"

    def uploading() -> bool:
        try:
            return cache.exists() and any(p.name.endswith(".part") and p.stat().st_size > 1 << 20
                                          for p in cache.iterdir())
        except FileNotFoundError:
            return False

    watcher = kill_when(uploading, victim)
    started = time.monotonic()
    result = runner.run_job(job(model), 60)
    watcher.join()
    assert result.status in ("disconnected", "unreachable"), result
    assert time.monotonic() - started < 60
    final = [p for p in cache.iterdir() if not p.name.endswith(".part")] if cache.exists() else []
    assert not [p for p in final if p.suffix == ".onnx"], "a partial artifact was left under its final name"
    # in a pool the job finishes on another board
    pool = BoardPool([SSHRunner(victim.board(PYTHON), deadlines=Deadlines(connect_s=2)),
                      SSHRunner(spare.board(PYTHON))], max_failures=1)
    result = pool.run_job(job(model, warmup=1, min_runs=5, min_seconds=0), 60)
    assert result.usable and result.where.endswith(f":{spare.port}")


def test_sshd_killed_during_a_run(four_sshd, resnet_onnx):
    victim, spare = four_sshd[0], four_sshd[1]
    pool = BoardPool([SSHRunner(victim.board(PYTHON), deadlines=Deadlines(connect_s=2)),
                      SSHRunner(spare.board(PYTHON))], max_failures=1)
    jobs_dir = victim.workdir / "jobs"
    watcher = kill_when(lambda: jobs_dir.exists() and any(jobs_dir.iterdir()), victim)
    started = time.monotonic()
    # force the first job onto the victim: it is first in the queue
    result = pool.run_job(job(resnet_onnx, warmup=1, min_runs=10, min_seconds=3.0), 30)
    watcher.join()
    assert result.usable, result
    assert result.where.endswith(f":{spare.port}")
    assert any(str(victim.port) in k for k in pool.removed)
    assert time.monotonic() - started < 30


def test_hanging_benchmark_times_out(sshd, resnet_onnx):
    runner = SSHRunner(sshd.board(PYTHON))
    started = time.monotonic()
    result = runner.run_job(job(resnet_onnx, warmup=0, min_runs=10**9, min_seconds=3600, max_seconds=3600,
                                deadline_s=3), timeout_s=3)
    assert result.status in ("timeout", "crash") and result.p50_ms is None
    assert time.monotonic() - started < 20


def test_ten_megabytes_on_both_streams_do_not_deadlock(sshd):
    runner = SSHRunner(sshd.board(PYTHON))
    script = "import sys; sys.stdout.write('o' * 10_000_000); sys.stdout.flush(); sys.stderr.write('e' * 10_000_000)"
    result = runner.exec(f"{PYTHON} -c \"{script}\"", deadline_s=60)
    assert result.exit_status == 0
    assert len(result.stdout) == 10_000_000 and len(result.stderr) == 10_000_000


def test_twenty_concurrent_measurements_over_four_boards(four_sshd, resnet_onnx):
    runners = [SSHRunner(s.board(PYTHON)) for s in four_sshd]
    busy: dict[str, int] = {r.where: 0 for r in runners}
    overlap = []
    lock = threading.Lock()
    for runner in runners:
        original = runner._run_job

        def tracked(j, t, _orig=original, _where=runner.where):
            with lock:
                busy[_where] += 1
                overlap.append(busy[_where])
            try:
                return _orig(j, t)
            finally:
                with lock:
                    busy[_where] -= 1

        runner._run_job = tracked
    pool = BoardPool(runners)
    results = pool.run_many([job(resnet_onnx, warmup=1, min_runs=5, min_seconds=0) for _ in range(20)], 60)
    assert all(r.usable for r in results), [r.error for r in results if not r.usable]
    assert max(overlap) == 1  # never two jobs on one board at once
    assert all(n >= 1 for n in pool.jobs_per_board.values())  # every board worked
    assert sum(pool.jobs_per_board.values()) == 20


def test_model_path_with_spaces_and_shell_metacharacters(sshd, resnet_onnx, tmp_path):
    odd_dir = tmp_path / "my models; $(touch PWNED) `id` 'q' \"d\""
    odd_dir.mkdir()
    odd = odd_dir / "net & co | $HOME.onnx"
    shutil.copyfile(resnet_onnx, odd)
    board = sshd.board(PYTHON, workdir=str(tmp_path / "work dir; $(touch PWNED2)"))
    result = SSHRunner(board).run_job(job(odd, warmup=1, min_runs=5, min_seconds=0), 60)
    assert result.usable, result.error
    assert not list(Path.home().glob("PWNED*")) and not list(tmp_path.glob("**/PWNED*"))


def test_same_host_key_on_two_boards_warns(tmp_path, user_key):
    shared = keygen(tmp_path / "cloned_host_key")
    a = make_sshd(tmp_path / "a", user_key, host_key=shared)
    b = make_sshd(tmp_path / "b", user_key, host_key=shared)
    try:
        pool = BoardPool([SSHRunner(a.board(PYTHON)), SSHRunner(b.board(PYTHON))])
        warnings = pool.check_host_keys()
        assert warnings and "same host key" in warnings[0]
    finally:
        a.kill()
        b.kill()


def test_search_and_bench_through_ssh_profile(four_sshd, resnet_onnx, tmp_path):
    profile = tmp_path / "boards.toml"
    profile.write_text('name = "test-boards"\nextends = "local-cpu"\n[measurement]\nwarmup = 2\nmin_runs = 10\n'
                       'min_seconds = 0.1\nverify_rounds = 2\n\n'
                       + "\n".join(s.board_toml(PYTHON) for s in four_sshd[:2]))
    proc = run_cli("bench", resnet_onnx, "--profile", profile, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["where"].startswith("ssh://")
    out = tmp_path / "run"
    proc = run_cli("search", resnet_onnx, "--profile", profile, "--budget-ms", "0.0001", "--trials", "4",
                   "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["measurement"]["where"].startswith("pool of 2")
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    assert all(r["latency"]["where"].startswith("ssh://") for r in records if r["latency"])
    proc = run_cli("doctor", "--profile", profile, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["boards"]) == 2 and all(b["ok"] for b in report["boards"])
    assert report["boards"][0]["facts"]["runtimes"]["onnxruntime"]


@pytest.fixture
def sshd_without_sftp(tmp_path, user_key):
    """Dropbear and many embedded images: an SSH server that runs commands but offers no SFTP subsystem."""
    server = make_sshd(tmp_path / "nosftp", user_key, sftp=False)
    yield server
    server.kill()


def test_board_without_sftp_is_measured_over_exec_channels(sshd_without_sftp, resnet_onnx):
    runner = SSHRunner(sshd_without_sftp.board(PYTHON))
    first = measure(runner, job(resnet_onnx), FAST)
    assert (first.usable, runner.transfer, runner.uploads) == (True, "exec", 2), first.error


def test_board_without_sftp_keeps_its_upload_cache(sshd_without_sftp, resnet_onnx):
    measure(SSHRunner(sshd_without_sftp.board(PYTHON)), job(resnet_onnx), FAST)
    fresh = SSHRunner(sshd_without_sftp.board(PYTHON))
    again = measure(fresh, job(resnet_onnx), FAST)
    leftovers = [p.name for p in (sshd_without_sftp.workdir / "cache").iterdir() if p.name.endswith(".part")]
    assert (again.usable, fresh.uploads, leftovers) == (True, 0, [])


def test_upload_over_exec_is_checked_by_sha256(sshd_without_sftp, tmp_path):
    runner = SSHRunner(sshd_without_sftp.board(PYTHON))
    local = tmp_path / "payload.bin"
    local.write_bytes(np.random.default_rng(1).bytes(3 << 20))  # several stdin chunks, binary
    with pytest.raises(Exception, match="sha256"):
        runner.ensure_file(local, "payload.bin", "0" * 64)  # a digest the board cannot reproduce


def test_doctor_checks_upload_and_run_on_a_board_without_sftp(sshd_without_sftp, tmp_path):
    profile = tmp_path / "nosftp.toml"
    profile.write_text('name = "no-sftp"\nextends = "local-cpu"\n\n' + sshd_without_sftp.board_toml(PYTHON))
    proc = run_cli("doctor", "--profile", profile, "--json")
    assert json.loads(proc.stdout)["boards"][0]["transfer"] == "exec", proc.stderr


def test_unknown_host_key_hint_names_the_real_host_port_and_profile(sshd, resnet_onnx, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    profile = tmp_path / "board.toml"
    profile.write_text('name = "one-board"\nextends = "local-cpu"\n\n'
                       + sshd.board_toml(PYTHON, known_hosts=empty))
    proc = run_cli("bench", resnet_onnx, "--profile", profile)
    expected = (f"measurement host_key: host key of [127.0.0.1]:{sshd.port}",
                f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}", f"doctor --profile {profile} --accept-new")
    assert [part in proc.stderr for part in expected] + [proc.stderr.count("is not in")] == [True, True, True, 1]


def test_no_key_and_no_agent_says_how_to_make_one(sshd, resnet_onnx, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    runner = SSHRunner(sshd.board(PYTHON, key=None), profile_ref="my-board.toml")
    result = runner.run_job(job(resnet_onnx), 30)
    assert (result.status, "ssh-keygen -t ed25519" in result.error, f"ssh-copy-id -p {sshd.port}" in result.error,
            "my-board.toml" in result.error) == ("auth", True, True, True)
