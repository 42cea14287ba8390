"""SSH overhead per candidate, and measurement throughput with 1, 2 and 4 boards.

    python benchmarks/ssh_overhead.py [--candidates 6] [--jobs 12] [--reps 3]

The "boards" are real OpenSSH servers on 127.0.0.1 (Debian's sshd, as in the tests), so this measures
edgeslim's own cost: connection reuse, upload + sha256 check + rename, the job file, draining the streams.
All boards share this 2-core machine, so throughput cannot scale past ~2x here; on real boards each has
its own CPU. Configurations are interleaved across repetitions; medians and ranges are reported.
Writes benchmarks/results/ssh_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from edgeslim.measure import LocalRunner  # noqa: E402
from edgeslim.pool import BoardPool  # noqa: E402
from edgeslim.ssh import SSHRunner  # noqa: E402
from tests.models import make_resnet  # noqa: E402
from tests.sshd import keygen, make_sshd  # noqa: E402

PROTOCOL = {"warmup": 5, "min_runs": 30, "min_seconds": 0.5, "max_seconds": 30, "max_cv": 10.0}


def export(seed: int, path: Path) -> Path:
    torch.onnx.export(make_resnet(seed), (torch.randn(1, 3, 32, 32),), str(path), input_names=["images"],
                      opset_version=17, dynamo=False)
    return path


def job(path: Path) -> dict:
    return {"runtime": "onnxruntime", "artifact": str(path), "options": {"threads": 1}, "input_shapes": {},
            **PROTOCOL}


def timed(runner, j) -> tuple[float, float]:
    t0 = time.perf_counter()
    stats = runner.run_job(j, 120)
    wall = time.perf_counter() - t0
    assert stats.usable, stats.error
    return wall, sum(stats.samples_ms) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgeslim-ssh-bench-"))
    key = keygen(tmp / "id_ed25519")
    servers = [make_sshd(tmp / f"board{i}", key) for i in range(4)]
    try:
        models = [export(seed, tmp / f"candidate{seed}.onnx") for seed in range(args.candidates)]
        size_mb = models[0].stat().st_size / 1e6
        ssh = SSHRunner(servers[0].board(sys.executable))
        local = LocalRunner()
        rows = {"local": [], "ssh_first": [], "ssh_cached": []}
        timed_s = []
        for model in models:  # interleaved: local, ssh (new artifact: uploads), ssh again (cached)
            wall, measured = timed(local, job(model))
            rows["local"].append(wall)
            timed_s.append(measured)
            rows["ssh_first"].append(timed(ssh, job(model))[0])
            rows["ssh_cached"].append(timed(ssh, job(model))[0])
        med = {k: statistics.median(v) for k, v in rows.items()}
        measurement = statistics.median(timed_s)
        overhead = {
            "local_wall_s": med["local"], "ssh_new_artifact_wall_s": med["ssh_first"],
            "ssh_cached_artifact_wall_s": med["ssh_cached"], "timed_runs_s": measurement,
            "ssh_extra_new_s": med["ssh_first"] - med["local"], "ssh_extra_cached_s": med["ssh_cached"] - med["local"],
            "ranges": {k: [min(v), max(v)] for k, v in rows.items()}, "artifact_mb": size_mb,
        }
        overhead["ssh_extra_new_over_measurement"] = overhead["ssh_extra_new_s"] / measurement
        overhead["ssh_extra_cached_over_measurement"] = overhead["ssh_extra_cached_s"] / measurement

        throughput: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for _ in range(args.reps):
            for n in (1, 2, 4):  # interleaved across repetitions
                pool = BoardPool([SSHRunner(s.board(sys.executable)) for s in servers[:n]])
                jobs = [job(models[i % len(models)]) for i in range(args.jobs)]
                pool.run_many(jobs[:n], 120)  # warm the connections and caches: we time measuring, not setup
                t0 = time.perf_counter()
                results = pool.run_many(jobs, 120)
                elapsed = time.perf_counter() - t0
                assert all(r.usable for r in results)
                throughput[n].append(args.jobs / elapsed * 60)
                pool.close()
        tp = {n: {"median_jobs_per_min": statistics.median(v), "min": min(v), "max": max(v)}
              for n, v in throughput.items()}
        result = {"command": "python benchmarks/ssh_overhead.py", "date": time.strftime("%Y-%m-%d %H:%M"),
                  "protocol": PROTOCOL, "candidates": args.candidates, "jobs": args.jobs, "reps": args.reps,
                  "overhead": overhead, "throughput": tp,
                  "speedup_2_boards": tp[2]["median_jobs_per_min"] / tp[1]["median_jobs_per_min"],
                  "speedup_4_boards": tp[4]["median_jobs_per_min"] / tp[1]["median_jobs_per_min"]}
        out = ROOT / "benchmarks" / "results"
        out.mkdir(exist_ok=True)
        (out / "ssh_overhead.json").write_text(json.dumps(result, indent=2))
        o = overhead
        md = "\n".join([
            f"| per candidate (median of {args.candidates}) | wall s | range |",
            "|---|---|---|",
            f"| local agent process | {o['local_wall_s']:.2f} | {o['ranges']['local'][0]:.2f}-"
            f"{o['ranges']['local'][1]:.2f} |",
            f"| SSH, new artifact ({size_mb:.1f} MB upload + sha256 + rename) | {o['ssh_new_artifact_wall_s']:.2f} | "
            f"{o['ranges']['ssh_first'][0]:.2f}-{o['ranges']['ssh_first'][1]:.2f} |",
            f"| SSH, cached artifact | {o['ssh_cached_artifact_wall_s']:.2f} | {o['ranges']['ssh_cached'][0]:.2f}-"
            f"{o['ranges']['ssh_cached'][1]:.2f} |",
            "",
            f"timed runs inside the agent: {measurement:.2f} s per candidate; SSH adds "
            f"{o['ssh_extra_new_s']:.2f} s ({o['ssh_extra_new_over_measurement']:.2f}x the measurement) for a new "
            f"artifact and {o['ssh_extra_cached_s']:.2f} s ({o['ssh_extra_cached_over_measurement']:.2f}x) for a "
            "cached one.",
            "",
            "| boards | jobs/min (median) | range |",
            "|---|---|---|",
            *[f"| {n} | {tp[n]['median_jobs_per_min']:.1f} | {tp[n]['min']:.1f}-{tp[n]['max']:.1f} |" for n in tp],
            "",
            f"throughput ratio vs 1 board: 2 boards {result['speedup_2_boards']:.2f}x, 4 boards "
            f"{result['speedup_4_boards']:.2f}x (all boards share this 2-core machine)",
        ])
        (out / "ssh_overhead.md").write_text(md + "\n")
        print(md)
    finally:
        for s in servers:
            s.kill()


if __name__ == "__main__":
    main()
