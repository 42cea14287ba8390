"""Selective attention: the cascade finds, crops and classifies in one graph that every target runs."""

import copy
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'edgeslim[torch]'")
import torch

from edgeslim.errors import EdgeslimError
from edgeslim.host import load_registry
from edgeslim.model import export_torch, torch_source
from edgeslim.plugins.attention import Cascade
from edgeslim.technique import BuildContext
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def scene_with_dots(n: int = 3, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark scenes, each with one bright 6 x 6 square; returns the scenes and the squares' centres (x, y)."""
    rng = np.random.default_rng(seed)
    scenes = rng.uniform(0, 0.1, size=(n, 1, size, size)).astype(np.float32)
    centres = np.empty((n, 2), dtype=np.float32)
    for i in range(n):
        y, x = rng.integers(4, size - 10, size=2)
        scenes[i, 0, y : y + 6, x : x + 6] = 1.0
        centres[i] = (x + 3, y + 3)
    return scenes, centres


def make_cascade() -> torch.nn.Module:
    torch.manual_seed(0)
    attention = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Conv2d(1, 1, 3, padding=1))
    with torch.no_grad():  # a box filter: the heat map is the local brightness
        attention[1].weight.fill_(1 / 9)
        attention[1].bias.zero_()
    main = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 16 * 16, 3))
    return Cascade(attention, main, main_size=16, attention_sizes=(32, 16), crop_sizes=(16, 24))


def test_the_cascade_finds_and_crops_the_bright_square():
    model = make_cascade().eval()
    scenes, centres = scene_with_dots()
    with torch.no_grad():
        found = model.locate(torch.from_numpy(scenes)).numpy() * 64
        assert np.abs(found - centres).max() <= 4
        crops = model.crop(torch.from_numpy(scenes), torch.from_numpy(centres / 64))
    # the square (6 x 6 scene pixels) sits in the middle of every 16 x 16 crop
    assert crops.shape == (3, 1, 16, 16) and (crops[:, 0, 6:10, 6:10] > 0.9).all()
    assert (crops[:, 0, :2, :] < 0.2).all()


def test_one_onnx_graph_runs_the_whole_cascade(tmp_path):
    model = make_cascade().eval()
    scenes, _ = scene_with_dots()
    path = tmp_path / "cascade.onnx"
    export_torch(model, scenes[:1], path, "scene")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in __import__("onnx").load(str(path)).graph.node}
    assert {"Resize", "ArgMax", "GridSample"} <= ops
    for scene in scenes:
        with torch.no_grad():
            expected = model(torch.from_numpy(scene[None])).numpy()
        assert np.allclose(session.run(None, {"scene": scene[None]})[0], expected, atol=1e-4)
    openvino = pytest.importorskip("openvino")
    compiled = openvino.Core().compile_model(str(path), "CPU")
    assert np.allclose(compiled(scenes[:1])[0], session.run(None, {"scene": scenes[:1]})[0], atol=1e-3)


def test_the_technique_sets_the_knobs(tmp_path):
    model = make_cascade()
    scenes, _ = scene_with_dots()
    src = torch_source(model, scenes[:1], tmp_path / "src", "scene")
    tech = load_registry().techniques["attention"]
    knobs = tech.knobs(src)
    assert [(k.name, k.levels) for k in knobs] == [("attention_size", (32, 16))]
    assert tech.accuracy_variants(src) == [{"crop_size": 16}, {"crop_size": 24}]
    plan = {"layers": {}, "model": {"attention_size": 16, "crop_size": 24}}
    changed = tech.apply_torch(copy.deepcopy(model), plan, BuildContext(src, [], tmp_path))
    assert (changed.attention_size, changed.crop_size) == (16, 24)
    with pytest.raises(EdgeslimError, match="offers \\[32, 16\\]"):
        tech.apply_torch(copy.deepcopy(model), {"layers": {}, "model": {"attention_size": 20}},
                         BuildContext(src, [], tmp_path))
    plain = torch_source(model.main, np.zeros((1, 1, 16, 16), np.float32), tmp_path / "plain", "x")
    assert tech.knobs(plain) == [] and tech.accuracy_variants(plain) == []


