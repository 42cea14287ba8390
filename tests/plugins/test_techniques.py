"""Each technique alone, on a torch model the test builds (real export, real ONNX Runtime)."""

import copy
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'edgeslim[torch]'")
import torch
from onnx import numpy_helper

from edgeslim.host import load_registry
from edgeslim.model import export_torch, load_onnx_source, torch_source
from edgeslim.plugins.lowrank import factorize_conv, factorize_linear
from edgeslim.plugins.pruning import nm_mask, pack_sparse, removable_blocks, unpack_sparse
from edgeslim.technique import BuildContext
from edgeslim.torch_twin import attach_torch_twin
from tests.models import make_resnet

EXAMPLE = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


@pytest.fixture
def source(tmp_path):
    return torch_source(make_resnet(), EXAMPLE, tmp_path / "src", "images")


def run_torch(module, x=EXAMPLE):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def test_lowrank_full_rank_is_exact_and_low_rank_is_smaller():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert torch.allclose(factorize_linear(linear, 1.0)(x), linear(x), atol=1e-4)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1, stride=2)
    xc = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        full = factorize_conv(conv, 1.0)
        assert torch.allclose(full(xc), conv(xc), atol=1e-4)
        half = factorize_conv(conv, 0.5)
        assert half(xc).shape == conv(xc).shape
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in conv.parameters())


def test_lowrank_technique_replaces_layers_and_exports(source, tmp_path):
    tech = load_registry().techniques["lowrank"]
    knobs = {k.layer: k for k in tech.knobs(source)}
    assert "layer2.conv1" in knobs and knobs["layer2.conv1"].levels[0] == 1.0
    plan = {"layers": {"layer2.conv1": {"rank": 0.5}}, "model": {}}
    module = tech.apply_torch(copy.deepcopy(source.torch_model), plan, BuildContext(source, [], tmp_path))
    assert isinstance(module.layer2.conv1, torch.nn.Sequential)
    out, ref = run_torch(module), run_torch(source.torch_model)
    assert out.shape == ref.shape and np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.9
    export_torch(module, EXAMPLE, tmp_path / "lr.onnx", "images")


def test_layer_pruning_finds_and_removes_residual_blocks(source, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()),
                              torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)),
                              torch.nn.Flatten(), torch.nn.Linear(16 * 16 * 16, 10))
    src = torch_source(net, EXAMPLE, tmp_path / "s2", "images")
    assert removable_blocks(src) == ["2"]  # "3" changes the shape; convs alone are not blocks
    tech = load_registry().techniques["layer_pruning"]
    module = tech.apply_torch(copy.deepcopy(net), {"layers": {"2": {"remove": True}}, "model": {}},
                              BuildContext(src, [], tmp_path))
    assert isinstance(module[2], torch.nn.Identity) and run_torch(module).shape == (1, 10)


