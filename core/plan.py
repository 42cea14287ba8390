"""Plans: plain, JSON-serialisable, hashable per-layer decisions.

``{"layers": {"features.0": {"sparsity": 0.5, "bits": 8}}, "model": {"int8_scheme": "u8s8-per-channel"}}``
A knob at its "off" value is left out, so equal models have equal plans (and equal keys).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeslim.technique import Knob

Plan = dict[str, Any]


def empty_plan() -> Plan:
    return {"layers": {}, "model": {}}


def canonical(plan: Plan) -> str:
    return json.dumps(plan, sort_keys=True, separators=(",", ":"))


def plan_key(plan: Plan, context: str) -> str:
    """Content hash of a plan within a search context (model fingerprint, target and its settings)."""
    return hashlib.sha256(f"{context}\n{canonical(plan)}".encode()).hexdigest()[:20]


def set_knob(plan: Plan, layer: str | None, knob: str, value: Any, off: Any) -> Plan:
    """A copy of ``plan`` with one decision set (``layer=None`` for a model-wide knob)."""
    new = copy.deepcopy(plan)
    if layer is None:
        if value == off:
            new["model"].pop(knob, None)
        else:
            new["model"][knob] = value
        return new
    decisions = new["layers"].setdefault(layer, {})
    if value == off:
        decisions.pop(knob, None)
        if not decisions:
            del new["layers"][layer]
    else:
        decisions[knob] = value
    return new


def layer_decisions(plan: Plan, knob: str) -> dict[str, Any]:
    """{layer: value} for every layer where ``knob`` is set."""
    return {layer: d[knob] for layer, d in plan.get("layers", {}).items() if knob in d}


def validate_plan(plan: Any, layer_names: set[str], knob_names: set[str]) -> Plan:
    """Check a user-given plan (``edgeslim apply --plan``); raise ValueError naming the first problem."""
    if not isinstance(plan, dict) or set(plan) - {"layers", "model"}:
        raise ValueError('a plan is {"layers": {LAYER: {KNOB: VALUE}}, "model": {KNOB: VALUE}}')
    layers = plan.get("layers", {})
    if not isinstance(layers, dict):
        raise ValueError("plan.layers must be an object")
    for layer, decisions in layers.items():
        if layer not in layer_names:
            raise ValueError(f"plan.layers.{layer}: the model has no such layer (layers: {sorted(layer_names)})")
        for knob in decisions:
            if knob not in knob_names:
                raise ValueError(f"plan.layers.{layer}.{knob}: no technique has this knob ({sorted(knob_names)})")
    return {"layers": copy.deepcopy(layers), "model": copy.deepcopy(plan.get("model", {}))}


def uniform(base: Plan, knobs: list[Knob] | tuple[Knob, ...], level_index: int = 1) -> Plan:
    """``base`` with every given knob at its ``level_index``-th level (where it has one)."""
    plan = base
    for knob in knobs:
        if level_index < len(knob.levels):
            plan = set_knob(plan, knob.layer, knob.name, knob.levels[level_index], knob.levels[0])
    return plan


def with_model(plan: Plan, settings: dict[str, Any]) -> Plan:
    """``plan`` with the model-wide ``settings`` on top of its own."""
    return {"layers": plan["layers"], "model": {**plan["model"], **settings}}
