"""Where a run's model and inputs come from: a ``.onnx`` file, a ``TASK.py`` or the built-in demo, and the
calibration inputs (``--calib``, the task's data, or synthetic inputs as a last resort)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource, load_onnx_source, torch_source
from edgeslim.task import Task, load_task
from edgeslim.torch_twin import attach_torch_twin

CALIBRATION_SAMPLES = 128
SYNTHETIC_SAMPLES = 16


def resolve_model_ref(ref: str, run_dir: Path, input_shapes: dict[str, list[int]], calib_path: str | None
                      ) -> tuple[ModelSource, Task | None, dict[str, np.ndarray] | None]:
    """A ``.onnx`` file, a ``TASK.py`` file, or ``builtin:demo``."""
    calib = load_calib(calib_path) if calib_path else None
    if ref == "builtin:demo":
        from edgeslim.demo import make_task

        task = make_task()
    elif ref.endswith(".py"):
        task = load_task(ref)
    else:
        if not Path(ref).exists():
            raise EdgeslimError(f"model not found: {ref}")
        if not ref.endswith(".onnx") and Path(ref).is_file():
            head = Path(ref).read_bytes()[:64]
            if head.lstrip().startswith((b"import", b"from", b"#", b"def")):
                raise EdgeslimError(f"{ref} looks like Python; a task file must end in .py")
        source = load_onnx_source(Path(ref), run_dir, input_shapes, calib)
        attach_torch_twin(source)
        return source, None, calib
    if isinstance(task.model, (str, Path)):
        source = load_onnx_source(Path(task.model), run_dir, input_shapes or _example_shape(task), None)
        attach_torch_twin(source)
    else:
        source = torch_source(task.model, np.asarray(task.example_input, dtype=np.float32), run_dir, task.input_name)
    return source, task, calib


def _example_shape(task: Task) -> dict[str, list[int]]:
    """A task's ONNX model with symbolic dimensions takes its input shape from the task's ``example_input``."""
    import onnx

    from edgeslim.model import graph_inputs

    try:
        inputs = graph_inputs(onnx.load(str(task.model), load_external_data=False))
    except Exception:  # noqa: BLE001 (load_onnx_source reports an unreadable model properly)
        return {}
    if len(inputs) != 1 or task.example_input is None:
        return {}
    return {inputs[0].name: [int(d) for d in np.asarray(task.example_input).shape]}


def load_calib(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise EdgeslimError(f"--calib file not found: {path}")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:
        raise EdgeslimError(f"--calib {path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if not arrays:
        raise EdgeslimError(f"--calib {path}: holds no arrays; save one per model input, keyed by input name")
    for name, arr in arrays.items():
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise EdgeslimError(f"--calib {path}: array {name!r} needs a leading batch axis with samples")
        if arr.dtype.kind not in "biuf":
            raise EdgeslimError(f"--calib {path}: array {name!r} holds {arr.dtype} values; expected numbers "
                                "(float32 for image inputs)")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise EdgeslimError(f"--calib {path}: array {name!r} holds {bad} NaN/Inf value(s); calibration needs "
                                "finite inputs")
    return arrays


def calibration_feeds(source: ModelSource, task: Task | None, calib: dict[str, np.ndarray] | None
                      ) -> tuple[list[dict[str, np.ndarray]], str]:
    names = [spec.name for spec in source.inputs]
    if calib is not None:
        missing = [n for n in names if n not in calib]
        if missing:
            raise EdgeslimError(f"--calib has no array for model input(s) {missing}; it has {sorted(calib)}")
        for spec in source.inputs:
            sample = [1, *calib[spec.name].shape[1:]]
            if sample != list(spec.shape):
                raise EdgeslimError(
                    f"--calib: array {spec.name!r} has shape {list(calib[spec.name].shape)}, so one sample is "
                    f"{sample}; model input {spec.name!r} takes {list(spec.shape)} (first axis: samples, fed one "
                    "at a time; NCHW, as the model's input)")
        count = min(len(calib[n]) for n in names)
        feeds = [{n: np.ascontiguousarray(calib[n][i : i + 1]).astype(_dtype(source, n)) for n in names}
                 for i in range(min(count, CALIBRATION_SAMPLES))]
        return feeds, "calibration (--calib)"
    if task is not None:
        data = task.calibration_inputs(CALIBRATION_SAMPLES)
        return [{names[0]: np.asarray(data[i : i + 1], dtype=np.float32)} for i in range(len(data))], "task"
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(SYNTHETIC_SAMPLES):
        feed = {}
        for spec in source.inputs:
            if spec.dtype.startswith("float"):
                feed[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
            else:
                feed[spec.name] = np.zeros(spec.shape, dtype=spec.dtype)
        feeds.append(feed)
    return feeds, "synthetic standard-normal"


def _dtype(source: ModelSource, name: str) -> str:
    return next(s.dtype for s in source.inputs if s.name == name)
