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

# Run from the source tree, the script's own folder (targets/) holds onnxruntime.py and openvino.py, which
# would shadow the real runtimes: drop that folder from the import path.
if sys.path and os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "onnxruntime.py")):
    sys.path.pop(0)

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


def _ort_session(job, profile_prefix=None):
    try:
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
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    providers = opts.get("providers") or ["CPUExecutionProvider"]
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise AgentFailure("unsupported", "execution provider(s) %s not available in onnxruntime %s" % (
            missing, ort.__version__))
    try:
        return ort.InferenceSession(job["artifact"], so, providers=providers)
    except Exception as exc:
        raise AgentFailure("crash", "onnxruntime could not load the model: %s" % str(exc).splitlines()[0]) from None


def _ort_feeds(session, job):
    import numpy as np

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
    return feeds


def load_onnxruntime(job):
    t0 = time.perf_counter()
    session = _ort_session(job)
    import onnxruntime as ort

    load_ms = (time.perf_counter() - t0) * 1000.0
    feeds = _ort_feeds(session, job)

    def run_once():
        session.run(None, feeds)

    return run_once, load_ms, ort.__version__


def load_openvino(job):
    try:
        import numpy as np
        import openvino as ov
    except ImportError as exc:
        raise AgentFailure("unsupported", "openvino is not importable here: %s" % exc) from None
    opts = job.get("options", {})
    core = ov.Core()
    device = opts.get("device", "CPU")
    if device not in core.available_devices:
        raise AgentFailure("unsupported", "OpenVINO device %s not available (have %s)" % (
            device, ", ".join(core.available_devices)))
    t0 = time.perf_counter()
    try:
        model = core.read_model(job["artifact"])
        shapes = job.get("input_shapes") or {}
        if shapes:
            model.reshape({name: dims for name, dims in shapes.items()})
        compiled = core.compile_model(model, device, opts.get("properties", {}))
    except Exception as exc:
        raise AgentFailure("crash", "OpenVINO could not load the model: %s" % str(exc).splitlines()[0]) from None
    load_ms = (time.perf_counter() - t0) * 1000.0
    rng = np.random.default_rng(0)
    feeds = {}
    for port in compiled.inputs:
        name = port.get_any_name()
        if not port.get_partial_shape().is_static:
            raise AgentFailure("bad_job", "input %r has a dynamic shape and the job gives no input_shapes" % name)
        shape = list(port.get_shape())
        dtype = port.get_element_type().to_dtype()
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    request = compiled.create_infer_request()

    def run_once():
        request.infer(feeds)

    return run_once, load_ms, ov.__version__


def profile_onnxruntime(job, runs, workdir):
    """Per-node kernel times from ONNX Runtime's own profiler, in a session of its own (profiling slows the
    run it watches, so the end-to-end samples never come from this session)."""
    session = _ort_session(job, profile_prefix=os.path.join(workdir, "ort_profile_%d" % os.getpid()))
    feeds = _ort_feeds(session, job)
    for _ in range(3):
        session.run(None, feeds)
    path = None
    try:
        for _ in range(runs):
            session.run(None, feeds)
    finally:
        path = session.end_profiling()
    try:
        with open(path) as fh:
            events = json.load(fh)
    finally:
        if path and os.path.exists(path):
            os.remove(path)
    samples, ops = {}, {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        samples.setdefault(node, []).append(float(event.get("dur", 0)) / 1000.0)
        ops[node] = (event.get("args") or {}).get("op_name", "")
    return _median_profile(samples, ops)


def _median_profile(samples, ops):
    # medians, not means: one preempted kernel on a busy core would otherwise dominate a layer's entry
    return [{"name": n, "op": ops[n], "average_ms": percentile(sorted(v), 0.5)} for n, v in samples.items()]


def profile_openvino(job, runs, workdir):
    """Per-layer times from OpenVINO's performance counters, in a compiled model of its own."""
    import openvino as ov

    opts = job.get("options", {})
    core = ov.Core()
    model = core.read_model(job["artifact"])
    shapes = job.get("input_shapes") or {}
    if shapes:
        model.reshape({name: dims for name, dims in shapes.items()})
    properties = dict(opts.get("properties", {}))
    properties["PERF_COUNT"] = True
    compiled = core.compile_model(model, opts.get("device", "CPU"), properties)
    request = compiled.create_infer_request()
    import numpy as np

    feeds = {port.get_any_name(): np.zeros(list(port.get_shape()), dtype=port.get_element_type().to_dtype())
             for port in compiled.inputs}
    samples, ops = {}, {}
    for _ in range(runs):
        request.infer(feeds)
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            samples.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1000.0)
            ops[info.node_name] = info.node_type
    return _median_profile(samples, ops)


