"""Throwaway plugins registered in tests exercise every hook."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgeslim
from edgeslim.errors import EdgeslimError
from edgeslim.host import get_plugin_manager, load_registry, reset_plugin_manager
from edgeslim.plan import layer_decisions
from edgeslim.search import SearchConfig, SearchSession
from edgeslim.technique import Knob, Technique


class WeightRounding(Technique):
    """A third-party technique: round a layer's weights to a few significant bits (an ONNX-stage rewrite)."""

    name = "weight_rounding"
    description = "test plugin: round weights"
    stage = "onnx"
    calls: list[dict] = []

    def decision_names(self):
        return frozenset({"rounding"})

    def knobs(self, source):
        return [Knob(self.name, "rounding", layer.name, (0, 4)) for layer in source.layers]

    def apply_onnx(self, onnx_path: Path, plan, ctx, out_path: Path) -> Path:
        decisions = layer_decisions(plan, "rounding")
        WeightRounding.calls.append(decisions)
        model = onnx.load(str(onnx_path))
        from edgeslim.model import weighted_nodes

        # layer_of_node also finds layers that earlier techniques pruned or factorized
        weights = {node.input[1]: ctx.layer_of_node(node.name) for node in weighted_nodes(model)}
        for init in model.graph.initializer:
            if weights.get(init.name) in decisions:
                w = numpy_helper.to_array(init)
                scale = 2.0 ** (decisions[weights[init.name]] - np.ceil(np.log2(np.abs(w).max() + 1e-12)))
                init.CopyFrom(numpy_helper.from_array((np.round(w * scale) / scale).astype(w.dtype), init.name))
        onnx.save(model, str(out_path))
        return out_path


@pytest.fixture
def clean_host():
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def make_plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: edgeslim.hookimpl(fn) for name, fn in hooks.items()})


def test_builtins_are_ordinary_plugins(clean_host):
    pm = get_plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert {"edgeslim.plugins.pruning", "edgeslim.plugins.quantization", "edgeslim.plugins.greedy",
            "edgeslim.targets.onnxruntime"} <= names
    registry = load_registry()
    assert registry.provided_by[("technique", "quantization")] == "edgeslim.plugins.quantization"


def test_duplicate_names_name_both_plugins(clean_host):
    class Impostor(Technique):
        name = "quantization"

    plugin = make_plugin(edgeslim_register_techniques=lambda register: register(Impostor()))
    get_plugin_manager((plugin,))
    with pytest.raises(EdgeslimError, match=r"'quantization' is registered twice: by plugin edgeslim.plugins."
                                            r"quantization and by plugin .+"):
        load_registry()


def test_misspelled_hook_is_a_startup_error(clean_host):
    plugin = make_plugin(edgeslim_register_technique=lambda register: None)
    with pytest.raises(EdgeslimError, match="edgeslim_register_technique"):
        get_plugin_manager((plugin,))


def test_third_party_technique_is_used_by_a_search(clean_host, tmp_path, resnet_onnx, fast_profile):
    events: list[dict] = []
    finished: list[dict] = []
    plugin = make_plugin(
        edgeslim_register_techniques=lambda register: register(WeightRounding()),
        edgeslim_candidate_measured=lambda record: events.append(record),
        edgeslim_search_finished=lambda manifest: finished.append(manifest),
    )
    registry = load_registry((plugin,))
    assert "weight_rounding" in registry.techniques
    WeightRounding.calls.clear()
    config = SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), out_dir=str(tmp_path / "run"),
                          budget_ratio=0.9, trials=6)
    manifest = SearchSession(config, registry=registry).run()
    # the plugin's knob was scored per layer and applied to real files
    assert WeightRounding.calls and any(WeightRounding.calls)
    stored = [json.loads(line) for line in (tmp_path / "run" / "candidates.jsonl").open()]
    assert any("rounding" in d for r in stored for d in r["plan"]["layers"].values())
    # the event hooks fired with the records the store holds
    assert events and all("latency" in e for e in events)
    assert finished and finished[0]["profile"] == "fast-local"
    assert manifest["candidates_evaluated"] >= 1
