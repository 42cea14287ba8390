"""Quantization: INT8 static post-training quantization to QDQ ONNX, and weight-only bit-widths, per layer.

Which layers are INT8 is a per-layer knob (``bits``: 32 or 8). How INT8 is encoded is a model-wide knob
(``int8_scheme``) the search probes on the target, because it decides whether INT8 is faster at all: the
format (QDQ, or ONNX Runtime's QOperator ops such as QLinearConv/QLinearAdd: ``qop-`` names), the
activation and weight types (U8S8, S8S8, U8U8) and per-channel or per-tensor weights. On a ResNet-18 with
ONNX Runtime on x86, S8S8 QDQ leaves the convolutions that feed residual Adds in float (no faster than FP32),
U8U8 runs a slow kernel, U8S8 (QDQ or QOperator) runs every convolution and Add in int8 (about 3x faster),
and S8S8 QOperator is five times slower than FP32. The speed gate probes the per-channel form of each format
and type pair, then the per-tensor form of the fastest (within a few percent of it on the models measured
here, sometimes faster: ``benchmarks/ort_int8_encodings.py``).

Models get ONNX Runtime's quantization pre-processing (symbolic shape inference) first; its graph-optimisation
step is skipped, since it would constant-fold weight-only encodings (fp16 weights behind a Cast) back to
float. The TorchScript exporter's Identity-wrapped weights (which a quantizer would leave float) and Constant-node
weights are folded into initializers first (``edgeslim.model.fold_weight_identities``).

How the INT8 ranges are calibrated (``int8_calibration``: min-max, entropy, percentile) changes accuracy,
not speed: the search scores each on the host and keeps the most accurate.

Weight-only bit-widths (``weight_bits``) are :mod:`edgeslim.plugins.weight_quantization`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource, fold_weight_identities, weighted_nodes
from edgeslim.plan import Plan, layer_decisions
from edgeslim.settings import module_available, module_installed
from edgeslim.technique import BuildContext, Knob, Technique


@dataclass(frozen=True)
class Encoding:
    """How an INT8 model is written: ONNX format, activation and weight types, weight granularity."""

    operator_format: bool  # QOperator (QLinearConv, QLinearAdd, ...) instead of QDQ
    activation: str  # onnxruntime QuantType name
    weight: str
    per_channel: bool
    #: whose quantizer writes the model: ONNX Runtime's (``quantize_static``) or NNCF's (``nncf.quantize``)
    quantizer: str = "onnxruntime"
    #: 7-bit weights (ONNX Runtime's ``reduce_range``): U8S8's u8 x s8 pair sums cannot saturate the int16
    #: intermediate of AVX2/AVX-512 CPUs without VNNI, which costs accuracy on some models (ORT's and OpenVINO's
    #: documented workaround)
    reduce_range: bool = False


_TYPES = {"u8s8": ("QUInt8", "QInt8"), "s8s8": ("QInt8", "QInt8"), "u8u8": ("QUInt8", "QUInt8")}
#: name -> encoding; QDQ names carry no prefix (plans stored before QOperator existed keep their meaning)
INT8_SCHEMES: dict[str, Encoding] = {
    f"{'qop-' if qop else ''}{types}-per-{'channel' if pc else 'tensor'}": Encoding(qop, *_TYPES[types], pc)
    for qop in (False, True) for types in _TYPES for pc in (True, False)
}
#: the same U8S8 encodings with 7-bit weights, probed as the gate's refinement of a U8S8 winner
INT8_SCHEMES.update({f"{name}-7bit": dataclasses.replace(enc, reduce_range=True)
                     for name, enc in list(INT8_SCHEMES.items()) if name.removeprefix("qop-").startswith("u8s8-")})
#: NNCF's post-training quantization (QDQ placed by OpenVINO's hardware configuration: u8 activations, s8
#: symmetric per-channel weights, fast bias correction): what OpenVINO users trust (about as fast there as ONNX
#: Runtime's QDQ on the 64 px ResNet-18: benchmarks/backends_side_by_side.py); the OpenVINO target's only scheme
#: when NNCF is installed, refused by ONNX Runtime's target (which keeps its own quantizer)
NNCF_SCHEME = "nncf"
INT8_SCHEMES[NNCF_SCHEME] = Encoding(False, "QUInt8", "QInt8", True, quantizer="nncf")
#: what the speed gate probes first: every format and type pair, per-channel (then the winner's per-tensor form),
#: and NNCF's encoding (the targets keep the ones they run: ``Target.accepts_model_settings``)
GATE_SCHEMES = tuple(name for name, enc in INT8_SCHEMES.items()
                     if enc.per_channel and enc.quantizer == "onnxruntime" and not enc.reduce_range) + (NNCF_SCHEME,)
DEFAULT_SCHEME = "u8s8-per-channel"
#: plan.model.int8_calibration -> ONNX Runtime's CalibrationMethod
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


#: Ops that follow a layer element-wise; ONNX Runtime fuses DQ -> Conv -> Relu -> Q into QLinearConv
#: even when the Conv's weights are float, so a float layer must not have its activation quantized either.
ELEMENTWISE_FOLLOWERS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                         "BatchNormalization", "Mul", "Add")


def _activation_chain(model: onnx.ModelProto, node: onnx.NodeProto) -> list[str]:
    """Names of the element-wise nodes a float layer's output flows through (its activation), up to and
    including a residual Add it joins: ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv even when the Conv's
    weights are float (it quantizes them itself), so a float layer's output must not be quantized by the next
    op either."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    chain, current = [], node
    while True:
        nxt = consumers.get(current.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type not in ELEMENTWISE_FOLLOWERS:
            return chain
        if nxt[0].op_type in ("Mul", "Add") and sum(1 for i in nxt[0].input if i in consumers) > 1:
            return [*chain, nxt[0].name]  # a residual Add joins two branches: float too, and the chain ends
        chain.append(nxt[0].name)
        current = nxt[0]


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice on the root logger at WARNING for every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _FeedReader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._feeds):
            return None
        self._next += 1
        return self._feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