PROFILERS = {"onnxruntime": profile_onnxruntime, "openvino": profile_openvino}


# --- TensorRT: trtexec builds and times the engine on the device ----------------------------------------------

TRT_UNSUPPORTED_MARKERS = ("Unsupported", "UNSUPPORTED", "No importer registered", "could not find any implementation",
                           "Could not find any implementation", "not supported")


def trtexec_command(job, times_path, profile_path):
    """The trtexec command line for a job (a list: never through a shell)."""
    opts = job.get("options", {})
    cmd = [opts.get("trtexec", "trtexec"), "--onnx=%s" % job["artifact"]]
    precision = opts.get("precision", "fp16")
    if precision in ("fp16", "best"):
        cmd.append("--fp16")
    if precision in ("int8", "best") or opts.get("explicit_int8"):
        cmd.append("--int8")  # with QDQ nodes in the model this is explicit quantization: no calibrator
    if precision == "best":
        cmd.append("--best")
    layer_precisions = opts.get("layer_precisions") or {}
    if layer_precisions:
        cmd.append("--layerPrecisions=" + ",".join("%s:%s" % (k, v) for k, v in sorted(layer_precisions.items())))
        cmd.append("--precisionConstraints=%s" % opts.get("precision_constraints", "obey"))
    elif opts.get("precision_constraints", "none") != "none":
        cmd.append("--precisionConstraints=%s" % opts["precision_constraints"])
    if opts.get("sparsity", "disable") != "disable":
        cmd.append("--sparsity=%s" % opts["sparsity"])
    shapes = job.get("input_shapes") or {}
    if shapes:
        cmd.append("--shapes=" + ",".join(
            "%s:%s" % (k, "x".join(str(d) for d in v)) for k, v in sorted(shapes.items())))
    if opts.get("workspace_mb"):
        cmd.append("--memPoolSize=workspace:%dM" % int(opts["workspace_mb"]))
    if opts.get("use_cuda_graph"):
        cmd.append("--useCudaGraph")
    cmd += [
        "--warmUp=%d" % int(max(1, float(job.get("min_seconds", 1.0)) * 200)),  # ms of warm-up
        "--iterations=%d" % int(job.get("min_runs", 50)),
        "--duration=%d" % int(max(1, round(float(job.get("min_seconds", 1.0))))),
        "--avgRuns=1",
        "--noDataTransfers",
        "--separateProfileRun",  # per-layer profiling distorts end-to-end times: profile in a run of its own
        "--exportTimes=%s" % times_path,
        "--exportProfile=%s" % profile_path,
    ]
    return cmd


def parse_trtexec_times(data):
    """--exportTimes JSON: one object per inference; latencyMs is host-observed, computeMs is GPU compute."""
    samples = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        value = entry.get("latencyMs", entry.get("computeMs"))
        if value is not None:
            samples.append(float(value))
    if not samples:
        raise AgentFailure("crash", "trtexec --exportTimes held no timings")
    return samples


def parse_trtexec_profile(data):
    """--exportProfile JSON: [{"count": N}, {"name", "timeMs", "averageMs", "percentage"}, ...] -> per layer."""
    layers = []
    for entry in data:
        if isinstance(entry, dict) and "name" in entry:
            layers.append({"name": entry["name"], "average_ms": float(entry.get("averageMs", 0.0)),
                           "percentage": float(entry.get("percentage", 0.0))})
    return layers