def test_taylor_importance_prunes_with_data(source, tmp_path):
    tech = load_registry().techniques["pruning"]
    rng = np.random.default_rng(1)
    train = (rng.standard_normal((128, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 128))
    ctx = BuildContext(source, [], tmp_path, train_data=train)
    plan = {"layers": {"layer1.conv1": {"sparsity": 0.5}}, "model": {"prune_importance": "taylor"}}
    pruned = tech.apply_torch(copy.deepcopy(source.torch_model), plan, ctx)
    assert pruned.layer1.conv1.out_channels == 16 and not ctx.notes
    magnitude = tech.apply_torch(copy.deepcopy(source.torch_model), {**plan, "model": {}}, ctx)
    # different criteria keep different filters
    assert not torch.equal(pruned.layer1.conv2.weight, magnitude.layer1.conv2.weight)


def test_neuron_pruning_of_an_mlp(tmp_path):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 300), torch.nn.ReLU(),
                              torch.nn.Linear(300, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    src = torch_source(mlp, EXAMPLE, tmp_path / "mlp", "images")
    tech = load_registry().techniques["pruning"]
    plan = {"layers": {"1": {"sparsity": 0.5}, "3": {"sparsity": 0.75}}, "model": {}}
    pruned = tech.apply_torch(copy.deepcopy(mlp), plan, BuildContext(src, [], tmp_path))
    assert pruned[1].out_features == 152 and pruned[3].in_features == 152 and pruned[3].out_features == 24
    assert run_torch(pruned).shape == (1, 10)


def test_unstructured_global_and_2_4_with_bit_exact_packing(resnet_onnx, tmp_path):
    src = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    tech = load_registry().techniques["weight_pruning"]
    ctx = BuildContext(src, [], tmp_path)
    first, second = src.layers[1].name, src.layers[2].name
    plan = {"layers": {first: {"weight_sparsity": 0.75}, second: {"nm_sparsity": "2:4"}},
            "model": {"global_weight_sparsity": 0.5}}
    out = tech.apply_onnx(src.onnx_path, plan, ctx, tmp_path / "sparse.onnx")
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    total = sum(a.size for a in inits.values() if a.ndim >= 2)
    zeros = sum((a == 0).sum() for a in inits.values() if a.ndim >= 2)
    assert zeros / total > 0.45
    packed = pack_sparse(out, tmp_path / "m.zip")
    assert packed < 0.75 * out.stat().st_size
    assert unpack_sparse(tmp_path / "m.zip").SerializeToString() == model.SerializeToString()
    feed = {"images": EXAMPLE}
    a = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert a.shape == (1, 10)


def test_nm_mask_keeps_two_of_every_four():
    w = np.random.default_rng(0).standard_normal((8, 16, 3, 3)).astype(np.float32)
    mask = nm_mask(w)
    groups = np.moveaxis(mask, 1, -1).reshape(-1, 4)
    assert (groups.sum(axis=1) == 2).all()


@functools.cache
def digits_teacher() -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """A small CNN trained on scikit-learn's digits (the first 1200 images), shared by the distillation tests."""
    from sklearn.datasets import load_digits

    from edgeslim.finetune import finetune

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    finetune(teacher, (x[:1200], y[:1200]), epochs=40, lr=3e-3)
    return teacher, x, y


def pruned_student(teacher: torch.nn.Module, x: np.ndarray, tmp_path, layers=("0", "2")) -> torch.nn.Module:
    src = torch_source(teacher, x[:1], tmp_path / "t", "input")
    plan = {"layers": {name: {"sparsity": 0.75} for name in layers}, "model": {}}
    return load_registry().techniques["pruning"].apply_torch(copy.deepcopy(teacher), plan,
                                                             BuildContext(src, [], tmp_path))


def test_distillation_recovers_a_pruned_student_without_labels(tmp_path):
    """Teacher: a CNN trained on digits. Student: the teacher with 75% of its channels removed. Distilling on
    unlabelled inputs (alpha=1: the teacher's logits only) must recover most of the lost accuracy."""
    from edgeslim.plugins.distillation import DistillationSettings, distill

    teacher, x, y = digits_teacher()
    student = pruned_student(teacher, x, tmp_path)

    def accuracy(model):
        return float((run_torch(model, x[1200:]).argmax(1) == y[1200:]).mean())

    teacher_acc, pruned_acc = accuracy(teacher), accuracy(student)
    distill(student, teacher, (x[:1200], None), epochs=10, settings=DistillationSettings(alpha=1.0, lr=3e-3))
    recovered = accuracy(student)
    assert teacher_acc > 0.9 and pruned_acc < teacher_acc - 0.05
    assert recovered > pruned_acc + 0.5 * (teacher_acc - pruned_acc), (teacher_acc, pruned_acc, recovered)


def test_with_average_ema_a_distillation_keeps_the_warmed_up_moving_average_of_the_weights_it_trained(tmp_path):
    """Two epochs, so the average is swapped in for the first epoch's scoring and out again: the training itself
    must go on exactly as without averaging, and the weights kept must be the warmed-up exponential moving
    average (decay min(d, (1+n)/(10+n)) after step n) of the weights after every step."""
    from edgeslim.plugins.distillation import DistillationSettings, distill

    teacher, x, y = digits_teacher()
    data = (x[:256], y[:256])  # 4 steps an epoch
    plain, averaged = (pruned_student(teacher, x, tmp_path) for _ in range(2))
    trajectory: list[dict[str, torch.Tensor]] = []  # the weights each training step starts from

    def record(module, inputs):
        if module.training:
            trajectory.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    hook = plain.register_forward_pre_hook(record)
    distill(plain, teacher, data, 2, DistillationSettings(average="none"))
    hook.remove()
    steps = [*trajectory[1:], plain.state_dict()]  # the weights after each step
    expected = {k: v.clone() for k, v in trajectory[0].items()}
    for n, state in enumerate(steps, start=1):
        decay = min(0.9, (1 + n) / (10 + n))
        for k, v in state.items():
            expected[k] = decay * expected[k] + (1 - decay) * v
    distill(averaged, teacher, data, 2, DistillationSettings(average="ema", ema_decay=0.9))
    gaps = [float((averaged.state_dict()[k] - expected[k]).abs().max()) for k in expected]
    assert max(gaps) < 1e-5, gaps


def test_feature_distillation_matches_intermediate_features(tmp_path):
    """With a feature pair, the student's pooled features move much closer to the teacher's than with logits
    alone; a pair naming no module, or modules of different shapes, is a clear error."""
    from edgeslim.errors import EdgeslimError
    from edgeslim.plugins.distillation import DistillationSettings, distill

    teacher, x, _ = digits_teacher()

    def feature_gap(student):
        pooled = {}
        hooks = [m[5].register_forward_hook(lambda mod, i, o, k=k: pooled.__setitem__(k, o))
                 for k, m in (("s", student), ("t", teacher))]
        with torch.no_grad():
            student.eval()(torch.from_numpy(x[1200:]))
            teacher.eval()(torch.from_numpy(x[1200:]))
        for h in hooks:
            h.remove()
        return float(torch.nn.functional.mse_loss(pooled["s"], pooled["t"]))

    # the first conv loses 75% of its channels; the second keeps its 64, so the pooled features pair up
    logits_only, with_features = (pruned_student(teacher, x, tmp_path, layers=("0",)) for _ in range(2))
    settings = {"alpha": 1.0, "lr": 3e-3}
    distill(logits_only, teacher, (x[:1200], None), 5, DistillationSettings(**settings))
    distill(with_features, teacher, (x[:1200], None), 5,
            DistillationSettings(**settings, features=[("5", "5")], feature_weight=1.0))
    assert feature_gap(with_features) < 0.5 * feature_gap(logits_only)
    with pytest.raises(EdgeslimError, match="no module 'nope'"):
        distill(pruned_student(teacher, x, tmp_path, layers=("0",)), teacher, (x[:64], None), 1,
                DistillationSettings(features=[("nope", "5")], feature_weight=1.0))
    with pytest.raises(EdgeslimError, match="shapes differ"):
        distill(pruned_student(teacher, x, tmp_path, layers=("0",)), teacher, (x[:64], None), 1,
                DistillationSettings(features=[("1", "1")], feature_weight=1.0))


def test_onnx_model_gets_structured_pruning_with_least_squares(resnet_onnx, tmp_path):
    """An ONNX-only model, no labels: onnx2torch twin, channels removed, successors rebuilt by least squares
    from calibration inputs; the reconstruction must bring the outputs closer to the original's."""
    from edgeslim.plugins.recovery import reconstruct_least_squares

    src = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    attach_torch_twin(src)
    assert src.torch_model is not None, src.notes
    tech = load_registry().techniques["pruning"]
    names = [k.layer for k in tech.knobs(src)]
    assert names and names[0] == src.layers[0].name  # plans keep the graph's node names
    plan = {"layers": {n: {"sparsity": 0.5} for n in names}, "model": {}}
    rng = np.random.default_rng(3)
    calib, held_out = (rng.standard_normal((n, 3, 32, 32)).astype(np.float32) for n in (64, 16))
    pruned = tech.apply_torch(copy.deepcopy(src.torch_model), plan, BuildContext(src, [], tmp_path))

    def cosine(model):
        a, b = run_torch(model, held_out), run_torch(src.torch_model, held_out)
        return float(np.mean([np.dot(p, q) / np.linalg.norm(p) / np.linalg.norm(q) for p, q in zip(a, b, strict=True)]))

    before = cosine(pruned)
    notes = reconstruct_least_squares(pruned, src.torch_model, calib)
    after = cosine(pruned)
    assert notes and after > before + 0.02, (before, after)
    export_torch(pruned, held_out[:1], tmp_path / "back.onnx", "images")
    out = ort.InferenceSession(str(tmp_path / "back.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": held_out[:1]})[0]
    assert out.shape == (1, 10)


def test_weight_pruning_masks_are_held_while_retraining(source, tmp_path):
    """The torch stage holds the masks (the optimizer cannot revive a pruned weight); finalize makes them
    permanent plain weights again."""
    tech = load_registry().techniques["weight_pruning"]
    ctx = BuildContext(source, [], tmp_path)
    plan = {"layers": {"layer1.conv1": {"weight_sparsity": 0.75}, "head.2": {"nm_sparsity": "2:4"}}, "model": {}}
    module = tech.apply_torch(copy.deepcopy(source.torch_model), plan, ctx)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module.train()
    for _ in range(3):
        optimizer.zero_grad()
        module(torch.from_numpy(np.repeat(EXAMPLE, 4, axis=0))).square().mean().backward()
        optimizer.step()
    module = tech.finalize_torch(module, plan, ctx)
    conv = module.layer1.conv1
    assert not hasattr(conv, "weight_orig") and isinstance(conv.weight, torch.nn.Parameter)
    assert abs(float((conv.weight == 0).float().mean()) - 0.75) < 0.01
    fc_groups = (module.head[2].weight != 0).reshape(-1, 4).sum(dim=1)
    assert (fc_groups <= 2).all()
