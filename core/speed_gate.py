"""The speed gate: each all-or-nothing technique (INT8: one encoding for the whole model) probed uniformly on the
device, once per variant (encodings, per-channel or per-tensor...), its fastest accurate variant kept as the base
every per-layer move builds on, or the technique dropped when it is not faster than the original. Single
measurements minutes apart are this shared machine's noise, so close calls are timed again side by side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgeslim.plan import Plan, empty_plan, uniform, with_model
from edgeslim.records import CandidateRecord
from edgeslim.strategy import SearchAPI, SpeedGate

#: a gated technique must be at least 3% faster than the baseline to stay
GATE_MARGIN = 0.97


def speed_gate(search: SearchAPI, dropped: set[str], close_calls: set[str] | None = None) -> Plan:
    """Probe each all-or-nothing technique uniformly, once per variant, on the device; keep its fastest variant
    among those about as accurate as its most accurate one (:data:`GATE_ACCURACY_SLACK`) in the returned base
    plan's model-wide settings, or add the technique to ``dropped`` when it is not faster, and to ``close_calls``
    too when it was dropped within :data:`CLOSE_CALL` of the original's time."""
    base = empty_plan()
    for gate in search.speed_gates():
        probe_plan = uniform(empty_plan(), gate.knobs)
        probes = retimed_first_round(search, _probe(search, gate, probe_plan, gate.variants or ({},)))
        # then second-round variants (per-tensor, 7-bit) of the winner and of every probe not clearly slower (a
        # fast, lossy encoding's refinement may be fast and accurate: U8S8 with 7-bit weights), judged on
        # first-round times taken again side by side where one was in doubt; the accurate probes close to the
        # fastest are timed again side by side before the gate chooses
        refinements: list[dict[str, Any]] = []
        for variant in variants_to_refine(probes):
            refinements += [r for r in gate.refinements_of(variant) if r not in refinements]
        probes += _probe(search, gate, probe_plan, refinements)
        winner = retime_close_contenders(search, gate.technique, probes)
        if winner is not None and not_faster(search, winner):
            # no accurate variant is faster: a less accurate but faster one still gives the per-layer allocation
            # something to choose from (it keeps the layers that lose accuracy in float)
            winner = min(probes, key=lambda p: p.ms)
        if winner is not None and not_faster(search, winner):
            winner = beside_the_original(search, gate.technique, winner)
        if winner is None or not_faster(search, winner):
            dropped.add(gate.technique)
            if winner is not None and close_calls is not None and winner.ms <= CLOSE_CALL * search.baseline_ms:
                close_calls.add(gate.technique)
                search.note(f"{gate.technique}: a close call (within {CLOSE_CALL:g}x of the original): the uniform "
                            f"recipes still pair it with every other knob")
            search.note(f"{gate.technique} dropped: uniform {gate.technique} measured {winner.ms:.3f} ms vs baseline "
                        f"{search.baseline_ms:.3f} ms (not faster on this target)" if winner else
                        f"{gate.technique} dropped: no probe could be measured")
            continue
        base = with_model(base, winner.variant)
        search.note(f"{gate.technique}: uniform probe {search.baseline_ms / winner.ms:.2f}x faster than the "
                    f"baseline with {winner.variant}")
        fastest = min(probes, key=lambda p: p.ms)
        if fastest.drop > winner.drop + GATE_ACCURACY_SLACK:
            search.note(f"{gate.technique}: the fastest probe, {fastest.variant} ({fastest.ms:.3f} ms), scored "
                        f"{fastest.drop - winner.drop:.4f} below {winner.variant} and was passed over (U8S8 "
                        "arithmetic saturating on CPUs without VNNI is a usual cause)")
    return base


#: a technique dropped by the gate with its fastest probe within this factor of the original's time (side by side)
#: was a close call: the uniform recipes still pair it with every other knob (strategies that pass ``close_calls``),
#: since it may pay on a narrower architecture. MobileNetV2-style on OpenVINO (bf16 by default here): NNCF's INT8
#: timed 1.09x of the original beside it in one search and was dropped; five rounds minutes later it ran 0.87x,
#: and every block removed + NNCF PTQ met the 0.5x budget (85.13%) that no recipe left to the search did
CLOSE_CALL = 1.15


