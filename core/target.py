"""The contract of a backend target: compile QDQ ONNX into an artifact, score it on the host, describe its benchmark."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeslim.errors import EdgeslimError
from edgeslim.settings import describe_validation_error
from edgeslim.technique import Knob


class HostSession(Protocol):
    """Runs an artifact on this machine to compute the metric (same arithmetic as the device)."""

    input_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class OnnxRuntimeHostSession:
    """An ONNX Runtime session on this machine for scoring (any target whose artifact is, or computes like, the
    ONNX model). One thread without spinning: scoring runs beside other work and must not burn its cores."""

    def __init__(self, path: Path, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, feeds)


class Target(abc.ABC):
    """Base class for targets. Subclasses set ``name``, ``description`` and a ``Settings`` model."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    artifact_suffix: ClassVar[str] = ".onnx"
    #: Python modules the board-side agent imports on the device for this target (checked by ``doctor``)
    agent_modules: ClassVar[tuple[str, ...]] = ()
    #: commands the agent runs on the device (e.g. ``trtexec``), looked up on the board's PATH by ``doctor``
    agent_commands: ClassVar[tuple[str, ...]] = ()

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, settings: BaseModel) -> None:
        self.settings = settings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, version) when the runtime this target needs on the host is importable, else (False, how to fix)."""
        return True, ""

    @classmethod
    def from_options(cls, options: dict[str, Any], source: str = "") -> Target:
        return cls(cls.check_options(options, source))

    @classmethod
    def check_options(cls, options: dict[str, Any], source: str = "") -> BaseModel:
        """The profile's ``[target]`` options validated; a wrong one names the profile file and the field."""
        try:
            return cls.Settings.model_validate(options)
        except ValidationError as exc:
            hint = f"`edgeslim profiles NAME` lists {cls.name}'s options"
            detail = describe_validation_error(exc, prefix="target", unknown_hint=hint)
            raise EdgeslimError(f"profile {source or '(given)'}: {detail}") from None

    @classmethod
    def describe_options(cls) -> list[dict[str, Any]]:
        """Every option a profile's ``[target]`` may set: name, type, default, description."""
        return [{"name": name, "type": getattr(f.annotation, "__name__", str(f.annotation)).replace("typing.", ""),
                 "default": f.get_default(call_default_factory=True), "description": f.description or ""}
                for name, f in cls.Settings.model_fields.items()]

    def scoring_settings(self) -> dict[str, Any]:
        """The settings that change the artifact or its arithmetic on the host (not merely how fast the device
        runs it). Two profiles whose targets agree here share built models and metrics in one multi-device run."""
        return self.settings.model_dump()

    def knobs(self) -> list[Knob]:
        """Model-wide knobs of the backend itself (e.g. OpenVINO's inference precision); values in plan["model"]."""
        return []

    @abc.abstractmethod
    def compile(self, onnx_path: Path, out_dir: Path, plan: dict[str, Any] | None = None) -> Path:
        """Turn a (QDQ) ONNX model into this backend's artifact inside ``out_dir``; return its path.

        ``plan`` carries the values of this target's own knobs (``plan["model"]``)."""

    @abc.abstractmethod
    def host_session(self, artifact: Path) -> HostSession:
        """A session on this machine that computes the artifact's outputs, for scoring."""

    @abc.abstractmethod
    def benchmark_job(self, artifact: Path, input_shapes: dict[str, list[int]]) -> dict[str, Any]:
        """The agent job (runtime, artifact, options, input shapes) that times ``artifact`` on the device."""

    def effective_precision(self, artifact: Path) -> dict[str, str]:
        """{weighted node name: "int8" | "float"} as the backend will really run it, where it can tell.

        Backends change precisions behind the model's back (a float layer fused into an int8 kernel, an
        int8 layer left in float); the search records what runs, not what was asked for.
        """
        return {}

    def accepts_model_settings(self, settings: dict[str, Any]) -> bool:
        """Whether this backend can run a model built with these model-wide settings (a technique's variant,
        e.g. ``{"int8_scheme": "qop-u8s8-per-channel"}``); refused variants are never built or probed."""
        return True

    def baseline_notes(self) -> list[str]:
        """Facts a reader needs to judge the baseline, e.g. a profile pinning a slower setting than the runtime's
        default for the device. Shown in the terminal, the manifest's notes and both reports."""
        return []

    def versions(self) -> dict[str, str]:
        return {}
