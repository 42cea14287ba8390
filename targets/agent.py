#!/usr/bin/env python3
"""edgeslim benchmark agent: time one model on this device and print one JSON object.

Self-contained on purpose: it runs on boards that have only Python's standard
library and the runtime (plus numpy, which every runtime's Python API needs).
No edgeslim, no torch. The local runner and the SSH runner both execute this
file, so the local path exercises the remote protocol.

Usage: python3 agent.py --job job.json      (job spec: see ``main``)
Exit status 0 with ``"status": "ok"`` or ``"noisy"``; otherwise a typed status
(``crash``, ``unsupported``, ``bad_job``) and a non-zero exit.
"""

import argparse
import glob
import json
import math
import os
import platform
import signal
import statistics
import sys
import time

AGENT_VERSION = 1

ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class AgentFailure(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def board_state():
    """What the board exposes about throttling: temperatures, governor, frequency, load."""
    state = {"load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(os.path.join(zone, "temp"))
        if raw and raw.lstrip("-").isdigit():
            temps[_read(os.path.join(zone, "type")) or os.path.basename(zone)] = int(raw) / 1000.0
    state["temperatures_c"] = temps
    state["governor"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    state["cpu0_freq_mhz"] = int(freq) / 1000.0 if freq and freq.isdigit() else None
    state["cpu_count"] = os.cpu_count()
    state["throttled"] = _command_output(["vcgencmd", "get_throttled"])  # Raspberry Pi: "throttled=0x0"
    state["power_mode"] = _command_output(["nvpmodel", "-q"])  # Jetson: "NV Power Mode: 15W"
    return state


def _command_output(argv):
    try:
        import subprocess

        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, Exception):
        return None
    text = proc.stdout.decode("utf-8", "replace").strip()
    return text or None


HOT_C = 80.0


def throttling_reasons(state):
    """Why a run on this board may be slower than the board really is."""
    reasons = []
    throttled = state.get("throttled") or ""
    if "=" in throttled:
        try:
            if int(throttled.split("=", 1)[1], 16) & 0xF:  # bits 0-3: under-voltage, capped, throttled, soft limit
                reasons.append("vcgencmd reports %s" % throttled)
        except ValueError:
            pass
    for zone, temp in (state.get("temperatures_c") or {}).items():
        if temp >= HOT_C:
            reasons.append("%s at %.0f C" % (zone, temp))
    return reasons


def peak_rss_mb():
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)
    except Exception:
        return None


def _concrete_shape(name, shape, overrides):
    if name in overrides:
        return [int(d) for d in overrides[name]]
    dims = []
    for d in shape:
        if isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            raise AgentFailure(
                "bad_job", "input %r has symbolic shape %r and the job gives no input_shapes" % (name, shape)
            )
    return dims


def load_onnxruntime(job):
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        raise AgentFailure("unsupported", "onnxruntime is not importable here: %s" % exc) from None
    opts = job.get("options", {})
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(opts.get("threads", 0))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = opts.get("graph_optimization", "all")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    providers = opts.get("providers") or ["CPUExecutionProvider"]
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise AgentFailure("unsupported", "execution provider(s) %s not available in onnxruntime %s" % (
            missing, ort.__version__))
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(job["artifact"], so, providers=providers)
    except Exception as exc:
        raise AgentFailure("crash", "onnxruntime could not load the model: %s" % str(exc).splitlines()[0]) from None
    load_ms = (time.perf_counter() - t0) * 1000.0
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        shape = _concrete_shape(inp.name, inp.shape, job.get("input_shapes") or {})
        dtype = ONNX_TYPES.get(inp.type)
        if dtype is None:
            raise AgentFailure("unsupported", "input %r has type %s" % (inp.name, inp.type))
        if dtype.startswith("float"):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)

    def run_once():
        session.run(None, feeds)

    return run_once, load_ms, ort.__version__


RUNTIMES = {"onnxruntime": load_onnxruntime}


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def time_model(run_once, warmup, min_runs, min_seconds, max_seconds):
    for _ in range(warmup):
        run_once()
    samples = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run_once()
        samples.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - start
        if len(samples) >= min_runs and elapsed >= min_seconds:
            break
        if elapsed >= max_seconds and len(samples) >= 5:
            break
    return samples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="path to the job JSON")
    args = parser.parse_args(argv)
    result = {"agent_version": AGENT_VERSION, "python": platform.python_version(), "machine": platform.machine()}
    try:
        try:
            with open(args.job) as fh:
                job = json.load(fh)
        except (OSError, ValueError) as exc:
            raise AgentFailure("bad_job", "cannot read job %s: %s" % (args.job, exc)) from None
        runtime = job.get("runtime")
        if runtime not in RUNTIMES:
            raise AgentFailure("unsupported", "this agent does not know runtime %r" % runtime)
        if not os.path.isfile(job.get("artifact", "")):
            raise AgentFailure("bad_job", "artifact not found: %s" % job.get("artifact"))
        deadline = float(job.get("deadline_s", 0))
        if deadline > 0 and hasattr(signal, "alarm"):
            # The agent ends itself: a runner that lost its connection cannot always kill it.
            signal.alarm(int(math.ceil(deadline)))
        result["board_before"] = board_state()
        run_once, load_ms, version = RUNTIMES[runtime](job)
        samples = time_model(
            run_once,
            int(job.get("warmup", 10)),
            int(job.get("min_runs", 50)),
            float(job.get("min_seconds", 1.0)),
            float(job.get("max_seconds", 60.0)),
        )
        ordered = sorted(samples)
        mean = statistics.fmean(samples)
        cv = statistics.pstdev(samples) / mean if mean > 0 else 0.0
        max_cv = float(job.get("max_cv", 0.25))
        after = board_state()
        throttling = throttling_reasons(result["board_before"]) + throttling_reasons(after)
        status = "throttled" if throttling else ("ok" if cv <= max_cv else "noisy")
        result.update(
            status=status,
            throttling=throttling,
            runtime=runtime,
            runtime_version=version,
            samples_ms=[round(s, 5) for s in samples],
            n=len(samples),
            p50_ms=percentile(ordered, 0.5),
            p90_ms=percentile(ordered, 0.9),
            mean_ms=mean,
            min_ms=ordered[0],
            cv=cv,
            load_ms=load_ms,
            peak_rss_mb=peak_rss_mb(),
            board_after=after,
        )
        code = 0
    except AgentFailure as exc:
        result.update(status=exc.status, error=str(exc))
        code = 2
    except Exception as exc:  # the runner must get JSON, whatever happened
        result.update(status="crash", error="%s: %s" % (type(exc).__name__, exc))
        code = 2
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
