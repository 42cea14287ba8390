"""Measuring the latency table: uniform probes built, timed and profiled per node on the device.

The table itself (ratios, online correction) lives in :mod:`edgeslim.predictor`, the attribution of a profile
to layers in :mod:`edgeslim.profile_attribution`; this module decides which probes to build, measures them once
per run (stored, so a resumed run does not measure them again) and hands the per-layer times to
:class:`~edgeslim.predictor.LatencyPredictor`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgeslim.build import BuildPipeline
from edgeslim.device import Device
from edgeslim.errors import EdgeslimError
from edgeslim.plan import Plan
from edgeslim.predictor import (
    BOUNDARY_PROBE,
    PAIRED_KNOB,
    LatencyPredictor,
    Probe,
    combo_name,
)
from edgeslim.profile_attribution import attribute_profile, layer_producers
from edgeslim.progress import Reporter
from edgeslim.store import Store
from edgeslim.technique import Knob


@dataclass
class WantedProbe:
    knob: str | None
    level: Any
    plan: Plan
    layers: list[str]


def wanted_probes(base: Plan, knobs: list[Knob]) -> list[WantedProbe]:
    """The baseline (``base``), then one probe per per-layer knob level with that level on every layer, each
    channel-cut and layer-splitting (low rank) level with INT8 too, and INT8 on every other layer
    (:data:`~edgeslim.predictor.BOUNDARY_PROBE`)."""
    by_knob: dict[str, list[str]] = {}
    levels: dict[str, list[Any]] = {}
    for knob in knobs:
        if knob.layer is None:
            continue
        by_knob.setdefault(knob.name, []).append(knob.layer)
        levels.setdefault(knob.name, list(knob.levels[1:]))
    wanted = [WantedProbe(None, None, base, [])]
    for name, knob_layers in by_knob.items():
        for level in levels[name]:
            plan = {"layers": {layer: {name: level} for layer in knob_layers}, "model": dict(base["model"])}
            wanted.append(WantedProbe(name, level, plan, knob_layers))
    # INT8 does not combine multiplicatively with a channel cut (the narrowed INT8 layer keeps its own quantize/
    # dequantize work and kernel choice) nor with a split layer (low rank's two convolutions each quantize): every
    # level of those is probed once more with INT8 on top (only those: each pair is one more build and device run
    # per search)
    paired = {knob.name for knob in knobs if knob.narrows_consumers or knob.splits_layer}
    if PAIRED_KNOB in by_knob:
        int8_layers = set(by_knob[PAIRED_KNOB])
        for name, knob_layers in by_knob.items():
            if name == PAIRED_KNOB or name not in paired:
                continue
            both = [layer for layer in knob_layers if layer in int8_layers]
            if not both:  # e.g. block removal: its knob sits on blocks, not on the INT8 layers
                continue
            for level in levels[name]:
                for int8_level in levels[PAIRED_KNOB]:
                    layers = {layer: {PAIRED_KNOB: int8_level} for layer in int8_layers}
                    for layer in knob_layers:
                        layers.setdefault(layer, {})[name] = level
                    wanted.append(WantedProbe(combo_name(name, PAIRED_KNOB), [level, int8_level],
                                              {"layers": layers, "model": dict(base["model"])}, both))
        every_other = by_knob[PAIRED_KNOB][1::2]
        if every_other:
            level = levels[PAIRED_KNOB][0]
            wanted.append(WantedProbe(BOUNDARY_PROBE, level, {"layers": {layer: {PAIRED_KNOB: level} for layer in
                                                                         every_other}, "model": dict(base["model"])},
                                      every_other))
    return wanted


def measure_latency_table(base: Plan, knobs: list[Knob], layers: set[str], builder: BuildPipeline, device: Device,
                          store: Store, statistic: str, notes: list[str], reporter: Reporter,
                          model_knobs: dict[str, Any] | None = None) -> LatencyPredictor | None:
    """Measure the probes and build the table; None (and a note saying why) when the target gives no per-node
    profile for the baseline. ``model_knobs``: {model-wide knob: off level}, the plans the table does not describe."""
    stored: dict[str, Any] = store.get_meta("latency_probes") or {}
    probes: list[Probe] = []
    for want in wanted_probes(base, knobs):
        label = f"probe {want.knob}={want.level}" if want.knob else "probe baseline"
        key = builder.key(want.plan, "probe")
        if key not in stored:
            reporter.advance(label)
            probe = _measure_probe(want, layers, builder, device, statistic, notes, label)
            if probe is None:
                continue
            stored[key] = probe.to_dict()
            store.set_meta("latency_probes", stored)
        probes.append(Probe(**stored[key]))
    if not any(p.knob is None for p in probes):
        notes.append("latency table not built: the baseline gave no per-node profile on this target; "
                     "every candidate the strategy proposes is measured")
        return None
    base_dir = builder.build(base, "probe").parent
    producers = layer_producers(json.loads((base_dir / "layer_nodes.json").read_text()),
                                json.loads((base_dir / "graph.json").read_text()), layers)
    owner, channel_producers = channel_map(knobs)
    predictor = LatencyPredictor(probes, base_model=dict(base["model"]), producers=producers,
                                 consumer_knobs={k.name for k in knobs if k.narrows_consumers},
                                 model_knobs=model_knobs or {}, channel_owner=owner,
                                 channel_producers=channel_producers)
    if predictor.ranks_only:
        notes.append(f"the original model runs in {predictor.base.e2e_ms:.3f} ms: per-node timings at this scale are "
                     "mostly the profiler's own noise, so the latency table only ranks candidates; none is skipped "
                     "on its prediction, every one proposed is measured")
    return predictor


def channel_map(knobs: list[Knob]) -> tuple[dict[str, str], dict[str, str]]:
    """What the narrowing knobs say: {layer: the knob layer setting its output channels} (their groups) and
    {layer: the knob layer narrowing its input} (their consumers). The predictor maps every other layer's graph
    producer to its group."""
    narrowing = [k for k in knobs if k.narrows_consumers and k.layer]
    owner = {member: k.layer for k in narrowing for member in (k.layer, *k.shares_channels_with)}
    return owner, {consumer: k.layer for k in narrowing for consumer in k.narrows}


def _measure_probe(want: WantedProbe, layers: set[str], builder: BuildPipeline, device: Device, statistic: str,
                   notes: list[str], label: str) -> Probe | None:
    try:
        artifact = builder.build(want.plan, "probe")
    except EdgeslimError as exc:
        notes.append(f"latency table: {label} could not be built ({exc}); those entries predict no change")
        return None
    stats = device.measure(artifact, counted_as="latency_table", layer_profile=True)
    if not stats.usable or not stats.layer_profile:
        notes.append(f"latency table: {label} gave no per-node profile "
                     f"({stats.status}: {stats.error or 'the target does not profile'})")
        return None
    layer_nodes = json.loads((artifact.parent / "layer_nodes.json").read_text())
    graph = json.loads((artifact.parent / "graph.json").read_text())
    layer_ms, rest_ms = attribute_profile(stats.layer_profile, layer_nodes, graph, layers)
    return Probe(want.plan, want.knob, want.level, want.layers, stats.statistic(statistic), layer_ms, rest_ms)


#: a recipe walk's step reuses the end-to-end timing the latency table's probe of the same architecture took
#: (timed runs before the profiled ones, so an ordinary measurement) when it meets the limit by more than this share
#: of it: a busy moment only ever adds time, so a reading well under the limit stands
REUSE_UNDER = 0.15
#: ... and when it lies more than this multiple over the limit: the table's readings taken in a busy minute ran up
#: to 1.8x what the walk timed minutes later (MobileNetV2-style on OpenVINO, 0.5x: every block removed at 0.322 ms
#: in the table against a 0.233 ms limit, 0.212 ms in quieter runs). Between the two, the architecture is timed
#: again and the quicker of the two readings decides
REUSE_OVER = 2.0


def time_architecture(plan: Plan, builder: BuildPipeline, device: Device, store: Store, statistic: str,
                      limit_ms: float | None, predictor: LatencyPredictor | None) -> float | None:
    """The device's latency of ``plan``'s architecture (a build without recovery: latency does not depend on the
    weights), once per run (stored in the run's meta), reusing the table's probe of it when that timing is clear
    of ``limit_ms`` (:data:`REUSE_UNDER`, :data:`REUSE_OVER`). The timing is one more point for the table's
    correction. None when it cannot be built or measured."""
    key = builder.key(plan, "probe")
    stored: dict[str, float | None] = store.get_meta("latency_only_probes") or {}
    if key in stored:
        return stored[key]
    probe = (store.get_meta("latency_probes") or {}).get(key)
    earlier = None if probe is None else float(probe["e2e_ms"])
    if earlier is not None and limit_ms is not None and not 1.0 - REUSE_UNDER <= earlier / limit_ms <= REUSE_OVER:
        stored[key] = earlier
    else:
        try:
            stats = device.measure(builder.build(plan, "probe"), counted_as="latency_table")
            fresh = stats.statistic(statistic) if stats.usable else None
        except EdgeslimError:
            fresh = None
        readings = [ms for ms in (earlier, fresh) if ms is not None]
        stored[key] = min(readings) if readings else None
    if stored[key] is not None and predictor is not None:
        # one more point for the table's correction, as every architecture timed outside the table's profiling is
        predictor.observe(plan, stored[key])
    store.set_meta("latency_only_probes", stored)
    return stored[key]