def classify_trtexec_failure(returncode, output):
    lines = [ln for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "[E]" in ln or "ERROR" in ln] or lines[-3:]
    message = " | ".join(errors[-3:])[-600:] or "trtexec exited %d" % returncode
    if any(marker in output for marker in TRT_UNSUPPORTED_MARKERS):
        return AgentFailure("unsupported", "TensorRT cannot build this model: %s" % message)
    return AgentFailure("crash", "trtexec exited %d: %s" % (returncode, message))


def measure_tensorrt(job, workdir):
    """Run trtexec; returns (samples, load_ms, version, extra) instead of a run_once callable."""
    import shutil
    import subprocess

    opts = job.get("options", {})
    exe = opts.get("trtexec", "trtexec")
    if shutil.which(exe) is None and not os.path.isfile(exe):
        raise AgentFailure("unsupported", "trtexec not found (%s): install TensorRT / JetPack or set target.trtexec"
                           % exe)
    times_path = os.path.join(workdir, "trt_times_%d.json" % os.getpid())
    profile_path = os.path.join(workdir, "trt_profile_%d.json" % os.getpid())
    cmd = trtexec_command(job, times_path, profile_path)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=float(job.get("deadline_s", 1200)))
    except subprocess.TimeoutExpired:
        raise AgentFailure("timeout", "trtexec did not finish within %ss" % job.get("deadline_s")) from None
    output = proc.stdout.decode("utf-8", "replace")
    wall_ms = (time.perf_counter() - t0) * 1000.0
    try:
        if proc.returncode != 0:
            raise classify_trtexec_failure(proc.returncode, output)
        with open(times_path) as fh:
            samples = parse_trtexec_times(json.load(fh))
        layers = []
        if os.path.exists(profile_path):
            with open(profile_path) as fh:
                layers = parse_trtexec_profile(json.load(fh))
    finally:
        for path in (times_path, profile_path):
            if os.path.exists(path):
                os.remove(path)
    version = None
    for line in output.splitlines():
        if "TensorRT version" in line or "TRT version" in line:
            version = line.split(":")[-1].strip()
            break
    return samples, wall_ms, version or "unknown", {"layer_profile": layers, "command": cmd}


