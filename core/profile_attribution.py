"""Attributing a per-node device profile to a plan's layers, through the candidate's ONNX graph.

Runtimes name their kernels after ONNX nodes, tensors, or what they fused or split off: ONNX Runtime's
``_token_N`` and ``_nchwc`` suffixes, OpenVINO's ``.../Conv/WithoutBiases``, the QOperator quantizer's
``X_quant``. An entry for an activation, batch norm or Q/DQ fused into a layer's kernel is walked back to that
layer; whatever belongs to no layer is the "rest". Used by the latency table (:mod:`edgeslim.predictor`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: ops a runtime folds into the kernel before them: a profile entry named after one belongs to that kernel
FUSED_INTO_PREVIOUS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add",
                       "BatchNormalization", "QuantizeLinear", "DequantizeLinear", "Cast", "Reshape", "Flatten"}


@dataclass
class GraphNode:
    op: str
    inputs: list[str]
    outputs: list[str]


def graph_summary(model: Any) -> dict[str, dict[str, Any]]:
    """{node name: op, inputs, outputs} of an ONNX model: what attribution needs, kept beside each artifact."""
    return {node.name: {"op": node.op_type, "inputs": list(node.input), "outputs": list(node.output)}
            for node in model.graph.node}


def attribute_profile(profile: list[dict[str, Any]], layer_nodes: dict[str, str], graph: dict[str, dict[str, Any]],
                      layers: set[str]) -> tuple[dict[str, float], float]:
    """Split a per-node profile into ({plan layer: ms}, rest ms)."""
    nodes = {name: GraphNode(d["op"], d["inputs"], d["outputs"]) for name, d in graph.items()}
    producer = {tensor: name for name, node in nodes.items() for tensor in node.outputs}
    layer_of_node = {node: plan_layer(layer, layers) for layer, node in layer_nodes.items()}
    per_layer: dict[str, float] = {}
    rest = 0.0
    for entry in profile:
        layer = _resolve(entry["name"], nodes, producer, layer_of_node)
        if layer is None:
            rest += float(entry["average_ms"])
        else:
            per_layer[layer] = per_layer.get(layer, 0.0) + float(entry["average_ms"])
    return per_layer, rest


def plan_layer(name: str, layers: set[str]) -> str:
    """A factorized layer's parts ("fc.0", "fc.1") follow the plan entry of "fc"."""
    probe = name
    while probe and probe not in layers:
        probe = probe.rpartition(".")[0]
    return probe or name


def _resolve(name: str, nodes: dict[str, GraphNode], producer: dict[str, str],
             layer_of_node: dict[str, str]) -> str | None:
    name = re.sub(r"_token_\d+$", "", name)
    name = re.sub(r"_nchwc$", "", name)
    # OpenVINO names a kernel after its ONNX node plus what it split off or fused: ".../Conv/WithoutBiases",
    # ".../Gemm/WithoutBiases/DequantizationMultiply": drop trailing segments until a node or tensor is named
    while name not in nodes and name not in producer and "/" in name.strip("/"):
        name = name.rpartition("/")[0]
    node = name if name in nodes else producer.get(name)
    for _ in range(6):
        if node is None:
            return None
        if node in layer_of_node:
            return layer_of_node[node]
        if node.endswith("_quant") and node.removesuffix("_quant") in layer_of_node:
            # ONNX Runtime's QOperator quantizer renames a layer's node X to X_quant (QLinearConv, QGemm)
            return layer_of_node[node.removesuffix("_quant")]
        current = nodes[node]
        if current.op not in FUSED_INTO_PREVIOUS or not current.inputs:
            return None
        node = producer.get(current.inputs[0])
    return None


def layer_producers(layer_nodes: dict[str, str], graph: dict[str, dict[str, Any]], layers: set[str]
                    ) -> dict[str, str]:
    """{layer: the layer producing its input}, through activations, batch norms, Q/DQ and pooling."""
    nodes = {name: GraphNode(d["op"], d["inputs"], d["outputs"]) for name, d in graph.items()}
    producer = {tensor: name for name, node in nodes.items() for tensor in node.outputs}
    layer_of_node = {node: plan_layer(layer, layers) for layer, node in layer_nodes.items()}
    passes = FUSED_INTO_PREVIOUS | {"MaxPool", "AveragePool", "GlobalAveragePool", "Transpose"}
    found = {}
    for layer, node in layer_nodes.items():
        inputs = nodes[node].inputs if node in nodes else []
        current = producer.get(inputs[0]) if inputs else None
        for _ in range(8):
            if current is None:
                break
            if current in layer_of_node:
                found[plan_layer(layer, layers)] = layer_of_node[current]
                break
            if nodes[current].op not in passes or not nodes[current].inputs:
                break
            current = producer.get(nodes[current].inputs[0])
    return found
