"""TensorRT target: the engine is built and timed on the device by ``trtexec`` (over SSH on a Jetson).

The artifact sent to the board is the QDQ ONNX model; the agent runs ``trtexec`` with explicit INT8 from
the QDQ nodes, ``--fp16``, per-layer precisions (``--layerPrecisions`` + ``--precisionConstraints``) and 2:4
structured sparsity (``--sparsity``), and reads the timings from ``--exportTimes`` and the per-layer profile
from ``--exportProfile``. The command line is built by the agent (``targets/agent.py: trtexec_command``),
which is what runs on the board.

Scoring on the host: with the ``tensorrt`` Python package and an NVIDIA GPU the engine itself is run;
otherwise ONNX Runtime runs the same QDQ graph (INT8 arithmetic agrees; fp16 regions are run in fp32,
which the manifest notes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeslim import hookimpl
from edgeslim.target import OnnxRuntimeHostSession, Target

OPTIONS_FILE = "tensorrt_options.json"


class TensorRTSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trtexec: str = Field(default="trtexec", description="trtexec on the board (JetPack: /usr/src/tensorrt/bin/trtexec)")
    precision: Literal["fp32", "fp16", "int8", "best"] = "fp16"
    precision_constraints: Literal["none", "prefer", "obey"] = "obey"
    sparsity: Literal["disable", "enable", "force"] = "disable"
    workspace_mb: int = Field(default=1024, ge=16)
    use_cuda_graph: bool = True
    api: Literal["trtexec", "python"] = Field(
        default="trtexec", description="time with trtexec, or build and run through the tensorrt Python API")


def gpu_available() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "tensorrt Python package not installed"
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidia0").exists() and not Path(
            "/dev/nvhost-gpu").exists():
        return False, "no NVIDIA GPU on this machine"
    return True, ""


def layer_precisions_for(plan: dict[str, Any] | None, layer_nodes: dict[str, str], default: str) -> dict[str, str]:
    """Per-layer precisions from a plan: an explicit float layer (bits 32 or 16) is pinned, others follow QDQ.
    A layer with fp16 weights (weight_bits 16) and no INT8 decision runs in fp16: TensorRT has the arithmetic."""
    pinned = {}
    for layer, decisions in (plan or {}).get("layers", {}).items():
        bits = decisions.get("bits")
        if bits is None and decisions.get("weight_bits") == 16:
            bits = 16
        node = layer_nodes.get(layer)
        if node is None or bits is None:
            continue
        if bits == 32:
            pinned[node] = "fp32"
        elif bits == 16:
            pinned[node] = "fp16"
    return pinned


class TensorRTTarget(Target):
    name = "tensorrt"
    description = "TensorRT engines built and timed on the device with trtexec (fp16, explicit INT8, 2:4 sparsity)"
    artifact_suffix = ".onnx"
    agent_commands = ("trtexec",)
    Settings = TensorRTSettings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok, why = gpu_available()
        if ok:
            return True, "tensorrt Python API and a GPU on this machine"
        return True, f"engines are built on the board with trtexec; host scoring via ONNX Runtime ({why})"

    def accepts_model_settings(self, settings: dict[str, Any]) -> bool:
        # explicit quantization in TensorRT takes symmetric int8 Q/DQ only: no uint8 zero points, no QOperator
        scheme = str(settings.get("int8_scheme", "s8s8-per-channel"))
        return scheme.startswith("s8s8-")

    def compile(self, onnx_path: Path, out_dir: Path, plan: dict[str, Any] | None = None) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        artifact = out_dir / "model.onnx"
        if Path(onnx_path).resolve() != artifact.resolve():
            shutil.copyfile(onnx_path, artifact)
        layer_nodes_file = out_dir / "layer_nodes.json"
        layer_nodes = json.loads(layer_nodes_file.read_text()) if layer_nodes_file.exists() else {}
        options = {
            "layer_precisions": layer_precisions_for(plan, layer_nodes, self.settings.precision),
            # 2:4 weights (pruning's nm_sparsity) only pay off when the builder may pick sparse kernels
            "sparsity": "enable" if any(d.get("nm_sparsity") == "2:4" for d in (plan or {}).get("layers", {}).values())
            else self.settings.sparsity,
        }
        (out_dir / OPTIONS_FILE).write_text(json.dumps(options, indent=1))
        return artifact

    def _options(self, artifact: Path) -> dict[str, Any]:
        path = Path(artifact).parent / OPTIONS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def host_session(self, artifact: Path) -> Any:
        # scored with ONNX Runtime on the host (the same QDQ arithmetic): no GPU needed for the metric
        return OnnxRuntimeHostSession(Path(artifact))

    def benchmark_job(self, artifact: Path, input_shapes: dict[str, list[int]]) -> dict[str, Any]:
        s = self.settings
        opts = self._options(artifact)
        return {
            "runtime": "tensorrt" if s.api == "trtexec" else "tensorrt-python",
            "artifact": str(Path(artifact).resolve()),
            "options": {
                "trtexec": s.trtexec, "precision": s.precision, "explicit_int8": True,
                "precision_constraints": s.precision_constraints if opts.get("layer_precisions") else "none",
                "layer_precisions": opts.get("layer_precisions", {}), "sparsity": opts.get("sparsity", s.sparsity),
                "workspace_mb": s.workspace_mb, "use_cuda_graph": s.use_cuda_graph,
            },
            "input_shapes": input_shapes,
        }

    def versions(self) -> dict[str, str]:
        try:
            import tensorrt

            return {"tensorrt": tensorrt.__version__}
        except ImportError:
            return {"tensorrt": "on the board (trtexec)"}


@hookimpl
def edgeslim_register_targets(register):
    register(TensorRTTarget)