def load_tensorrt_python(job):
    """TensorRT through its Python API (a GPU host or a Jetson with python3-libnvinfer and cuda-python)."""
    try:
        import numpy as np
        import tensorrt as trt
    except ImportError as exc:
        raise AgentFailure("unsupported", "tensorrt Python package not importable here: %s" % exc) from None
    try:
        from cuda import cudart
    except ImportError:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError as exc:
            raise AgentFailure("unsupported", "cuda-python is needed for device buffers: %s" % exc) from None

    def check(result):
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise AgentFailure("crash", "CUDA error %s" % err)
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    opts = job.get("options", {})
    logger = trt.Logger(trt.Logger.ERROR)
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(job["artifact"], "rb") as fh:
        if not parser.parse(fh.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise AgentFailure("unsupported", "TensorRT cannot parse the model: %s" % errors)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.get("workspace_mb", 1024)) << 20)
    precision = opts.get("precision", "fp16")
    if precision in ("fp16", "best"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision in ("int8", "best") or opts.get("explicit_int8"):
        config.set_flag(trt.BuilderFlag.INT8)
    if opts.get("sparsity", "disable") != "disable":
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    layer_precisions = opts.get("layer_precisions") or {}
    if layer_precisions:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS
                        if opts.get("precision_constraints", "obey") == "obey"
                        else trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        types = {"fp32": trt.float32, "fp16": trt.float16, "int8": trt.int8}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name in layer_precisions:
                layer.precision = types[layer_precisions[layer.name]]
    shapes = job.get("input_shapes") or {}
    if shapes:
        profile = builder.create_optimization_profile()
        for name, dims in shapes.items():
            profile.set_shape(name, dims, dims, dims)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise AgentFailure("unsupported", "TensorRT could not build an engine for this model")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    stream = check(cudart.cudaStreamCreate())
    buffers = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and name in shapes:
            context.set_input_shape(name, shapes[name])
        shape = context.get_tensor_shape(name)
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        nbytes = int(np.prod(list(shape))) * dtype.itemsize
        pointer = check(cudart.cudaMalloc(max(nbytes, 1)))
        buffers.append(pointer)
        context.set_tensor_address(name, int(pointer))
    load_ms = (time.perf_counter() - t0) * 1000.0

    def run_once():
        if not context.execute_async_v3(stream):
            raise AgentFailure("crash", "TensorRT execute_async_v3 failed")
        check(cudart.cudaStreamSynchronize(stream))

    return run_once, load_ms, trt.__version__


RUNTIMES = {"onnxruntime": load_onnxruntime, "openvino": load_openvino, "tensorrt-python": load_tensorrt_python}
#: runtimes whose own tool times the model (the agent only reads its results)
TOOL_RUNTIMES = {"tensorrt": measure_tensorrt}


_DEVICE_LOCK = []  # the open lock file, held until the process exits


def hold_device(job):
    """Wait for, then hold, this device's lock for the rest of the process; returns the wait in ms.

    Two agents timing at once on one device distort each other, whoever started them: workers of one search on
    different hosts sharing a board by mistake, two searches on one machine. The lock is an flock on a file in
    the device's temp directory, so it holds across users, processes and the hosts that send them; the kernel
    drops it when the process ends, however it ends. ``"device_lock": false`` in the job turns it off.
    """
    if not job.get("device_lock", True):
        return 0.0
    try:
        import fcntl
        import tempfile
    except ImportError:  # not a POSIX device: nothing to lock with
        return 0.0
    path = job.get("device_lock_path") or os.path.join(tempfile.gettempdir(), "edgeslim-device.lock")
    try:
        handle = open(path, "a")
    except OSError:
        try:
            handle = open(path)  # another user's lock file: flock works on a read-only descriptor too
        except OSError:
            return 0.0
    t0 = time.perf_counter()
    fcntl.flock(handle, fcntl.LOCK_EX)
    _DEVICE_LOCK.append(handle)
    return (time.perf_counter() - t0) * 1000.0


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
        if runtime not in RUNTIMES and runtime not in TOOL_RUNTIMES:
            raise AgentFailure("unsupported", "this agent does not know runtime %r" % runtime)
        if not os.path.isfile(job.get("artifact", "")):
            raise AgentFailure("bad_job", "artifact not found: %s" % job.get("artifact"))
        deadline = float(job.get("deadline_s", 0))
        if deadline > 0 and hasattr(signal, "alarm"):
            # The agent ends itself: a runner that lost its connection cannot always kill it.
            signal.alarm(int(math.ceil(deadline)))
        result["lock_wait_ms"] = hold_device(job)
        result["board_before"] = board_state()
        result["timed_from"] = time.time()
        if runtime in TOOL_RUNTIMES:
            workdir = os.path.dirname(os.path.abspath(args.job))
            samples, load_ms, version, extra = TOOL_RUNTIMES[runtime](job, workdir)
            result.update(extra)
        else:
            run_once, load_ms, version = RUNTIMES[runtime](job)
            samples = time_model(
                run_once,
                int(job.get("warmup", 10)),
                int(job.get("min_runs", 50)),
                float(job.get("min_seconds", 1.0)),
                float(job.get("max_seconds", 60.0)),
            )
            profile_runs = int(job.get("layer_profile_runs", 0))
            if profile_runs > 0 and runtime in PROFILERS:
                # after the timed runs, never during: a per-layer profile for latency lookup tables
                try:
                    result["layer_profile"] = PROFILERS[runtime](
                        job, profile_runs, os.path.dirname(os.path.abspath(args.job)))
                except Exception as exc:  # the end-to-end result stands without it
                    result["layer_profile_error"] = "%s: %s" % (type(exc).__name__, exc)
        result["timed_to"] = time.time()
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
