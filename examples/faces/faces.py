"""MTCNN's P-Net as the attention stage: find the face in a 160 x 160 photograph, check the crop.

P-Net (Zhang et al. 2016; the pretrained weights ``pnet.pt``, 28 KB, ship inside the ``facenet-pytorch``
package, which pins old torch/numpy/torchvision, so install it with ``pip install --no-deps
facenet-pytorch``) is loaded into this file's own definition and scans the resized scene; its face
probability map is the cascade's heat map (stride 2, 12 x 12 windows). The downstream network is a small
face / no-face classifier on the 24 x 24 crop, trained here.

Scenes (made here, seeded): grey-free RGB windows of the two photographs scikit-learn ships; half of them
get a face pasted at a random place, size (32-48 px), brightness and mirror. The face is the astronaut
Eileen Collins' from NASA's public-domain portrait (``astronaut_face.png``, cut from the copy scikit-image
ships). Label: 1 if the scene holds a face.

    python examples/faces/faces.py train      # facecheck.pt
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
SCENE = 160
ATTENTION_SIZES = (80, 64, 48)
CROP_SIZES = (48, 40, 56)
MAIN_SIZE = 24


class PNet(nn.Module):
    """MTCNN's proposal network, layer for layer as facenet-pytorch defines it (so its state dict loads)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Face probability per 12 x 12 window (stride 2), (N, 1, h, w). Input: RGB in [0, 1]."""
        x = (x * 255.0 - 127.5) * 0.0078125  # MTCNN's normalisation
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1:2]


def load_pnet() -> PNet:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("P-Net's weights come with facenet-pytorch: pip install --no-deps facenet-pytorch")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "pnet.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = PNet()
    # conv4_1/conv4_2 (face score, box offsets) and the rest load as is; nothing of facenet-pytorch is imported
    net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()})
    return net.eval()


class FaceCheck(nn.Module):
    """The downstream network: face or not, on a 24 x 24 RGB crop (about 6k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(32, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(img, dtype=np.float32) / 255.0 for img in load_sample_images().images]


def _face() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(HERE / "astronaut_face.png").convert("RGB"), dtype=np.float32) / 255.0


def make_scenes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scenes (N, 3, 160, 160), labels (1 = a face), face centres (x, y) in pixels, NaN without a face)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos, face = _photos(), _face()
    scenes = np.empty((count, 3, SCENE, SCENE), dtype=np.float32)
    labels = np.zeros(count, dtype=np.int64)
    centres = np.full((count, 2), np.nan, dtype=np.float32)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(0, photo.shape[0] - SCENE), rng.integers(0, photo.shape[1] - SCENE)
        scene = photo[top : top + SCENE, left : left + SCENE].copy()
        if i % 2 == 0:
            width = int(rng.integers(32, 49))
            height = int(round(width * face.shape[0] / face.shape[1]))
            img = Image.fromarray((face * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
            patch = np.asarray(img, dtype=np.float32) / 255.0 * rng.uniform(0.7, 1.2)
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            y, x = rng.integers(0, SCENE - height), rng.integers(0, SCENE - width)
            scene[y : y + height, x : x + width] = np.clip(patch, 0, 1)
            labels[i] = 1
            centres[i] = (x + width / 2, y + height / 2)
        scenes[i] = scene.transpose(2, 0, 1)
    return scenes, labels, centres


def cascade(check: nn.Module | None = None) -> nn.Module:
    from edgeslim.plugins.attention import Cascade

    # a P-Net cell i covers input pixels [2i, 2i + 12): its centre is 2i + 6
    return Cascade(load_pnet(), check if check is not None else load_check(), main_size=MAIN_SIZE,
                   attention_sizes=ATTENTION_SIZES, crop_sizes=CROP_SIZES, stride=2, offset=6)


def load_check() -> FaceCheck:
    path = HERE / "facecheck.pt"
    if not path.exists():
        raise SystemExit(f"{path} missing: run python examples/faces/faces.py train")
    net = FaceCheck()
    net.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    return net.eval()


def train_check(scenes: np.ndarray, labels: np.ndarray, epochs: int = 6, seed: int = 0) -> FaceCheck:
    """Trained on what it will see: the crops P-Net picks (at every attention size and crop size)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    probe = cascade(nn.Identity())
    crops, targets = [], []
    with torch.no_grad():
        for size in ATTENTION_SIZES:
            for crop in CROP_SIZES:
                probe.attention_size, probe.crop_size = size, crop
                for start in range(0, len(scenes), 256):
                    batch = torch.from_numpy(scenes[start : start + 256])
                    crops.append(probe.crop(batch, probe.locate(batch)))
                    targets.append(torch.from_numpy(labels[start : start + 256]))
    x, y = torch.cat(crops), torch.cat(targets)
    net = FaceCheck()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(order), 128):
            batch = order[start : start + 128]
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


if __name__ == "__main__":
    if sys.argv[1:] != ["train"]:
        raise SystemExit(__doc__)
    scenes, labels, _ = make_scenes(2000, seed=0)
    check = train_check(scenes, labels)
    torch.save({k: v.half() for k, v in check.state_dict().items()}, HERE / "facecheck.pt")
    test, test_labels, test_centres = make_scenes(1000, seed=1)
    whole = cascade(check)
    faces = test_labels == 1
    for size in ATTENTION_SIZES:
        whole.attention_size = size
        with torch.no_grad():
            found = whole.locate(torch.from_numpy(test)).numpy() * SCENE
            accuracy = (whole(torch.from_numpy(test)).argmax(1).numpy() == test_labels).mean()
        hit = (np.abs(found[faces] - test_centres[faces]).max(axis=1) <= 12).mean()
        print(f"P-Net at {size}: face centre within 12 px in {hit:.3f} of face scenes; cascade accuracy "
              f"{accuracy:.3f}")