try:
    from edgeslim.datasets import fashion_mnist_dir

    fashion_mnist_dir()
    import PIL  # noqa: F401  (scikit-learn reads the background photographs with it)

    HAVE_SCENES = True
except Exception:  # noqa: BLE001
    HAVE_SCENES = False


CASCADE_TASK = """
import numpy as np
import torch

import edgeslim
from edgeslim.plugins.attention import Cascade


def make_task():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    scenes = rng.uniform(0, 0.1, size=(48, 1, 64, 64)).astype(np.float32)
    labels = np.arange(48) % 3
    for i, label in enumerate(labels):  # a bright square whose size is the class
        y, x = rng.integers(4, 50, size=2)
        scenes[i, 0, y : y + 4 + 2 * label, x : x + 4 + 2 * label] = 1.0
    attention = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(4, 1, 1))
    main = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 16 * 16, 3))
    model = Cascade(attention, main, main_size=16, attention_sizes=(32, 16), crop_sizes=(16, 24))
    return edgeslim.Task(model=model, example_input=scenes[:1], eval_data=(scenes, labels))
"""


def test_search_explores_the_cascade_knobs(tmp_path, fast_profile):
    task = tmp_path / "cascade_task.py"
    task.write_text(CASCADE_TASK)
    proc = run_cli("search", task, "--profile", fast_profile, "--budget-ms", "0.0001", "--trials", "4",
                   "--no-predictor", "--out", tmp_path / "s", "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert any(note.startswith("attention: {'crop_size'") for note in manifest["notes"]), manifest["notes"]
    records = [json.loads(line) for line in (tmp_path / "s" / "candidates.jsonl").open()]
    assert any(r["plan"]["model"].get("attention_size") == 16 for r in records)


@pytest.mark.skipif(not HAVE_SCENES, reason="needs Fashion-MNIST (dataset-fashion-mnist) and Pillow")
def test_the_scenes_cascade_through_apply(tmp_path, fast_profile):
    """The real example: attention model + crop-tuned ResNet on Fashion-MNIST items in photographs, at the
    smallest attention input and INT8 in both stages, built and measured end to end."""
    plan = tmp_path / "plan.json"
    task = ROOT / "examples" / "fashion_mnist" / "scenes_task.py"
    layers = ["attention.features.0", "main.stem.0", "main.layer3.1.conv2", "main.head.2"]
    plan.write_text(json.dumps({"layers": {name: {"bits": 8} for name in layers},
                                "model": {"attention_size": 28, "crop_size": 32}}))
    proc = run_cli("apply", task, "--plan", plan, "--profile", fast_profile, "--budget-ms", "1000",
                   "--out", tmp_path / "a", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["baseline"]["metric"]["value"] > 0.7 and manifest["best"]["metric"]["value"] > 0.65
    assert manifest["best"]["latency"]["p50_ms"] > 0


HAVE_PNET = HAVE_SCENES and __import__("importlib").util.find_spec("facenet_pytorch") is not None


@pytest.mark.skipif(not HAVE_PNET, reason="needs pip install --no-deps facenet-pytorch (P-Net's weights)")
def test_pretrained_pnet_finds_the_real_face_through_onnx(tmp_path):
    """MTCNN's P-Net, loaded into the project's own definition, is the attention stage: in the exported
    cascade (ONNX Runtime) it puts the crop on the astronaut's face in nearly every face scene."""
    sys.path.insert(0, str(ROOT / "examples" / "faces"))
    from faces import SCENE, cascade, make_scenes

    model = cascade().eval()
    scenes, labels, centres = make_scenes(40, seed=5)
    with torch.no_grad():
        found = model.locate(torch.from_numpy(scenes)).numpy() * SCENE
    faces = labels == 1
    assert (np.abs(found[faces] - centres[faces]).max(axis=1) <= 12).mean() >= 0.9
    export_torch(model, scenes[:1], tmp_path / "faces.onnx", "scene")
    session = ort.InferenceSession(str(tmp_path / "faces.onnx"), providers=["CPUExecutionProvider"])
    predicted = np.array([session.run(None, {"scene": s[None]})[0].argmax() for s in scenes])
    assert (predicted == labels).mean() >= 0.9
