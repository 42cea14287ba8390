"""The runtime's own cost per inference on the device: a model that only hands its inputs back, timed like any
candidate. No compression of the user's model runs faster than that, so a budget under it cannot be met, and a
budget just over it leaves the model's own work next to nothing. Why it is measured: on a CPU with AMX, OpenVINO
runs FashionResNet's original in 0.10 ms (bf16) and a model that copies its input in about 0.03 ms; the only
model that met a 0.5x budget kept 36% of 90% accuracy, and a 0.3x budget ran a search to no answer, with nothing
in the notes to say why."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from onnx import helper

from edgeslim.errors import EdgeslimError
from edgeslim.model import ONNX_DTYPES

if TYPE_CHECKING:
    from edgeslim.search import SearchSession

#: the store's key for the floor (a resumed search does not time it again); 0.0: it could not be timed
FLOOR_META = "runtime_floor_ms"
#: said in the notes when the budget leaves the model's own work (the inference less the floor) less than this
#: share of what the budget's ratio to the whole inference suggests
WORK_SHARE_SAID = 0.8
#: element type names back to ONNX's codes (the model reader's table, inverted)
_ONNX_TYPES = {name: code for code, name in ONNX_DTYPES.items()}


def floor_model(session: SearchSession, path: Path) -> Path:
    """An ONNX model with the source's inputs, each handed back through an Identity."""
    inputs = [helper.make_tensor_value_info(spec.name, _ONNX_TYPES[spec.dtype], spec.shape)
              for spec in session.source.inputs]
    outputs = [helper.make_tensor_value_info(f"{spec.name}_back", _ONNX_TYPES[spec.dtype], spec.shape)
               for spec in session.source.inputs]
    nodes = [helper.make_node("Identity", [spec.name], [f"{spec.name}_back"], name=f"back_{i}")
             for i, spec in enumerate(session.source.inputs)]
    model = helper.make_model(helper.make_graph(nodes, "runtime_floor", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by the older runtimes boards carry
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def runtime_floor_ms(session: SearchSession) -> float | None:
    """The floor in the budget's statistic, timed once per run directory; None (and a note) when the target
    cannot build or run the floor model."""
    stored = session.store.get_meta(FLOOR_META)
    if stored is not None:
        return float(stored) or None
    out_dir = session.run_dir / "runtime_floor"
    try:
        artifact = session.target.compile(floor_model(session, out_dir / "source.onnx"), out_dir)
        stats = session.device.measure(artifact, counted_as="baseline")
    except (EdgeslimError, OSError, ValueError, KeyError) as exc:
        session.notes.append(f"the runtime's own cost per inference was not timed: {str(exc)[:200]}")
        stats = None
    floor = stats.statistic(session.budget.statistic) if stats is not None and stats.usable else 0.0
    if stats is not None and not stats.usable:
        session.notes.append(f"the runtime's own cost per inference was not timed: {stats.status} {stats.error}")
    session.store.set_meta(FLOOR_META, floor)
    return floor or None


def floor_notes(session: SearchSession, floor_ms: float | None) -> list[str]:
    """What the floor means for this budget, in words: nothing can meet it, or it leaves the model's own work a
    smaller share of what it takes now than the budget's ratio to the whole inference says."""
    budget_ms, baseline_ms, runtime = session.budget.latency_ms, session.budget.baseline_ms, session.target.name
    if floor_ms is None or budget_ms is None or not baseline_ms:
        return []
    if floor_ms >= budget_ms:
        return [f"the budget of {budget_ms:.3f} ms is under what {runtime} takes per inference on this device "
                f"whatever the model: {floor_ms:.3f} ms for a model that only hands its input back. No compression "
                "can meet it: a larger budget, another runtime or a faster device can"]
    whole, work = budget_ms / baseline_ms, (budget_ms - floor_ms) / max(baseline_ms - floor_ms, 1e-9)
    if work < WORK_SHARE_SAID * whole:
        return [f"of the original model's {baseline_ms:.3f} ms per inference, {floor_ms:.3f} ms is {runtime}'s own "
                f"(a model that only hands its input back): the {budget_ms:.3f} ms budget leaves the model's own "
                f"work {work:.0%} of what it takes now, not {whole:.0%}; expect the answer to lose more accuracy "
                "than the budget's ratio suggests"]
    return []
