"""Train the Fashion-MNIST reference models and write their checkpoints next to this file.

    python examples/fashion_mnist/train.py [--epochs-resnet 4] [--epochs-lenet 10] [--models resnet18 mobilenetv2]

``resnet18`` and ``mobilenetv2`` are the millisecond-scale benchmark models (ResNet-18- and MobileNetV2-style
at 64 px): trained on the first 20,000 training images upscaled to 64 px, --epochs-large epochs.

Checkpoints are stored as float16 state dicts (half the size; loading casts back to float32) so tests and
benchmarks never retrain. Seeded; prints test accuracy on all 10,000 test images.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import FashionResNet, LeNet300100, MobileNetV2Style, ResNet18Style  # noqa: E402
from tasks import LARGE_TRAIN_SAMPLES, upscale  # noqa: E402

from edgeslim.datasets import load_fashion_mnist  # noqa: E402
from edgeslim.finetune import finetune  # noqa: E402


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        preds = torch.cat([model(torch.from_numpy(x[i : i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((preds.numpy() == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs-resnet", type=int, default=2)
    parser.add_argument("--epochs-lenet", type=int, default=10)
    parser.add_argument("--epochs-large", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["lenet300100", "resnet"],
                        help="lenet300100, resnet, resnet18, mobilenetv2")
    args = parser.parse_args()
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    results_file = HERE / "checkpoints.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    small = (x_train, y_train, x_test, y_test)
    for name, make_model, epochs, lr in (("lenet300100", LeNet300100, args.epochs_lenet, 1e-3),
                                         ("resnet", FashionResNet, args.epochs_resnet, 2e-3),
                                         ("resnet18", ResNet18Style, args.epochs_large, 2e-3),
                                         ("mobilenetv2", MobileNetV2Style, args.epochs_large, 2e-3)):
        if name not in args.models:
            continue
        torch.manual_seed(0)
        model = make_model()
        large = name in ("resnet18", "mobilenetv2")
        xt, yt, xe, ye = ((upscale(x_train[:LARGE_TRAIN_SAMPLES]), y_train[:LARGE_TRAIN_SAMPLES], upscale(x_test),
                           y_test) if large else small)
        t0 = time.time()
        finetune(model, (xt, yt), epochs=epochs, lr=lr, batch_size=128, seed=0)
        acc = accuracy(model, xe, ye)
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
        torch.save(state, HERE / f"{name}.pt")
        results[name] = {"test_accuracy": acc, "epochs": epochs, "train_s": round(time.time() - t0, 1),
                         "params": sum(p.numel() for p in model.parameters()),
                         "checkpoint_bytes": (HERE / f"{name}.pt").stat().st_size}
        print(name, results[name], flush=True)
        results_file.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