def not_faster(search: SearchAPI, probe: GateProbe) -> bool:
    """Whether ``probe`` misses :data:`GATE_MARGIN` of the baseline's time."""
    return probe.ms > GATE_MARGIN * search.baseline_ms


#: a gate variant may be this much less accurate (metric drop, the task's units) than the most accurate one and
#: still win on speed; beyond it, e.g. U8S8 INT8 saturating on a CPU without VNNI (8.7 points on MobileNetV2
#: here, where U8U8 lost none), it is passed over
GATE_ACCURACY_SLACK = 0.01


#: probes whose single measurements lie within this factor of the winner's are within this machine's noise of it
#: (the same INT8 encoding of MobileNetV2 measured 0.78 and 1.19 ms in two searches an hour apart): they are
#: refined too, and timed again side by side before the gate chooses
CLOSE_TO_WINNER = 1.3
#: at most this many close contenders are timed again (the fastest by their single measurements)
RETIME_AT_MOST = 4
#: before the gate chooses which first-round probes to refine, the accurate ones whose single measurement lies
#: between CLOSE_TO_WINNER and this factor of the fastest accurate one's are timed again beside it
RETIME_BEFORE_REFINING = 2.0
#: the reason a first-round re-timing is stored with (the manifest shows it beside the probes it timed)
FIRST_ROUND_WHY = "first round, before choosing what to refine"
#: re-timing is skipped with less than this much of --time-budget left (seconds)
RETIME_MIN_TIME_LEFT_S = 60.0


@dataclass(frozen=True)
class GateProbe:
    variant: dict[str, Any]
    ms: float
    drop: float
    #: the measured record, for timing it again side by side
    record: CandidateRecord | None = field(default=None, compare=False)


def choose_gate_variant(probes: list[GateProbe]) -> GateProbe | None:
    """The fastest probe among those whose drop is within :data:`GATE_ACCURACY_SLACK` of the smallest."""
    if not probes:
        return None
    least = min(p.drop for p in probes)
    return min((p for p in probes if p.drop <= least + GATE_ACCURACY_SLACK), key=lambda p: p.ms)


def variants_to_refine(probes: list[GateProbe]) -> list[dict[str, Any]]:
    """The first round's winner, then every other probe not clearly slower than it (within
    :data:`CLOSE_TO_WINNER`: faster ones passed over for accuracy, and those the noise may have put behind it),
    in probe order."""
    winner = choose_gate_variant(probes)
    if winner is None:
        return []
    return [winner.variant] + [p.variant for p in probes if p is not winner and p.ms < winner.ms * CLOSE_TO_WINNER]


def _accurate_within(search: SearchAPI, probes: list[GateProbe], factor: float
                     ) -> tuple[GateProbe | None, list[GateProbe]]:
    """The gate's winner and the accurate measured probes within ``factor`` of its time, fastest first (at most
    :data:`RETIME_AT_MOST`); none when there is no winner or too little of --time-budget left to time them
    again (:data:`RETIME_MIN_TIME_LEFT_S`)."""
    winner = choose_gate_variant(probes)
    time_left = search.time_left()
    if winner is None or (time_left is not None and time_left < RETIME_MIN_TIME_LEFT_S):
        return winner, []
    least = min(p.drop for p in probes)
    return winner, sorted((p for p in probes if p.drop <= least + GATE_ACCURACY_SLACK and p.record is not None
                           and p.ms <= winner.ms * factor), key=lambda p: p.ms)[:RETIME_AT_MOST]


