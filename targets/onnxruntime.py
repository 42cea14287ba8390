"""ONNX Runtime target: the artifact is the QDQ ONNX model itself, run by ONNX Runtime's CPU kernels."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeslim import hookimpl
from edgeslim.settings import module_available
from edgeslim.target import OnnxRuntimeHostSession, Target

INT8_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger",
                "DynamicQuantizeMatMul")
FLOAT_KERNELS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "ConvTranspose")


class OnnxRuntimeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threads: int = Field(default=1, ge=0, description="intra-op threads; 0 lets ONNX Runtime choose")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    providers: list[str] = ["CPUExecutionProvider"]


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    agent_modules = ("onnxruntime", "numpy")
    description = "ONNX Runtime (CPU execution provider by default; x86 and aarch64)"

    Settings = OnnxRuntimeSettings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("onnxruntime", "pip install onnxruntime")

    def accepts_model_settings(self, settings: dict[str, Any]) -> bool:
        # ONNX Runtime keeps its own quantizer: NNCF places its Q/DQ pairs for OpenVINO's kernels
        return settings.get("int8_scheme") != "nncf"

    def compile(self, onnx_path: Path, out_dir: Path, plan: dict[str, Any] | None = None) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        artifact = out_dir / "model.onnx"
        if Path(onnx_path).resolve() != artifact.resolve():
            shutil.copyfile(onnx_path, artifact)
        return artifact

    def scoring_settings(self) -> dict[str, Any]:
        # the artifact is the ONNX model itself; threads and graph optimization only change the speed
        return {"providers": self.settings.providers}

    def host_session(self, artifact: Path) -> OnnxRuntimeHostSession:
        return OnnxRuntimeHostSession(artifact, self.settings.providers)

    def benchmark_job(self, artifact: Path, input_shapes: dict[str, list[int]]) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime",
            "artifact": str(Path(artifact).resolve()),
            "options": {"threads": self.settings.threads, "graph_optimization": self.settings.graph_optimization,
                        "providers": self.settings.providers},
            "input_shapes": input_shapes,
        }

    def effective_precision(self, artifact: Path) -> dict[str, str]:
        import tempfile

        import onnx
        import onnxruntime as ort

        # EXTENDED is the last hardware-independent level; the QDQ fusions that decide precision happen there.
        with tempfile.TemporaryDirectory(prefix="edgeslim-ort-opt-") as tmp:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            so.log_severity_level = 3
            ort.InferenceSession(str(artifact), so, providers=self.settings.providers)
            optimized = onnx.load(so.optimized_model_filepath)
        precision = {}
        for node in optimized.graph.node:
            if node.op_type in INT8_KERNELS:
                # ONNX Runtime's QOperator quantizer names a QLinearConv after its Conv plus "_quant"
                precision[node.name.removesuffix("_quant")] = "int8"
            elif node.op_type in FLOAT_KERNELS:
                precision[node.name] = "float"
        return precision


    def versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}


@hookimpl
def edgeslim_register_targets(register):
    register(OnnxRuntimeTarget)
