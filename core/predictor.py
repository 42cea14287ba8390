"""Latency predictor: a per-layer lookup table measured on the device, corrected online by end-to-end runs.

Why a table and not FLOPs: a 50% channel cut can be slower than 25% on one runtime (blocked layouts want
multiples of 8) and INT8 can lose to FP32 on another. Every number in the table comes from the device:

* **Probes.** The uncompressed model and, for every knob level the search may use, the model with that level
  on every layer that offers it (a "uniform probe"), each timed end to end by the agent and profiled per
  node in a run of its own (ONNX Runtime's profiler, OpenVINO's performance counters, trtexec's profile).
* **Table.** Profiled nodes are attributed to the plan's layers through the candidate's graph
  (:mod:`edgeslim.profile_attribution`: fused kernels carry a tensor name or a ``_token_N`` suffix;
  activations, batch norms and Q/DQ pairs fused into a layer's kernel are walked back to it). Entry
  ``(layer, knob, level)`` = that layer's time in the level's probe divided by its time in the baseline: a
  layer's time under several knobs is the product of its ratios. Time outside the plan's layers ("rest":
  pooling, adds, re-layouts, input quantization) moves with the share of layers a level touches.
* **Float-INT8 boundaries.** Where a float layer feeds an INT8 one, or the reverse, a mixed plan quantizes or
  dequantizes, which no uniform probe does. One more probe, INT8 on every other layer, prices them: what it
  ran over the table's sum for it, per boundary it has (:data:`BOUNDARY_PROBE`).
* **Online correction.** Summed kernel times are not end-to-end times (session overhead, thread hand-offs,
  profiler cost). Until the search has measured a few candidates, the probes' end-to-end times fit
  ``measured = a * table_sum + b``; from then on the candidates alone set ``measured = a * table_sum`` (the
  median of their ratios), refitted after each one, so the predictor tracks the device as the search goes.
  Only plans the table describes count: another INT8 encoding or a model-wide knob runs other kernels.

A prediction never decides that a model meets the budget: it only ranks candidates and keeps far-off ones
from being measured. The error of the prediction made *before* each measurement is recorded with it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from edgeslim.latency_probe import Probe, error_summary, to_end_to_end
from edgeslim.plan import Plan

__all__ = ["LatencyPredictor", "Probe", "error_summary"]

#: how much a prediction may exceed the budget and still be "near" it, i.e. worth measuring
NEAR_BUDGET = 0.15
#: the knob whose levels are probed once more together with every channel-cut and low-rank level (INT8 does not
#: compose multiplicatively with them: the narrowed or split INT8 layer has its own kernels and Q/DQ)
PAIRED_KNOB = "bits"


#: the probe with INT8 on every other layer that offers it. A mixed plan quantizes and dequantizes where a float
#: layer feeds an INT8 one or the reverse, which no uniform probe does: unpriced, a MobileNetV2-style plan with
#: INT8 on 42 of 52 layers was predicted 0.443 ms and ran 0.804 ms
BOUNDARY_PROBE = "bits@alternate"


def combo_name(knob: str, paired: str) -> str:
    """A combined probe's knob name: ``sparsity+bits``."""
    return f"{knob}+{paired}"


def is_combo(knob: str | None) -> bool:
    return knob is not None and "+" in knob


#: measured candidates after which the correction is fitted to them alone, no longer to the probes
CANDIDATES_TO_REFIT = 3
#: below this end-to-end time a model's per-node profile is mostly the profiler's and the runtime's own overhead
#: (FashionResNet at 0.3 ms: median error 28%): the table still ranks, but no candidate is skipped on its word
MIN_TRUSTED_MS = 0.5
#: a probe's untouched layers below this share of the baseline: too little time to read a ratio from
MIN_UNTOUCHED = 0.05


