"""An edgeslim target plugin, installable on its own: ONNX Runtime's ORT format.

ORT Mobile and many embedded deployments ship ``.ort`` files: the graph optimized offline once, so the
device skips optimization at load time. This target compiles each candidate into that form and measures
it with the standard agent (whose ONNX Runtime loader reads ``.ort`` files as they are).
See docs/writing-a-target.md for the walk-through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import edgeslim
from edgeslim.errors import EdgeslimError
from edgeslim.target import Target


class OrtFormatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled option in a profile is an error, not ignored
    threads: int = Field(default=1, ge=0)
    # "extended" is the last hardware-independent level: the .ort file stays portable across CPUs.
    optimization: Literal["basic", "extended"] = "extended"


class OrtFormatTarget(Target):
    name = "onnxruntime-ortformat"
    description = "ONNX Runtime, models optimized offline into the .ort format (ORT Mobile style)"
    artifact_suffix = ".ort"
    agent_modules = ("onnxruntime", "numpy")  # what `edgeslim doctor` checks on each board
    Settings = OrtFormatSettings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime
        except ImportError as exc:
            return False, f"onnxruntime not importable ({exc}); pip install onnxruntime"
        return True, f"onnxruntime {onnxruntime.__version__}"

    def _session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, self.settings.threads)
        so.log_severity_level = 3
        return so

    def compile(self, onnx_path: Path, out_dir: Path, plan: dict[str, Any] | None = None) -> Path:
        import onnxruntime as ort

        out_dir.mkdir(parents=True, exist_ok=True)
        artifact = out_dir / "model.ort"
        so = self._session_options()
        so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[
            self.settings.optimization]
        so.optimized_model_filepath = str(artifact)
        so.add_session_config_entry("session.save_model_format", "ORT")
        try:
            ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EdgeslimError(f"cannot convert {onnx_path.name} to the ORT format: {exc}") from None
        return artifact

    def host_session(self, artifact: Path) -> Any:
        import onnxruntime as ort

        session = ort.InferenceSession(str(artifact), self._session_options(), providers=["CPUExecutionProvider"])

        class Host:
            input_names = [i.name for i in session.get_inputs()]

            def run(self, feeds):
                return session.run(None, feeds)

        return Host()

    def benchmark_job(self, artifact: Path, input_shapes: dict[str, list[int]]) -> dict[str, Any]:
        # The job format is the agent's: any runtime it knows ("onnxruntime" reads .ort files).
        return {"runtime": "onnxruntime", "artifact": str(Path(artifact).resolve()),
                "options": {"threads": self.settings.threads, "graph_optimization": "all"},
                "input_shapes": input_shapes}

    def versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}


@edgeslim.hookimpl
def edgeslim_register_targets(register):
    register(OrtFormatTarget)