class Int8Quantization(Technique):
    name = "quantization"
    description = "INT8 static post-training quantization (QDQ or QOperator), per layer int8 or float"
    stage = "onnx"
    phase = "precision"
    speed_gated = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("onnxruntime.quantization", "pip install onnxruntime")

    def decision_names(self) -> frozenset[str]:
        return frozenset({"bits"})

    def planned_precision(self, plan: Plan, layer: str) -> str | None:
        bits = plan.get("layers", {}).get(layer, {}).get("bits")
        return None if bits is None else ("int8" if int(bits) == 8 else "float")

    def knobs(self, source: ModelSource) -> list[Knob]:
        return [Knob(self.name, "bits", layer.name, (32, 8)) for layer in source.layers]

    def variants(self, source: ModelSource) -> list[dict[str, Any]]:
        return [{"int8_scheme": scheme} for scheme in GATE_SCHEMES
                if scheme != NNCF_SCHEME or module_installed("nncf")]

    def refinements(self, variant: dict[str, Any]) -> list[dict[str, Any]]:
        scheme = str(variant.get("int8_scheme", ""))
        if scheme not in GATE_SCHEMES:
            return []
        # its per-tensor form (often faster), and for U8S8 its 7-bit-weight form (as fast; more accurate where the
        # CPU saturates): the gate keeps the fastest of those about as accurate as the most accurate
        forms = (scheme.replace("-per-channel", "-per-tensor"), f"{scheme}-7bit")
        return [{"int8_scheme": form} for form in forms if form in INT8_SCHEMES and form != scheme]

    def accuracy_variants(self, source: ModelSource) -> list[dict[str, Any]]:
        return [{"int8_calibration": method} for method in CALIBRATION_METHODS]

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
        from onnxruntime.quantization import quantize_static as _quantize

        bits = layer_decisions(plan, "bits")
        scheme = plan.get("model", {}).get("int8_scheme", DEFAULT_SCHEME)
        if scheme not in INT8_SCHEMES:
            raise EdgeslimError(f"plan.model.int8_scheme: unknown scheme {scheme!r} (known: {sorted(INT8_SCHEMES)})")
        calibration = plan.get("model", {}).get("int8_calibration", "minmax")
        if calibration not in CALIBRATION_METHODS:
            raise EdgeslimError(f"plan.model.int8_calibration: unknown method {calibration!r} "
                                f"(known: {', '.join(CALIBRATION_METHODS)})")
        if not ctx.calibration:
            raise EdgeslimError("INT8 quantization needs calibration inputs (a task's data or --calib FILE.npz)")
        onnx_path = prepare_for_quantization(onnx_path, out_path.with_name(out_path.stem + ".prepared.onnx"))
        model = onnx.load(str(onnx_path))
        encoding = INT8_SCHEMES[scheme]
        float_layers = [node for node in weighted_nodes(model)
                        if (layer := ctx.layer_of_node(node.name)) is None or bits.get(layer, 32) != 8]
        if encoding.quantizer == "nncf":
            return _nncf_quantize(model, out_path, [node.name for node in float_layers], ctx.calibration, calibration)
        float_nodes = [name for node in float_layers for name in (node.name, *_activation_chain(model, node))]
        extra: dict[str, Any] = {}
        method = CalibrationMethod.MinMax
        if calibration == "percentile":
            # clip the top 0.01% of |activation| (ORT's default 99.999 keeps nearly everything)
            method, extra = CalibrationMethod.Percentile, {"CalibPercentile": 99.99}
        elif calibration == "entropy":
            extra = {"TensorQuantOverrides": _entropy_ranges(onnx_path, ctx)}
        with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()), _quantizer_errors(scheme):
            _quantize(
                str(onnx_path), str(out_path), _FeedReader(ctx.calibration),
                quant_format=QuantFormat.QOperator if encoding.operator_format else QuantFormat.QDQ,
                activation_type=getattr(QuantType, encoding.activation),
                weight_type=getattr(QuantType, encoding.weight), per_channel=encoding.per_channel,
                reduce_range=encoding.reduce_range,
                nodes_to_exclude=float_nodes, calibrate_method=method, extra_options=extra,
            )
        return out_path


