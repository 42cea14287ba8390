"""Does an INT8 model from edgeslim run on aarch64 ONNX Runtime, and does it compute what it does on x86?

    python benchmarks/aarch64_check.py [--root DIR] [--ort 1.22.1]

Sets up a real aarch64 CPython with PyPI's aarch64 numpy and onnxruntime wheels, run under qemu-user
(Debian's arm64 packages, unpacked with dpkg -x: no chroot, no board). Needs `apt-get install qemu-user`,
`dpkg --add-architecture arm64 && apt-get update` once (root). onnxruntime 1.22-1.24 work under Debian's
qemu 7.2; 1.31's aarch64 wheel segfaults on import there.

Then: builds a ResNet-style model on x86, quantizes it with edgeslim's INT8 technique (each QDQ encoding),
runs FP32 and INT8 on x86 and on aarch64 with the same inputs, compares outputs, and runs edgeslim's agent on
aarch64 to check the measurement path works there. Emulated timings are NOT latency and are not reported.
Writes benchmarks/results/aarch64_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARM_PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libssl3", "libstdc++6", "libgcc-s1", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1",
    "libncursesw6", "libtinfo6", "libreadline8", "libdb5.3", "libnsl2", "libtirpc3", "libcrypt1",
]
#: exit status when the aarch64 packages cannot be fetched (no registry reachable): the test skips on it
OFFLINE_EXIT = 4
TOLERANCE = {"fp32_max_abs": 1e-4, "int8_cosine": 0.999, "int8_top1_agreement": 1.0}

RUN_ON_ARM = r"""
import sys, json, platform
import numpy as np, onnxruntime as ort
inputs = np.load(sys.argv[1])["x"]
out = {}
for path in sys.argv[3:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out[path] = np.concatenate([s.run(None, {name: inputs[i:i+1]})[0] for i in range(len(inputs))])
np.savez(sys.argv[2], **{str(i): v for i, v in enumerate(out.values())})
print(json.dumps({"machine": platform.machine(), "onnxruntime": ort.__version__}))
"""


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def setup(root: Path, ort_version: str) -> tuple[Path, Path]:
    sysroot, site = root / "sysroot", root / "site"
    python = sysroot / "usr" / "bin" / "python3.11"
    if python.exists() and (site / "onnxruntime").exists():
        return python, site
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    sh(["apt-get", "download", *[f"{p}:arm64" for p in ARM_PACKAGES]], cwd=debs)
    for deb in debs.glob("*.deb"):
        sh(["dpkg", "-x", str(deb), str(sysroot)])
    wheels = root / "wheels"
    sh([sys.executable, "-m", "pip", "download", "-q", "--platform", "manylinux_2_28_aarch64", "--only-binary=:all:",
        "--python-version", "3.11", "--no-deps", "-d", str(wheels), "numpy", f"onnxruntime=={ort_version}"])
    for wheel in wheels.glob("*.whl"):
        sh([sys.executable, "-m", "zipfile", "-e", str(wheel), str(site)])
    return python, site


def arm(python: Path, site: Path, sysroot: Path, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run(["qemu-aarch64", "-L", str(sysroot), str(python), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache" / "edgeslim" / "aarch64")
    parser.add_argument("--ort", default="1.22.1")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    try:
        python, site = setup(args.root, args.ort)
    except subprocess.CalledProcessError as exc:
        # apt-get download / pip download need the package registries: offline, there is nothing to check
        print(f"cannot fetch the aarch64 packages ({' '.join(exc.cmd[:3])}...: {(exc.stderr or '').strip()[-300:]})")
        raise SystemExit(OFFLINE_EXIT) from None
    # the models and outputs (17 MB) live in a folder removed afterwards: every CI run goes through here
    with tempfile.TemporaryDirectory(prefix="edgeslim-a64-") as work:
        status = check(python, site, args.root / "sysroot", Path(work), args.results)
    sys.exit(status)


def check(python: Path, site: Path, sysroot: Path, work: Path, results: Path) -> int:
    """Build, run on both machines, compare; write the results; 0 when everything is within tolerance."""
    import onnxruntime as ort
    import torch

    from edgeslim.host import load_registry
    from edgeslim.model import load_onnx_source
    from edgeslim.plugins.quantization import INT8_SCHEMES
    from edgeslim.technique import BuildContext
    from tests.models import make_resnet

    fp32 = work / "fp32.onnx"
    torch.onnx.export(make_resnet(0, 32), (torch.randn(1, 3, 32, 32),), str(fp32), input_names=["images"],
                      opset_version=17, dynamo=False)
    source = load_onnx_source(fp32, work / "src", {}, None)
    rng = np.random.default_rng(0)
    calib = [{"images": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(32)]
    tech = load_registry().techniques["quantization"]
    models = {"fp32": source.onnx_path}
    for scheme in [name for name, encoding in INT8_SCHEMES.items() if encoding.quantizer == "onnxruntime"]:
        plan = {"layers": {layer.name: {"bits": 8} for layer in source.layers}, "model": {"int8_scheme": scheme}}
        ctx = BuildContext(source=source, calibration=calib, work_dir=work)
        models[scheme] = tech.apply_onnx(source.onnx_path, plan, ctx, work / f"{scheme}.onnx")
    inputs = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    np.savez(work / "inputs.npz", x=inputs)
    x86 = {}
    for name, path in models.items():
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x86[name] = np.concatenate([s.run(None, {"images": inputs[i : i + 1]})[0] for i in range(len(inputs))])
    (work / "run_on_arm.py").write_text(RUN_ON_ARM)
    t0 = time.time()
    proc = arm(python, site, sysroot, [str(work / "run_on_arm.py"), str(work / "inputs.npz"), str(work / "arm.npz"),
                                       *[str(p) for p in models.values()]])
    if proc.returncode != 0:
        raise SystemExit(f"aarch64 run failed: {proc.stderr[-2000:]}")
    arm_info = json.loads(proc.stdout.strip().splitlines()[-1])
    emulated_s = time.time() - t0
    arm_out = np.load(work / "arm.npz")
    rows = []
    for i, name in enumerate(models):
        a, b = x86[name], arm_out[str(i)]
        cos = float(np.mean([np.dot(p, q) / (np.linalg.norm(p) * np.linalg.norm(q))
                             for p, q in zip(a, b, strict=True)]))
        agree = float((a.argmax(1) == b.argmax(1)).mean())
        vs_fp32 = float((b.argmax(1) == x86["fp32"].argmax(1)).mean())
        max_abs = float(np.abs(a - b).max())
        if name == "fp32":
            ok = max_abs <= TOLERANCE["fp32_max_abs"]
        else:
            ok = cos >= TOLERANCE["int8_cosine"] and agree >= TOLERANCE["int8_top1_agreement"]
        rows.append({"model": name, "max_abs_diff_arm_vs_x86": max_abs, "cosine_arm_vs_x86": cos,
                     "top1_agreement_arm_vs_x86": agree, "top1_agreement_arm_vs_fp32": vs_fp32, "within": ok})
    # the measurement path on aarch64: the agent itself, status only (emulated timings are not latency)
    job = work / "job.json"
    job.write_text(json.dumps({"runtime": "onnxruntime", "artifact": str(models["s8s8-per-channel"]),
                               "options": {"threads": 1}, "input_shapes": {}, "warmup": 1, "min_runs": 5,
                               "min_seconds": 0}))
    # a copy, as the runners do: beside targets/onnxruntime.py the real onnxruntime package would be shadowed
    agent_copy = work / "edgeslim_agent.py"
    agent_copy.write_text((ROOT / "targets" / "agent.py").read_text())
    agent = arm(python, site, sysroot, [str(agent_copy), "--job", str(job)])
    agent_result = json.loads(agent.stdout.strip().splitlines()[-1]) if agent.stdout.strip() else {}
    result = {"command": "python benchmarks/aarch64_check.py", "date": time.strftime("%Y-%m-%d %H:%M"),
              "x86_onnxruntime": ort.__version__, "aarch64": arm_info, "tolerance": TOLERANCE, "rows": rows,
              "agent_on_aarch64": {"status": agent_result.get("status"), "machine": agent_result.get("machine"),
                                   "runtime_version": agent_result.get("runtime_version"), "n": agent_result.get("n")},
              "emulated_wall_s": emulated_s, "all_within": all(r["within"] for r in rows)}
    out = results
    out.mkdir(parents=True, exist_ok=True)
    (out / "aarch64_check.json").write_text(json.dumps(result, indent=2))
    md = [f"aarch64 onnxruntime {arm_info['onnxruntime']} (qemu-user) vs x86_64 onnxruntime {ort.__version__}, "
          "16 inputs, ResNet-style CNN:", "",
          "| model | max abs diff | cosine | top-1 agree (arm vs x86) | top-1 agree (arm vs fp32) | within tolerance |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['max_abs_diff_arm_vs_x86']:.2e} | {r['cosine_arm_vs_x86']:.6f} | "
           f"{r['top1_agreement_arm_vs_x86']:.2f} | {r['top1_agreement_arm_vs_fp32']:.2f} | {r['within']} |"
           for r in rows]
    md += ["", f"tolerance: FP32 max abs diff <= {TOLERANCE['fp32_max_abs']}; INT8 cosine >= "
           f"{TOLERANCE['int8_cosine']} and identical top-1. Agent on aarch64: status "
           f"{result['agent_on_aarch64']['status']} on {result['agent_on_aarch64']['machine']} (timings emulated, "
           "not reported as latency)."]
    (out / "aarch64_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if result["all_within"] and agent_result.get("status") in ("ok", "noisy") else 1


if __name__ == "__main__":
    main()
