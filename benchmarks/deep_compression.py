"""Deep Compression's pipeline (prune -> cluster -> entropy-code) on LeNet-300-100 / Fashion-MNIST, per stage.

    python benchmarks/deep_compression.py [--epochs 8] [--bits 6]

Han et al. (ICLR 2016), LeNet-300-100 on MNIST: pruning keeps 8% / 9% / 26% of the three layers' weights
(12x), weights shared with 6-bit indices, Huffman coding: 1070 KB -> 27 KB, 40x, error 1.64% -> 1.58%.
Here: the same per-layer pruning levels and bit-width on Fashion-MNIST, built exactly as ``edgeslim apply``
builds them (masks held while distilling from the original, then k-means weight sharing with the shared
values fine-tuned; each step gets half of --epochs on the task's 10k training images), accuracy on all
10,000 test images, sizes of real files:

- prune: the mask entropy-coded + the surviving float32 values (zstd), in our packed format;
- + cluster: the mask as above + a codebook + fixed-width ``bits``-bit indices (what the paper counts before
  Huffman);
- + code: the packed file itself (indices and masks Huffman- or zstd-coded, whichever is smaller per stream),
  next to the same file with Huffman only and with zstd only.

Every packed file is unpacked again and must give back the identical ONNX model.
Writes benchmarks/results/deep_compression.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.plugins.clustering import pack_model, unpack_model  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
from tasks import make  # noqa: E402

#: Han et al. 2016, Table 2 (LeNet-300-100): fraction of weights kept per layer after pruning
PAPER_KEPT = {"net.1": 0.08, "net.3": 0.09, "net.5": 0.26}
PAPER = {"prune": 12.0, "total": 40.0, "original_kb": 1070, "final_kb": 27, "error_before": 1.64, "error_after": 1.58}


def packed(path: Path, out: Path, coders: tuple[str, ...]) -> dict:
    stats = pack_model(path, out, coders)
    if unpack_model(out).SerializeToString() != onnx.load(str(path)).SerializeToString():
        raise SystemExit(f"{out}: unpacking did not give back the identical model")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8, help="recovery epochs in all (half per step)")
    parser.add_argument("--bits", type=int, default=6)
    args = parser.parse_args()
    started = time.time()
    work = ROOT / "benchmarks" / "results" / f"deep-compression-run-{time.strftime('%Y%m%d-%H%M%S')}"
    task_file = ROOT / "examples" / "fashion_mnist" / "lenet_task.py"
    prune_plan = {"layers": {name: {"weight_sparsity": round(1 - kept, 2)} for name, kept in PAPER_KEPT.items()},
                  "model": {}}
    cluster_plan = {"layers": {name: {**d, "cluster_bits": args.bits} for name, d in prune_plan["layers"].items()},
                    "model": {}}
    # the pruned model gets the whole recovery budget's first half, as it does inside the two-step pipeline
    prune_session = SearchSession(SearchConfig(model=str(task_file), profile="local-cpu", out_dir=str(work / "p"),
                                               finetune_epochs=max(1, args.epochs // 2)))
    full_session = SearchSession(SearchConfig(model=str(task_file), profile="local-cpu", out_dir=str(work / "pc"),
                                              finetune_epochs=args.epochs))
    original = prune_session.source.onnx_path
    pruned = prune_session.builder.build(prune_plan)
    clustered = full_session.builder.build(cluster_plan)
    evaluator = TaskEvaluator(make("lenet300100", eval_samples=10000))

    def accuracy(path: Path) -> float:
        return evaluator.score(prune_session.target.host_session(path))

    base_bytes = original.stat().st_size
    prune_stats = packed(pruned, work / "pruned.dc", ("huffman", "zstd"))
    best = packed(clustered, work / "clustered.dc", ("huffman", "zstd"))
    huffman_only = packed(clustered, work / "clustered.huffman.dc", ("huffman",))
    zstd_only = packed(clustered, work / "clustered.zstd.dc", ("zstd",))
    nonzero = sum(t["nonzero"] for t in best["tensors"].values())
    matrices = {name: t for name, t in best["tensors"].items() if len(t["shape"]) == 2}
    kept = sum(t["nonzero"] for t in matrices.values())
    fixed_width = (best["mask_bytes"] + best["codebook_bytes"] + (nonzero * args.bits + 7) // 8 + best["other_bytes"]
                   + best["header_bytes"])
    weights = sum(int(t["shape"][0]) * int(t["shape"][1]) for t in matrices.values())
    accuracies = {"original": accuracy(original), "pruned": accuracy(pruned), "clustered": accuracy(clustered)}
    rows = [
        {"stage": "original (FP32 ONNX)", "bytes": base_bytes, "accuracy": accuracies["original"], "paper_ratio": 1.0},
        {"stage": f"prune (kept {kept / weights:.1%} of weights; mask coded + float32 values)",
         "bytes": prune_stats["packed_bytes"], "accuracy": accuracies["pruned"], "paper_ratio": PAPER["prune"]},
        {"stage": f"+ cluster ({args.bits}-bit indices at fixed width + codebooks)", "bytes": fixed_width,
         "accuracy": accuracies["clustered"], "paper_ratio": None},
        {"stage": "+ entropy coding (packed file; best of Huffman/zstd per stream)", "bytes": best["packed_bytes"],
         "accuracy": accuracies["clustered"], "paper_ratio": PAPER["total"]},
        {"stage": "  same, Huffman only", "bytes": huffman_only["packed_bytes"], "accuracy": accuracies["clustered"],
         "paper_ratio": None},
        {"stage": "  same, zstd only", "bytes": zstd_only["packed_bytes"], "accuracy": accuracies["clustered"],
         "paper_ratio": None},
    ]
    for row in rows:
        row["ratio"] = base_bytes / row["bytes"]
    out = ROOT / "benchmarks" / "results"
    result = {"command": "python benchmarks/deep_compression.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "epochs": args.epochs, "bits": args.bits,
              "per_layer_kept": {k: round(v["nonzero"] / (v["shape"][0] * v["shape"][1]), 4)
                                 for k, v in matrices.items()},
              "codings": best["codings"], "streams": {k: best[k] for k in ("mask_bytes", "codebook_bytes",
                                                                          "index_bytes", "other_bytes")},
              "paper": PAPER, "rows": rows, "wall_time_s": round(time.time() - started, 1)}
    (out / "deep_compression.json").write_text(json.dumps(result, indent=2))
    md = ["| stage | size | ratio | paper's ratio (MNIST) | test accuracy |", "|---|---|---|---|---|"]
    for row in rows:
        paper = f"{row['paper_ratio']:.0f}x" if row["paper_ratio"] else "-"
        md.append(f"| {row['stage']} | {row['bytes'] / 1e3:.1f} kB | {row['ratio']:.1f}x | {paper} | "
                  f"{row['accuracy']:.4f} |")
    md += ["", f"LeNet-300-100 on Fashion-MNIST; recovery {args.epochs} epochs of distillation on 10k training images "
           f"(half after pruning, half fine-tuning the shared values); streams chosen: {best['codings']}. Paper: "
           f"{PAPER['original_kb']} KB -> {PAPER['final_kb']} KB on MNIST, error {PAPER['error_before']}% -> "
           f"{PAPER['error_after']}%. Shared float weights run at FP32 speed: this is a size technique."]
    (out / "deep_compression.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