@contextlib.contextmanager
def _quantizer_errors(scheme: str, quantizer: str = "ONNX Runtime"):
    """ONNX Runtime's quantizer fails with bare AttributeErrors on graphs it does not expect; the candidate fails
    with the reason, the search goes on."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001
        raise EdgeslimError(f"{quantizer}'s quantizer ({scheme}) failed on this graph: {type(exc).__name__}: "
                            f"{str(exc)[:200]}") from None


def _nncf_quantize(model: onnx.ModelProto, out_path: Path, float_nodes: list[str],
                   feeds: list[dict[str, np.ndarray]], calibration: str) -> Path:
    """NNCF's post-training quantization of the ONNX model (its ONNX backend: the artifact stays a QDQ ONNX
    model every stage after this and the host's scoring can read). Float layers are NNCF's ignored scope (their
    weights and inputs stay float; OpenVINO does not fuse an ignored layer into its int8 neighbours as ONNX
    Runtime does, so their activations need no extra care). ``int8_calibration``: minmax is NNCF's defaults,
    percentile its mean-quantile range estimator, entropy its histogram estimator."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    estimator = {"percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
                 "entropy": RangeEstimatorParametersSet.HISTOGRAM}.get(calibration)
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=estimator) if estimator else None
    nncf.set_log_level(logging.ERROR)  # its progress bars and advice are not the user's business here
    with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()), _quantizer_errors("nncf", "NNCF"):
        quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                  ignored_scope=nncf.IgnoredScope(names=float_nodes, validate=False),
                                  advanced_parameters=advanced)
    onnx.save(quantized, str(out_path))
    return out_path