def retimed_first_round(search: SearchAPI, probes: list[GateProbe]) -> list[GateProbe]:
    """``probes`` with the accurate ones within :data:`RETIME_BEFORE_REFINING` of the fastest accurate one (at
    most :data:`RETIME_AT_MOST`, that one included) timed again side by side, when one of them lies beyond
    :data:`CLOSE_TO_WINNER`: which probes get refined then rests on medians, not on single measurements minutes
    apart. FashionResNet on ONNX Runtime: U8S8 per channel measured 0.269 ms beside U8U8's 0.182 in one search
    (0.181 in the search before), so its per-tensor form, the encoding a user picks by hand, was never probed."""
    winner, accurate = _accurate_within(search, probes, RETIME_BEFORE_REFINING)
    if winner is None or not any(p.ms > winner.ms * CLOSE_TO_WINNER for p in accurate):
        return probes  # every accurate probe is refined already, or none is in doubt
    records = [p.record for p in accurate if p.record is not None]  # all of them (_accurate_within's filter)
    again = search.retime(records, why=f"{records[0].purpose}: {FIRST_ROUND_WHY}")
    retimed = {id(p): ms for p, ms in zip(accurate, again, strict=True) if ms is not None}
    return [GateProbe(p.variant, retimed.get(id(p), p.ms), p.drop, p.record) for p in probes]


def retime_close_contenders(search: SearchAPI, technique: str, probes: list[GateProbe]) -> GateProbe | None:
    """The gate's winner, chosen again after timing it and the other accurate probes within
    :data:`CLOSE_TO_WINNER` of it side by side (:meth:`SearchAPI.retime`): one measurement each, taken minutes
    apart, cannot tell them apart on a busy machine."""
    winner, close = _accurate_within(search, probes, CLOSE_TO_WINNER)
    if not close:
        return winner
    records = [p.record for p in close if p.record is not None]  # all of them (the filter above); for the types
    if len(records) < 2:
        return winner
    again = search.retime(records, why=f"gate:{technique}: close contenders")
    retimed = [GateProbe(p.variant, ms, p.drop, p.record) for p, ms in zip(close, again, strict=True)
               if ms is not None]
    if not retimed:
        return winner
    chosen = min(retimed, key=lambda p: p.ms)
    search.note(f"{technique}: {len(close)} probes within {CLOSE_TO_WINNER:g}x of the fastest accurate one timed "
                "again side by side: " + ", ".join(f"{p.variant} {p.ms:.3f} ms" for p in retimed)
                + f"; {chosen.variant} kept for the per-layer moves to build on (every probe stays a candidate: "
                "the answer may be another that ran as fast at the same accuracy)")
    return chosen


def _probe(search: SearchAPI, gate: SpeedGate, probe_plan: Plan, variants: Iterable[dict[str, Any]]
           ) -> list[GateProbe]:
    """Measure ``probe_plan`` with each variant (gate probes, not trials); those that gave a latency."""
    probes = []
    for variant in variants:
        record = search.measure(with_model(probe_plan, variant), purpose=f"gate:{gate.technique}",
                                counts_as_trial=False)
        ms = search.latency_of(record)
        if ms is not None:
            drop = search.metric_drop(record) if record.metric is not None else 0.0
            probes.append(GateProbe(variant, ms, drop, record))
    return probes


def beside_the_original(search: SearchAPI, technique: str, winner: GateProbe) -> GateProbe:
    """``winner`` timed again side by side with the original model (:meth:`SearchAPI.retime`) before the gate
    drops its technique as not faster, its time then the ratio of the two medians times the baseline's: the
    margin is judged on a side-by-side ratio, not on one measurement against a median of others taken minutes
    apart. MobileNetV2-style on OpenVINO (bf16 by default on this CPU): NNCF's INT8 ran 0.83-0.91x of the original
    in the benchmark's side-by-side rounds, while its single gate measurement read 0.63x-1.12x of the baseline's
    median in four searches on a busy machine (0.486 against 0.466 ms: quantization dropped for the whole search on
    one reading). Unchanged when too little of --time-budget is left or a timing failed."""
    time_left = search.time_left()
    if winner.record is None or (time_left is not None and time_left < RETIME_MIN_TIME_LEFT_S):
        return winner
    original_ms, winner_ms = search.retime([search.baseline, winner.record],
                                           why=f"gate:{technique}: fastest probe beside the original")
    if original_ms is None or winner_ms is None:
        return winner
    search.note(f"{technique}: its fastest probe, {winner.variant}, measured {winner.ms:.3f} ms against the "
                f"original's {search.baseline_ms:.3f} ms; timed again side by side with the original: "
                f"{winner_ms / original_ms:.2f}x of it")
    return GateProbe(winner.variant, winner_ms / original_ms * search.baseline_ms, winner.drop, winner.record)