@dataclass
class LatencyPredictor:
    probes: list[Probe]
    #: model-wide plan values shared by every probe (e.g. the INT8 encoding the speed gate kept)
    base_model: dict[str, Any] = field(default_factory=dict)
    #: {layer: the layer whose output it consumes} and the knobs that narrow a consumer's input
    producers: dict[str, str] = field(default_factory=dict)
    consumer_knobs: set[str] = field(default_factory=set)
    #: {layer: the layer whose knob sets its output channels} (a residual stream's convolutions shrink together:
    #: a narrowing knob sits on the group's first layer) and {layer: the knob layer whose group narrows its
    #: input} where the technique said so; every other layer's is its producer's group (``producers`` mapped
    #: through ``channel_owner``)
    channel_owner: dict[str, str] = field(default_factory=dict)
    channel_producers: dict[str, str] = field(default_factory=dict)
    #: {model-wide knob: its off level} (e.g. the attention stage's input size): a plan with one on runs outside
    #: the table
    model_knobs: dict[str, Any] = field(default_factory=dict)
    #: (table sum, measured end to end) of every probe, and of every measured candidate: the online correction
    points: list[tuple[float, float]] = field(default_factory=list)
    candidate_points: list[tuple[float, float]] = field(default_factory=list)
    scale: float = 1.0
    offset: float = 0.0
    #: float-INT8 boundaries priced (:data:`BOUNDARY_PROBE`), a combined probe's rest its own, a single probe's
    #: ratio on the layers it does not reach (:meth:`_add_rest`): off only to measure
    price_boundaries: bool = True
    combined_rest: bool = True
    untouched_rest: bool = True

    def __post_init__(self) -> None:
        # a probe's per-node profile is a run of its own: on a shared machine one run can be 2x slower than the
        # next, which would scale every ratio taken from it (a ResNet-18-style INT8 + 25% cut probe profiled at
        # 1.08 ms summed while it ran 0.60 ms end to end). The profile gives each layer's share; the end-to-end
        # time gives the total (on the same plans: median error 24.6% -> 16.9%, p90 66% -> 33%)
        self.probes = [to_end_to_end(p) for p in self.probes]
        base = [p for p in self.probes if p.knob is None]
        if not base:
            raise ValueError("a latency table needs the baseline's profile")
        self.base = base[0]
        self.channel_producers = {**{layer: self.channel_owner.get(p, p) for layer, p in self.producers.items()},
                                  **self.channel_producers}
        #: too small a model for per-node timings to mean much: rank with the table, measure everything
        self.ranks_only = self.base.e2e_ms < MIN_TRUSTED_MS
        # (layer, knob) -> {level: ratio}; the off level has ratio 1 by definition. "own": the layer's own
        # setting; "inputs": the setting of the layer that feeds it (channel cuts narrow the consumer too)
        self.ratios: dict[tuple[str, str], dict[Any, float]] = {}
        self.input_ratios: dict[tuple[str, str], dict[Any, float]] = {}
        self.rest_per_layer: dict[tuple[str, Any], float] = {}
        #: (knob, level) -> how its uniform probe moved the layers it does not reach, and how many it set
        self.untouched_ratios: dict[tuple[str, Any], float] = {}
        self.knob_layers: dict[tuple[str, Any], int] = {}
        #: (layer, ((knob, level), ...) sorted) -> the layer's own ratio under those knobs together
        self.combo_ratios: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
        #: ((knob, level), ...) sorted -> the rest's change per layer under those knobs together
        self.combo_rest: dict[tuple[tuple[str, Any], ...], float] = {}
        singles = [p for p in self.probes if p.knob is not None and not is_combo(p.knob) and p.knob != BOUNDARY_PROBE]
        for probe in singles:
            self._add_single(probe)
        for probe in singles:
            if probe.layers:
                self._add_rest(probe)
        for probe in self.probes:
            if is_combo(probe.knob):
                self._add_combo(probe)
        #: the INT8 levels and the layers that offer INT8; ms per float-INT8 boundary between two of them
        self.int8_levels = [p.level for p in self.probes if p.knob == PAIRED_KNOB]
        self.int8_layers = {layer for p in self.probes if p.knob == PAIRED_KNOB for layer in p.layers}
        self.boundary_ms = 0.0
        alternate = next((p for p in self.probes if p.knob == BOUNDARY_PROBE), None)
        crossings = self.boundaries(alternate.plan) if alternate is not None else 0
        if crossings and self.price_boundaries:
            # what the alternating probe ran over the table's sum for it, per boundary it has
            self.boundary_ms = max(0.0, (alternate.e2e_ms - self.table_sum(alternate.plan)) / crossings)
        for probe in self.probes:
            self.points.append((self.table_sum(probe.plan), probe.e2e_ms))
        self._refit()

    def _add_single(self, probe: Probe) -> None:
        """A single knob's probe: each layer's ratio to the baseline, its own or (a channel cut) its input's."""
        touched = self._touched(probe)
        for layer, before in self.base.layer_ms.items():
            if not before:
                continue
            # absent from the probe's profile: removed (layer pruning) or folded away
            ratio = probe.layer_ms.get(layer, 0.0) / before
            fed_by_touched = probe.knob in self.consumer_knobs and self.channel_producers.get(layer) in touched
            if layer in touched and fed_by_touched:
                # narrowed on both sides: split evenly between the layer's own cut and its producer's
                self.ratios.setdefault((layer, probe.knob), {})[probe.level] = math.sqrt(ratio)
                self.input_ratios.setdefault((layer, probe.knob), {})[probe.level] = math.sqrt(ratio)
            elif layer in touched:
                self.ratios.setdefault((layer, probe.knob), {})[probe.level] = ratio
            elif fed_by_touched:
                self.input_ratios.setdefault((layer, probe.knob), {})[probe.level] = ratio

    def _add_rest(self, probe: Probe) -> None:
        """The probe's rest over the baseline's, per layer it sets; and (``untouched_rest``) by how much its knob
        moved the layers it does not reach, so that the table sums the probe to its own end-to-end time. They
        move: ResNet-18-style with all 4 removable blocks removed ran its other layers 0.2 ms faster than the
        baseline's profile had them (a ratio, not ms: with INT8 on them too they run in a quarter of the
        time, and save a quarter as much)."""
        key = (probe.knob, probe.level)
        self.rest_per_layer[key] = (probe.rest_ms - self.base.rest_ms) / len(probe.layers)
        decisions = self.effective(probe.plan.get("layers", {}))
        self.knob_layers[key] = sum(knobs.get(probe.knob) == probe.level for knobs in decisions.values())
        untouched_ms = sum(ms for layer, ms in self.base.layer_ms.items() if self._untouched(layer, decisions, key))
        if self.untouched_rest and untouched_ms >= MIN_UNTOUCHED * self.base.e2e_ms:
            moved = (probe.e2e_ms - self.table_sum(probe.plan, False)) / untouched_ms
            self.untouched_ratios[key] = min(max(1.0 + moved, 0.5), 2.0)

    def _untouched(self, layer: str, decisions: dict[str, dict[str, Any]], key: tuple[str, Any]) -> bool:
        """Whether ``key``'s knob neither sets ``layer`` (its own, its channel group's or its block's) nor narrows
        its input in ``decisions``."""
        knob = key[0]
        sources = [layer, self.channel_owner.get(layer, layer), *_enclosing(layer)]
        if knob in self.consumer_knobs:
            sources.append(self.channel_producers.get(layer, ""))
        return all(knob not in decisions.get(source, {}) for source in sources)

    def _add_combo(self, probe: Probe) -> None:
        """A combined probe's per-layer ratios, less the input narrowing the single probes already account for
        (its layers' producers carry the same cut)."""
        pairs = tuple(sorted(zip(probe.knob.split("+"), _levels(probe.level), strict=True)))
        touched = self._touched(probe)
        for layer in touched:
            before = self.base.layer_ms.get(layer)
            if not before:
                continue
            ratio = probe.layer_ms.get(layer, 0.0) / before
            if self.channel_producers.get(layer) in touched:
                for knob, level in pairs:
                    if knob in self.consumer_knobs:
                        ratio /= max(self.ratio(layer, knob, level, self.input_ratios), 1e-6)
            self.combo_ratios[(layer, pairs)] = ratio
        self._add_combo_rest(probe, pairs)

    def _add_combo_rest(self, probe: Probe, pairs: tuple[tuple[str, Any], ...]) -> None:
        """The rest's change per layer with the combined probe's knobs together (its rest over the baseline's,
        less its other layers' single knobs), not the single probes' sum: MobileNetV2-style 75% cut + INT8 ran a
        rest of 0.044 ms profiled, 0.093 ms summed (predicted 20% slow)."""
        decisions = self.effective(probe.plan.get("layers", {}))
        together = [layer for layer, knobs in decisions.items() if tuple(sorted(knobs.items())) == pairs]
        if not together or not self.combined_rest:
            return
        others = sum(self.rest_per_layer.get((knob, level), 0.0) for layer, knobs in decisions.items()
                     if layer not in together for knob, level in knobs.items())
        self.combo_rest[pairs] = (probe.rest_ms - self.base.rest_ms - others) / len(together)

    def _touched(self, probe: Probe) -> set[str]:
        """The layers a probe's knob reaches: its layers, the layers sharing their channels, and the layers inside
        a block it sets (removal)."""
        touched = set(probe.layers)
        touched |= {layer for layer, owner in self.channel_owner.items() if owner in touched}
        return touched | {layer for layer in self.base.layer_ms if touched.intersection(_enclosing(layer))}

    def effective(self, decisions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The plan's decisions with each channel group's cut on its knob layer: the deepest cut any member names
        (pruning a member cuts the whole group; a deeper cut on another member cuts it further)."""
        out: dict[str, dict[str, Any]] = {}
        for layer, knobs in decisions.items():
            for knob, level in knobs.items():
                owner = self.channel_owner.get(layer, layer) if knob in self.consumer_knobs else layer
                where = out.setdefault(owner, {})
                where[knob] = level if knob not in where else _deeper(where[knob], level)
        return out

    # --- the table ------------------------------------------------------------------------------------------

    def ratio(self, layer: str, knob: str, level: Any, table: dict[tuple[str, str], dict[Any, float]] | None = None
              ) -> float:
        levels = (self.ratios if table is None else table).get((layer, knob))
        if not levels:
            return 1.0
        if level in levels:
            return levels[level]
        numeric = sorted((float(k), v) for k, v in levels.items() if isinstance(k, (int, float)))
        if not isinstance(level, (int, float)) or not numeric:
            return 1.0
        # between probed levels: linear; the knob's off level is not known here, so outside them: the nearest
        x = float(level)
        if x <= numeric[0][0]:
            return numeric[0][1]
        for (x0, y0), (x1, y1) in zip(numeric, numeric[1:], strict=False):
            if x0 <= x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return numeric[-1][1]

    def table_sum(self, plan: Plan, boundaries: bool = True) -> float:
        """Sum of the table's per-layer times for a plan, plus the rest and (``boundaries``) its float-INT8
        boundaries: the uncorrected prediction."""
        decisions = self.effective(plan.get("layers", {}))
        total = self.base.rest_ms
        shares = {key: count / max(self.knob_layers[key], 1) for key in self.untouched_ratios
                  if (count := sum(knobs.get(key[0]) == key[1] for knobs in decisions.values()))}
        for layer, ms in self.base.layer_ms.items():
            own = dict(decisions.get(layer, {}))
            group = decisions.get(self.channel_owner.get(layer, layer), {})
            own.update({knob: group[knob] for knob in self.consumer_knobs & group.keys()})
            for block in _enclosing(layer):  # a block's knobs (removal) apply to every layer inside it
                own.update(decisions.get(block, {}))
            combined = self.combo_ratios.get((layer, tuple(sorted(own.items()))))
            factor = 1.0
            if combined is not None:
                factor = combined
            else:
                for knob, level in own.items():
                    factor *= self.ratio(layer, knob, level)
            producer = decisions.get(self.channel_producers.get(layer, ""), {})
            for knob in self.consumer_knobs & producer.keys():
                factor *= self.ratio(layer, knob, producer[knob], self.input_ratios)
            for key, share in shares.items():
                if self._untouched(layer, decisions, key):
                    factor *= self.untouched_ratios[key] ** share
            total += ms * factor
        for knobs in decisions.values():
            together = self.combo_rest.get(tuple(sorted(knobs.items())))
            if together is not None:
                total += together
                continue
            for knob, level in knobs.items():
                total += self.rest_per_layer.get((knob, level), 0.0)
        if boundaries and self.boundary_ms:
            total += self.boundary_ms * self.boundaries(plan)
        return max(total, 1e-6)

    def boundaries(self, plan: Plan) -> int:
        """How many layers that offer INT8 are fed by one that offers it too with the other precision: each
        such edge is a quantize or dequantize the uniform probes never ran."""
        decisions = plan.get("layers", {})

        def quantized(layer: str) -> bool:
            return decisions.get(layer, {}).get(PAIRED_KNOB) in self.int8_levels

        return sum(quantized(layer) != quantized(producer) for layer, producer in self.producers.items()
                   if layer in self.int8_layers and producer in self.int8_layers)

    # --- prediction and correction -----------------------------------------------------------------------------

    def covers(self, plan: Plan) -> bool:
        """Whether the table describes ``plan``: every probe ran with ``base_model``'s model-wide settings (one
        INT8 encoding) and no model-wide knob on. A plan with another encoding (the speed gate measures each)
        runs other kernels: its table sum says nothing about it, and as a correction point it bends the fit for
        every plan the table does describe (one QDQ encoding at 15 ms against a table sum of 1.3 ms turned a
        ResNet-18's corrected predictions 2x too slow)."""
        model = plan.get("model", {})
        return self.same_settings(plan) and all(model.get(name, off) == off for name, off in self.model_knobs.items())

    def same_settings(self, plan: Plan) -> bool:
        """Whether ``plan`` has the probes' model-wide settings (their INT8 encoding). A model-wide knob on top
        is not in the table either, but its prediction (as if the knob were off) still bounds the plan's time
        from above, which is what a strategy ranking prefixes needs."""
        return all(plan.get("model", {}).get(name) == value for name, value in self.base_model.items())

    def as_run(self, plan: Plan, precision: dict[str, Any]) -> Plan:
        """``plan`` with INT8 where the target runs it (``precision``: ``BuildPipeline.precision_details``):
        ONNX Runtime fuses a float layer between INT8 ones into an INT8 kernel (ResNet-18-style random plans ran
        up to 25% faster than the table said; predicted as run, 11 -> 17 of 20 within ±10%)."""
        layers = {name: dict(knobs) for name, knobs in plan.get("layers", {}).items()}
        for layer, how in (precision.get("effective_precision") or {}).items():
            knobs = layers.setdefault(layer, {})
            if layer in self.int8_layers and how == "int8" and knobs.get(PAIRED_KNOB) not in self.int8_levels:
                knobs[PAIRED_KNOB] = self.int8_levels[0]
            elif layer in self.int8_layers and how == "float":
                knobs.pop(PAIRED_KNOB, None)
        return {**plan, "layers": {name: knobs for name, knobs in layers.items() if knobs}}

    def predict(self, plan: Plan, boundaries: bool = True) -> float:
        """Corrected end-to-end ms; ``boundaries=False``: without the float-INT8 boundaries' cost."""
        return max(self.scale * self.table_sum(plan, boundaries) + self.offset, 1e-6)

    def observe(self, plan: Plan, measured_ms: float) -> None:
        """An end-to-end measurement: one more point for the correction, when the table describes the plan."""
        if not self.covers(plan):
            return
        self.candidate_points.append((self.table_sum(plan), measured_ms))
        self._refit()

    def _refit(self) -> None:
        if len(self.candidate_points) >= CANDIDATES_TO_REFIT:
            # from the search's own candidates alone: a probe's profiled sum carries the profiler's per-node cost,
            # which a mixed plan's does in another proportion (on ResNet-18-style plans fitted to the probes:
            # median error 16%, 6 of 20 within 10%; to the candidates: 11.5%, 10 of 20). A ratio, not a line: a
            # handful of noisy points give a slope that swings (a line on the same candidates: 12.7%, 6 of 20).
            self.scale = statistics.median(y / x for x, y in self.candidate_points)
            self.offset = 0.0
            return
        self._fit_line()

    def _fit_line(self) -> None:
        """Before enough candidates: a line through the probes' points and the first candidates'."""
        points = self.points + self.candidate_points
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        if len(points) >= 3 and statistics.pstdev(xs) > 0.05 * statistics.fmean(xs):
            # least squares; a scale far from 1 would mean the table is wrong, not the overhead
            mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
            slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
            if 0.2 <= slope <= 5.0:
                self.scale, self.offset = slope, mean_y - slope * mean_x
                return
        self.scale, self.offset = statistics.median(y / x for x, y in points), 0.0

    def near_budget(self, plan: Plan, budget_ms: float) -> bool:
        return self.ranks_only or not self.covers(plan) or self.predict(plan) <= budget_ms * (1 + NEAR_BUDGET)

    def describe(self) -> dict[str, Any]:
        return {
            "probes": len(self.probes), "entries": sum(len(v) for v in self.ratios.values()) + len(self.combo_ratios),
            "layers_profiled": len(self.base.layer_ms), "baseline_rest_ms": self.base.rest_ms,
            "ms_per_int8_boundary": self.boundary_ms,
            "correction": {"scale": self.scale, "offset_ms": self.offset, "probe_points": len(self.points),
                           "candidate_points": len(self.candidate_points)},
            "near_budget": NEAR_BUDGET, "ranks_only": self.ranks_only,
        }


def _enclosing(layer: str) -> list[str]:
    """The blocks a layer sits in, by name: "layer2.1.conv1" -> ["layer2.1", "layer2"]."""
    parts = layer.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _deeper(a: Any, b: Any) -> Any:
    """The level that compresses more (numeric levels; otherwise the later one named)."""
    numeric = isinstance(a, (int, float)) and isinstance(b, (int, float))
    return max(a, b) if numeric else b


def _levels(level: Any) -> list[Any]:
    """A combined probe's levels (a list; a JSON round trip keeps it one)."""
    return list(level) if isinstance(level, (list, tuple)) else [level]
