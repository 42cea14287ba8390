"""Device profiles: TOML files naming the target, the budget, the measurement protocol and the boards."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeslim.errors import EdgeslimError
from edgeslim.settings import describe_validation_error


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetSettings(Strict):
    latency_ms: float | None = Field(default=None, gt=0, description="absolute latency budget")
    ratio: float | None = Field(
        default=None, gt=0, le=1, description="budget as a fraction of the uncompressed model's latency"
    )
    statistic: Literal["p50", "p90"] = "p50"
    size_kb: float | None = Field(default=None, gt=0, description="largest model file the device loads, kB "
                                  "(the compiled artifact as it is)")
    stored_kb: float | None = Field(default=None, gt=0, description="largest stored form, kB: the artifact or its "
                                    "packed file (Deep Compression, sparse zip), unpacked at install time")
    memory_mb: float | None = Field(default=None, gt=0, description="peak resident memory of the process running "
                                    "the model on the device, MB (runtime and interpreter included)")
    max_metric_drop: float | None = Field(default=None, ge=0, description="the most of the task's metric a model may "
                                          "lose against the uncompressed one, in the metric's units (0.02: two points "
                                          "of accuracy); a faster model that loses more does not meet the budget")

    @property
    def limits_size(self) -> bool:
        return self.size_kb is not None or self.stored_kb is not None

    @model_validator(mode="after")
    def _one_kind(self) -> BudgetSettings:
        if self.latency_ms is not None and self.ratio is not None:
            raise ValueError("give either latency_ms or ratio, not both")
        return self


class MeasurementSettings(Strict):
    """How the agent times a model. Defaults suit a shared, noisy machine: many short runs, medians."""

    warmup: int = Field(default=10, ge=0)
    min_runs: int = Field(default=50, ge=5)
    min_seconds: float = Field(default=1.0, ge=0)
    max_seconds: float = Field(default=60.0, gt=0)
    max_cv: float = Field(default=0.25, gt=0, description="coefficient of variation above which a run is noisy")
    retries: int = Field(default=2, ge=0, description="re-measurements of a noisy result")
    timeout_s: float = Field(default=300.0, gt=0)
    verify_rounds: int = Field(default=5, ge=1, description="interleaved rounds when comparing two models")
    layer_profile_runs: int = Field(default=100, ge=5, description="profiled runs per model for the latency table "
                                    "(medians per node, in a run of their own)")


class BoardSettings(Strict):
    host: str
    user: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    key: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    python: str = "python3"
    workdir: str = "edgeslim-work"

    @model_validator(mode="before")
    @classmethod
    def _no_passwords(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("password" in data or "passphrase" in data):
            raise ValueError("passwords are not accepted in profiles; use key = '~/.ssh/id_ed25519' or an ssh agent")
        return data


class TargetSection(BaseModel):
    """``[target]``: the name picks the target plugin, which validates the remaining options."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Profile(Strict):
    name: str
    description: str = ""
    extends: str | None = None
    target: TargetSection
    budget: BudgetSettings = BudgetSettings()
    measurement: MeasurementSettings = MeasurementSettings()
    boards: list[BoardSettings] = []
    template: bool = Field(default=False, description="a board template: usable only through extends + [[boards]]")
    source: str = Field(default="", description="where the profile was read from (set by the loader)")

    @property
    def ref(self) -> str:
        """How to name the profile in a command the user can paste: its file, or a built-in's name."""
        return self.source.removeprefix("builtin:") if self.source else self.name

    @field_validator("name")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


def builtin_profile_names() -> list[str]:
    root = resources.files("edgeslim.profiles")
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def _read_toml(ref: str, base_dir: Path | None) -> tuple[dict[str, Any], str]:
    candidate = Path(ref).expanduser()
    if not candidate.is_absolute() and base_dir is not None and (base_dir / candidate).exists():
        candidate = base_dir / candidate
    if ref.endswith(".toml") or candidate.exists():
        if not candidate.is_file():
            raise EdgeslimError(f"profile file not found: {ref}")
        text, source = candidate.read_text(), str(candidate.resolve())
    elif ref in builtin_profile_names():
        text, source = resources.files("edgeslim.profiles").joinpath(f"{ref}.toml").read_text(), f"builtin:{ref}"
    else:
        raise EdgeslimError(
            f"unknown profile {ref!r}: not a built-in ({', '.join(builtin_profile_names())}) and not a file"
        )
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise EdgeslimError(f"profile {source}: not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value  # arrays (boards) are replaced, not appended
    return merged


def _inheritable(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """What a child profile inherits from its parent before its own keys are merged over it: a budget given in
    either form replaces the inherited one (``latency_ms`` removes the parent's ``ratio`` and back), target
    options only when the child keeps the parent's target, and never the parent's description."""
    inherited = {k: v for k, v in parent.items() if k != "description"}
    child_budget = child.get("budget") or {}
    if isinstance(child_budget, dict) and isinstance(inherited.get("budget"), dict):
        forms = {"latency_ms", "ratio"}
        if forms & set(child_budget):
            inherited["budget"] = {k: v for k, v in inherited["budget"].items() if k not in forms}
    child_target, parent_target = child.get("target") or {}, inherited.get("target") or {}
    if isinstance(child_target, dict) and isinstance(parent_target, dict):
        if child_target.get("name", parent_target.get("name")) != parent_target.get("name"):
            inherited["target"] = {}  # another runtime: the parent's options mean nothing to it
    return inherited


def _resolve(ref: str, base_dir: Path | None, seen: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    data, source = _read_toml(ref, base_dir)
    if source in seen:
        raise EdgeslimError(f"profile {source}: extends itself through {' -> '.join(seen)}")
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise EdgeslimError(f"profile {source}: extends: must be a profile name or path")
        here = Path(source).parent if not source.startswith("builtin:") else None
        if source.startswith("builtin:") and parent == source.removeprefix("builtin:"):
            raise EdgeslimError(f"profile {source}: extends itself")
        parent_data, _ = _resolve(parent, here, (*seen, source))
        data = _merge(_inheritable(parent_data, data), data)
    return data, source


def load_profile(ref: str, allow_template: bool = False) -> Profile:
    """Load a built-in name or a TOML path, following ``extends``, and validate it.

    A board template (``template = true``, e.g. ``raspberry-pi-5``) without ``[[boards]]`` is refused for
    measuring: used as-is it would silently measure this machine instead of the board.
    """
    data, source = _resolve(ref, Path.cwd(), ())
    data["source"] = source
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise EdgeslimError(f"profile {source}: {describe_validation_error(exc)}") from None
    if profile.template and not profile.boards and not allow_template:
        raise EdgeslimError(
            f"profile {profile.name} is a board template: write a profile with extends = \"{profile.name}\" and a "
            "[[boards]] table (host, user, key, known_hosts); see the README's 'Measure on your board'"
        )
    return profile