def prepare_for_quantization(onnx_path: Path, out_path: Path) -> Path:
    """Weights folded into initializers, then ONNX Runtime's quantization pre-processing (shape inference only);
    the folded model alone when that fails or loses a weighted node (plan layers are matched to nodes by name)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(onnx_path))
    fold_weight_identities(model)  # a candidate exported from torch can carry them too (e.g. a factorized bias)
    before = {node.name for node in weighted_nodes(model)}
    folded = out_path.with_name(out_path.stem + ".folded.onnx")
    onnx.save(model, str(folded))
    onnx_path = folded
    for skip_symbolic in (False, True):  # symbolic inference fails on some graphs; ONNX's own still helps
        try:
            with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(onnx_path), str(out_path), skip_optimization=True,
                                  skip_symbolic_shape=skip_symbolic)
        except Exception:  # noqa: BLE001 (pre-processing is an optimisation: without it quantization still works)
            continue
        after = {node.name for node in weighted_nodes(onnx.load(str(out_path), load_external_data=False))}
        return out_path if before <= after else onnx_path
    return onnx_path


#: {digest of the float model and the calibration feeds: entropy ranges}. A search builds INT8 on one layer at a
#: time over the same float model, and the KL search over 2048 bins takes about a minute per build even on a
#: tiny cascade (one per layer in the sensitivity phase): the ranges depend only on the model and the feeds.
_ENTROPY_RANGES: dict[str, dict[str, list[dict[str, Any]]]] = {}


def _entropy_ranges(onnx_path: Path, ctx: BuildContext) -> dict[str, list[dict[str, Any]]]:
    """Activation ranges minimising the KL divergence of the quantized histogram (TensorRT's calibration).

    quantize_static's own Entropy method cannot be given histogram sizes, and its defaults (128 bins, 128
    quantized bins) leave one candidate threshold: the full range, i.e. min-max. So the histogram runs here
    with 2048 bins and the ranges go in as overrides.
    """
    digest = hashlib.sha256(onnx_path.read_bytes())
    for feed in ctx.calibration:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    key = digest.hexdigest()
    if key not in _ENTROPY_RANGES:
        _ENTROPY_RANGES[key] = _compute_entropy_ranges(onnx_path, ctx)
    return _ENTROPY_RANGES[key]


def _compute_entropy_ranges(onnx_path: Path, ctx: BuildContext) -> dict[str, list[dict[str, Any]]]:
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(str(onnx_path), None, str(ctx.work_dir / "entropy_augmented.onnx"),
                                       CalibrationMethod.Entropy,
                                       extra_options={"num_bins": 2048, "num_quantized_bins": 255})
        calibrator.collect_data(_FeedReader(ctx.calibration))
        # ONNX Runtime's own KL search loops in Python over every bin for every candidate threshold (about 1.7 s
        # per activation tensor here: minutes on a MobileNet); the same arithmetic on numpy slices, same result
        calibrator.collector.get_entropy_threshold = kl_threshold
        ranges = calibrator.compute_data()
    (ctx.work_dir / "entropy_augmented.onnx").unlink(missing_ok=True)
    return {name: [{"rmin": np.float32(data.range_value[0]), "rmax": np.float32(data.range_value[1])}]
            for name, data in ranges.items()}



def kl_threshold(histogram: tuple[np.ndarray, ...], num_quantized_bins: int) -> tuple[Any, Any]:
    """The (low, high) clip range whose quantized histogram is closest in KL divergence to the clipped one: ONNX
    Runtime's ``HistogramCollector.get_entropy_threshold`` (TensorRT's calibration) with each Python loop over
    bins replaced by a numpy reshape-sum, keeping its integer truncations so the chosen threshold is the same.
    ``histogram`` is the collector's (counts, edges, min, max)."""
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist, hist_edges = histogram[0], histogram[1]
    num_bins = hist.size
    zero_bin_index = num_bins // 2
    half = num_quantized_bins // 2
    dtype = hist_edges.dtype
    divergences = np.zeros(zero_bin_index - half + 1)
    thresholds = []
    for i in range(half, zero_bin_index + 1):
        start, end = zero_bin_index - i, min(zero_bin_index + i + 1, num_bins)
        thresholds.append((hist_edges[start], hist_edges[end]))
        sliced = hist[start:end]
        p = sliced.copy()  # reference: the clipped histogram, outliers folded into its end bins
        p[0] += hist[:start].sum()
        p[-1] += hist[end:].sum()
        nonzeros = (p != 0).astype(np.int64)
        merged = sliced.size // num_quantized_bins
        body = num_quantized_bins * merged
        quantized = sliced[:body].reshape(num_quantized_bins, merged).sum(axis=1).astype(np.int64)
        quantized[-1] += sliced[body:].sum()
        norms = nonzeros[:body].reshape(num_quantized_bins, merged).sum(axis=1)
        # candidate: each quantized bin spread evenly over its non-zero source bins (an int64 array there,
        # so the share is truncated), empty bins and the unmerged tail stay zero
        share = np.zeros(num_quantized_bins, dtype=np.int64)
        filled = norms != 0
        share[filled] = quantized[filled] / norms[filled]
        q = np.zeros(p.size, dtype=np.int64)
        q[:body] = np.repeat(share, merged)
        p, q = smooth_distribution(p), smooth_distribution(q)
        divergences[i - half] = np.inf if p is None or q is None else np.array(entropy(p, q), dtype=dtype)
    low, high = thresholds[int(np.argmin(divergences))]
    return (histogram[2] if low < histogram[2] else low, histogram[3] if high > histogram[3] else high)


@hookimpl
def edgeslim_register_techniques(register):
    register(Int8Quantization())
