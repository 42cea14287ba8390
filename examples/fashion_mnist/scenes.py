"""Scenes for the selective-attention example: a Fashion-MNIST item somewhere in a 112 x 112 photograph.

The backgrounds are the two real photographs scikit-learn ships (``china.jpg``, ``flower.jpg``), cut into
random grey 112 x 112 windows and dimmed; the item is pasted at a random place. Everything is made from
data on disk (no download) and seeded, so a scene set is the same on every machine.

    python examples/fashion_mnist/scenes.py train     # attention.pt and resnet_crops.pt

The main model of the cascade is the reference ResNet fine-tuned on crops of training scenes (centres
jittered by up to 6 px, as the attention model leaves them): the original checkpoint has only seen items
on black and reaches about 42% on crops with a photograph around the item.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCENE = 112
ITEM = 28
ATTENTION_SIZES = (56, 42, 28)
CROP_SIZES = (28, 32, 36)


def backgrounds() -> list[np.ndarray]:
    """The photographs scikit-learn ships, grey, in [0, 1]."""
    from sklearn.datasets import load_sample_images

    try:
        images = load_sample_images().images
    except ImportError as exc:  # scikit-learn reads them with Pillow
        raise SystemExit(f"the scene backgrounds need Pillow: pip install pillow ({exc})") from None
    return [np.asarray(img, dtype=np.float32).mean(axis=2) / 255.0 for img in images]


def make_scenes(items: np.ndarray, seed: int, dim: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """(scenes (N, 1, 112, 112), item centres (N, 2) as (x, y) in pixels) for items (N, 1, 28, 28)."""
    rng = np.random.default_rng(seed)
    photos = backgrounds()
    scenes = np.empty((len(items), 1, SCENE, SCENE), dtype=np.float32)
    centres = np.empty((len(items), 2), dtype=np.float32)
    for i, item in enumerate(items):
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(0, photo.shape[0] - SCENE), rng.integers(0, photo.shape[1] - SCENE)
        scene = photo[top : top + SCENE, left : left + SCENE] * dim
        y, x = rng.integers(0, SCENE - ITEM + 1, size=2)
        patch = scene[y : y + ITEM, x : x + ITEM]
        scene[y : y + ITEM, x : x + ITEM] = np.where(item[0] > 0.05, item[0], patch)
        scenes[i, 0] = scene
        centres[i] = (x + ITEM / 2, y + ITEM / 2)
    return scenes, centres


class AttentionNet(nn.Module):
    """The upstream model: about 1.3k parameters, a saliency map at half its input's resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def train_attention(scenes: np.ndarray, centres: np.ndarray, epochs: int = 4, seed: int = 0) -> AttentionNet:
    """Cross-entropy over the map's cells, the target the cell holding the item's centre; every batch at one
    of the attention sizes, so one network serves every level of the search's knob."""
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = AttentionNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x_all, c_all = torch.from_numpy(scenes), torch.from_numpy(centres)
    for _ in range(epochs):
        order = rng.permutation(len(scenes))
        for start in range(0, len(order), 64):
            batch = torch.from_numpy(order[start : start + 64])
            size = int(rng.choice(ATTENTION_SIZES))
            small = F.interpolate(x_all[batch], size=(size, size), mode="bilinear", align_corners=False)
            heat = net(small)
            h, w = heat.shape[-2:]
            col = (c_all[batch, 0] / SCENE * w).long().clamp(0, w - 1)
            row = (c_all[batch, 1] / SCENE * h).long().clamp(0, h - 1)
            loss = F.cross_entropy(heat.reshape(len(batch), -1), row * w + col)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def finetune_main_on_crops(main: nn.Module, scenes: np.ndarray, labels: np.ndarray, centres: np.ndarray,
                           epochs: int = 3, seed: int = 0) -> nn.Module:
    from edgeslim.plugins.attention import Cascade

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cropper = Cascade(nn.Identity(), nn.Identity(), ITEM, (ATTENTION_SIZES[0],), (ITEM,))
    optimizer = torch.optim.Adam(main.parameters(), lr=1e-3)
    x_all, y_all = torch.from_numpy(scenes), torch.from_numpy(labels.astype(np.int64))
    main.train()
    for _ in range(epochs):
        order = rng.permutation(len(scenes))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            jitter = rng.uniform(-6, 6, size=(len(batch), 2)).astype(np.float32)
            cropper.crop_size = int(rng.choice(CROP_SIZES))
            with torch.no_grad():
                crops = cropper.crop(x_all[batch], torch.from_numpy((centres[batch] + jitter) / SCENE))
            loss = nn.functional.cross_entropy(main(crops), y_all[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return main.eval()


def load_attention() -> AttentionNet:
    path = HERE / "attention.pt"
    if not path.exists():
        raise SystemExit(f"{path} missing: run python examples/fashion_mnist/scenes.py train")
    net = AttentionNet()
    net.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    return net.eval()


def cascade() -> nn.Module:
    """The attention model in front of the crop-tuned ResNet, at the first (largest) attention size."""
    from models import FashionResNet
    from tasks import load_checkpoint

    from edgeslim.plugins.attention import Cascade

    main = load_checkpoint(FashionResNet(), "resnet_crops")
    return Cascade(load_attention(), main, main_size=ITEM, attention_sizes=ATTENTION_SIZES, crop_sizes=CROP_SIZES)


def scene_split(split: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scenes, labels, centres) from the first ``count`` items of Fashion-MNIST's train or test split."""
    from edgeslim.datasets import load_fashion_mnist

    x_train, y_train, x_test, y_test = load_fashion_mnist()
    items, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    scenes, centres = make_scenes(items[:count], seed=0 if split == "train" else 1)
    return scenes, labels[:count], centres


if __name__ == "__main__":
    if sys.argv[1:] != ["train"]:
        raise SystemExit(__doc__)
    from models import FashionResNet
    from tasks import load_checkpoint

    from edgeslim.plugins.attention import Cascade

    scenes, labels, centres = scene_split("train", 10000)
    net = train_attention(scenes, centres)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, HERE / "attention.pt")
    main = finetune_main_on_crops(load_checkpoint(FashionResNet(), "resnet"), scenes, labels, centres)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in main.state_dict().items()},
               HERE / "resnet_crops.pt")
    test, test_labels, test_centres = scene_split("test", 2000)

    for size in ATTENTION_SIZES:
        probe = Cascade(net, nn.Identity(), ITEM, (size,), (ITEM,))
        with torch.no_grad():
            found = probe.locate(torch.from_numpy(test)).numpy() * SCENE
        error = np.abs(found - test_centres).max(axis=1)
        print(f"attention {size}: centre within 4 px {np.mean(error <= 4):.3f}, within 8 px {np.mean(error <= 8):.3f}")
    whole = Cascade(net, main, ITEM, ATTENTION_SIZES, CROP_SIZES)
    with torch.no_grad():
        accuracy = (whole(torch.from_numpy(test)).argmax(1).numpy() == test_labels).mean()
    print(f"cascade accuracy on 2000 test scenes: {accuracy:.4f}")
