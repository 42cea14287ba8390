"""OpenVINO target: QDQ ONNX -> OpenVINO IR (.xml/.bin); INT8 comes from the QDQ nodes, placed by NNCF.

Latency is measured with the LATENCY performance hint and the profile's thread count. Inference precision
is OpenVINO's default for the device (bf16 on CPUs with AMX or AVX-512 BF16, f32 on others, f16 on GPUs) unless
the profile pins one (f32, bf16, f16): the baseline is what a user running the original model gets. Where the
device supports more than one precision they are a model-wide search knob (``ov_precision``). Unsupported
operations are found with the runtime's own ``query_model`` before a
candidate is scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.settings import module_available, module_installed
from edgeslim.target import Target
from edgeslim.technique import Knob

PRECISIONS = ("f32", "bf16", "f16")
CAPABILITY_OF = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}
DEFAULT = "default"  # no INFERENCE_PRECISION_HINT: OpenVINO's own choice for the device
OPTIONS_FILE = "openvino_options.json"


class OpenVINOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: Literal["CPU", "GPU", "NPU"] = "CPU"
    threads: int = Field(default=1, ge=0, description="INFERENCE_NUM_THREADS; 0 lets OpenVINO choose")
    inference_precision: Literal["default", "f32", "bf16", "f16"] = Field(
        default=DEFAULT, description="default: what OpenVINO runs on the device unasked (bf16 on CPUs with AMX or "
                                     "AVX-512 BF16, f32 on others); pin f32/bf16/f16 to compare")
    search_precision: bool = Field(default=True, description="offer the device's other precisions as a search knob")


def compile_properties(settings: OpenVINOSettings, precision: str) -> dict[str, str]:
    props = {"PERFORMANCE_HINT": "LATENCY"}
    if precision != DEFAULT:
        props["INFERENCE_PRECISION_HINT"] = precision
    if settings.threads > 0 and settings.device == "CPU":
        props["INFERENCE_NUM_THREADS"] = str(settings.threads)
    return props


def nncf_installed() -> bool:
    return module_installed("nncf")


class OVHostSession:
    def __init__(self, xml: Path, settings: OpenVINOSettings, precision: str) -> None:
        import openvino as ov

        core = ov.Core()
        device = settings.device if settings.device in core.available_devices else "CPU"
        self._compiled = core.compile_model(core.read_model(str(xml)), device, compile_properties(settings, precision))
        self._request = self._compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self._compiled.inputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(feeds)
        return [np.asarray(results[out]) for out in self._compiled.outputs]


class OpenVINOTarget(Target):
    name = "openvino"
    description = "OpenVINO IR (INT8 from QDQ), LATENCY hint; CPU/GPU/NPU; f32/bf16/f16 inference precision"
    artifact_suffix = ".xml"
    agent_modules = ("openvino", "numpy")
    Settings = OpenVINOSettings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("openvino", "pip install 'edgeslim[openvino]'")

    def supported_precisions(self) -> list[str]:
        import openvino as ov

        core = ov.Core()
        if self.settings.device not in core.available_devices:
            return [self.baseline_precision() or "f32"]
        caps = set(core.get_property(self.settings.device, "OPTIMIZATION_CAPABILITIES"))
        return [p for p in PRECISIONS if CAPABILITY_OF[p] in caps]

    def default_precision(self) -> str | None:
        """The precision OpenVINO runs on this device when nobody asks (None: device not present here)."""
        import openvino as ov

        core = ov.Core()
        if self.settings.device not in core.available_devices:
            return None
        hint = str(core.get_property(self.settings.device, "INFERENCE_PRECISION_HINT")).lower()
        return {"float32": "f32", "f32": "f32", "bf16": "bf16", "float16": "f16", "f16": "f16"}.get(
            hint.removeprefix("<type: '").removesuffix("'>"), hint)

    def baseline_precision(self) -> str | None:
        pinned = self.settings.inference_precision
        return self.default_precision() if pinned == DEFAULT else pinned

    def baseline_notes(self) -> list[str]:
        notes = [] if nncf_installed() else [
            "NNCF is not installed: INT8 candidates are quantized by ONNX Runtime's quantizer instead of NNCF's "
            "(pip install 'edgeslim[openvino]')"]
        return notes + self._precision_notes()

    def _precision_notes(self) -> list[str]:
        pinned, default = self.settings.inference_precision, self.default_precision()
        if pinned == DEFAULT or default is None:
            return [f"OpenVINO {self.settings.device} runs at its default precision ({default or 'unknown'})"]
        if pinned == default:
            return []
        return [f"the profile pins inference_precision = {pinned!r}; OpenVINO's default on this "
                f"{self.settings.device} is {default!r}: the original model with OpenVINO's defaults runs at "
                f"{default}, so gains quoted here against a {pinned} baseline include what the default gives"]

    def knobs(self) -> list[Knob]:
        if not self.settings.search_precision:
            return []
        baseline = self.baseline_precision()
        others = [p for p in self.supported_precisions() if p != baseline]
        if not others:
            return []
        return [Knob("openvino", "ov_precision", None, (self.settings.inference_precision, *others))]

    def accepts_model_settings(self, settings: dict[str, Any]) -> bool:
        # INT8 is quantized by NNCF where it is installed (what OpenVINO users trust); without it by ONNX Runtime's
        # quantizer in QDQ form (QLinearConv... is not OpenVINO's input)
        if "int8_scheme" not in settings:
            return True
        scheme = str(settings["int8_scheme"])
        return scheme == "nncf" if nncf_installed() else not (scheme.startswith("qop-") or scheme == "nncf")

    def compile(self, onnx_path: Path, out_dir: Path, plan: dict[str, Any] | None = None) -> Path:
        import openvino as ov

        out_dir.mkdir(parents=True, exist_ok=True)
        core = ov.Core()
        try:
            model = core.read_model(str(onnx_path))
        except Exception as exc:
            raise EdgeslimError(f"OpenVINO cannot read {onnx_path.name}: {str(exc).splitlines()[0][:200]}") from None
        if self.settings.device in core.available_devices:
            supported = core.query_model(model, self.settings.device)
            missing = sorted({op.get_type_name() for op in model.get_ops() if op.get_friendly_name() not in supported
                              and op.get_type_name() not in ("Parameter", "Result", "Constant")})
            if missing:
                raise EdgeslimError(f"OpenVINO {self.settings.device} does not support: {', '.join(missing)}")
        xml = out_dir / "model.xml"
        # compress_to_fp16=False: the IR keeps what QDQ says; precision is the runtime's hint, a knob of its own.
        ov.save_model(model, str(xml), compress_to_fp16=False)
        precision = (plan or {}).get("model", {}).get("ov_precision", self.settings.inference_precision)
        (out_dir / OPTIONS_FILE).write_text(json.dumps({"inference_precision": precision}))
        return xml

    def _precision_of(self, artifact: Path) -> str:
        options = Path(artifact).parent / OPTIONS_FILE
        if options.exists():
            return json.loads(options.read_text())["inference_precision"]
        return self.settings.inference_precision

    def scoring_settings(self) -> dict[str, Any]:
        # threads change the speed, not the arithmetic; the device and the precision hint change both
        return {"device": self.settings.device, "inference_precision": self.settings.inference_precision}

    def host_session(self, artifact: Path) -> OVHostSession:
        return OVHostSession(Path(artifact), self.settings, self._precision_of(artifact))

    def benchmark_job(self, artifact: Path, input_shapes: dict[str, list[int]]) -> dict[str, Any]:
        artifact = Path(artifact).resolve()
        return {
            "runtime": "openvino",
            "artifact": str(artifact),
            "extra_files": [str(artifact.with_suffix(".bin"))],
            "options": {"device": self.settings.device,
                        "properties": compile_properties(self.settings, self._precision_of(artifact))},
            "input_shapes": input_shapes,
        }

    def effective_precision(self, artifact: Path) -> dict[str, str]:
        """Per original node, "int8" or "float" as OpenVINO's CPU plugin runs it (from the compiled runtime model).
        f32, bf16 and f16 kernels are all "float": which one runs is the inference precision (the profile's, or
        OpenVINO's default for the CPU: bf16 where AMX/AVX-512 BF16 exist), a model-wide setting the plan
        records as ``ov_precision``; per layer, what matters is whether the plan's INT8 happened."""
        import openvino as ov

        core = ov.Core()
        if self.settings.device not in core.available_devices:
            return {}
        compiled = core.compile_model(core.read_model(str(artifact)), self.settings.device,
                                      compile_properties(self.settings, self._precision_of(artifact)))
        precision: dict[str, str] = {}
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()

            def value(key: str, _info: Any = info) -> str:
                return _info[key].astype(str) if key in _info else ""

            layer_type = value("layerType")
            if layer_type not in ("Convolution", "FullyConnected", "MatMul", "Deconvolution", "GroupConvolution"):
                continue
            runtime_precision = value("runtimePrecision")
            names = value("originalLayersNames")
            kind = "int8" if runtime_precision in ("i8", "u8") else runtime_precision or "unknown"
            for name in names.split(","):
                if name:
                    precision[name] = "float" if kind in PRECISIONS else kind
        return precision

    def versions(self) -> dict[str, str]:
        import openvino as ov

        return {"openvino": ov.__version__}


@hookimpl
def edgeslim_register_targets(register):
    register(OpenVINOTarget)
