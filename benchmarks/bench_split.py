"""Rate against accuracy for bottleneck adapters: bytes per image sent against stitched accuracy.

Run:  python benchmarks/bench_split.py [--epochs 30] [--adapter-epochs 8] [--work DIR] [--plot FILE]
Needs the `bench` extra (scikit-learn's bundled digits; no download).

1. The stitching benchmark's data and networks (benchmarks/bench_stitching.py): 1,797
   digits at 32 x 32 x 3, a MobileNet-style head network and a ResNet-style tail
   network trained from scratch, cut at the equal-size pair (8 x 8 x 128 -> 8 x 8).
2. The uncompressed stitch (`auto` adapter, float32 cut) as the reference.
3. Bottleneck adapters of several widths, strides and precisions, each trained with
   the emitted script's stages lstsq (principal components, then least squares),
   distill (to the tail's frontier) and finetune (the task loss).
4. Bytes per image as sent, against the float32 cut and against the input image
   as JPEG (quality 90, measured on the held-out images at 32 x 32).

Target (issue 13): some bottleneck sends at least 10x fewer bytes than the float32 cut
and fewer than the JPEG, for at most 2 points of accuracy lost against the
uncompressed stitch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_stitching import digits, run, stitched, train_source

CUT, START = "m_block3_pw_relu", "r_block5_conv1"  # 8 x 8 x 128 -> 8 x 8 x 128
# (channels, stride, transmit): from a quarter of the channels in float16 down to 4 x 4 x 8 in int8
BOTTLENECKS = [
    (32, 1, "float16"),
    (16, 1, "int8"),
    (8, 1, "int8"),
    (4, 1, "int8"),
    (32, 2, "int8"),
    (16, 2, "int8"),
    (8, 2, "int8"),
]


def generate(work: Path, name: str, adapter: str) -> None:
    spec = work / f"{name}.toml"
    spec.write_text(
        f'name = "{name}"\n'
        f'[head]\nsource = "stitch_models:mobile_digits"\nweights = "head.weights.h5"\ncut = "{CUT}"\npreprocess = "none"\n'
        f'[tail]\nsource = "stitch_models:res_digits"\nweights = "tail.weights.h5"\nstart = "{START}"\npreprocess = "none"\n'
        f"[adapter]\n{adapter}\n"
    )
    run([sys.executable, "-m", "codegen", "generate", str(spec)], REPO)


def jpeg_bytes(images) -> int:
    """Median bytes of the images as JPEG at quality 90 (their own 32 x 32 resolution)."""
    import tensorflow as tf

    return round(statistics.median(len(tf.io.encode_jpeg(image, quality=90).numpy()) for image in images))


def sent_bytes(work: Path, name: str) -> int:
    result = run([sys.executable, "-m", "codegen", "report", f"{name}.toml", "--repeats", "0", "--json"], work)
    return json.loads(result.stdout)["sent"]["bytes"]


def plot(rows: list[dict], reference: dict, jpeg: int, float32_cut: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for transmit, marker in (("int8", "o"), ("float16", "s")):
        picked = [r for r in rows if r["transmit"] == transmit]
        axes.scatter([r["bytes"] for r in picked], [100 * r["accuracy"] for r in picked], marker=marker, label=transmit)
        for k, r in enumerate(picked):
            below = sum(1 for q in picked[:k] if (q["bytes"], q["accuracy"]) == (r["bytes"], r["accuracy"]))
            axes.annotate(r["label"], (r["bytes"], 100 * r["accuracy"]), fontsize=7, xytext=(4, -10 - 9 * below),
                          textcoords="offset points")  # fmt: skip
    axes.scatter([float32_cut], [100 * reference["accuracy"]], marker="*", s=120, label="uncompressed (float32 cut)")
    axes.axhline(100 * reference["accuracy"] - 2, color="grey", linestyle=":", label="uncompressed - 2 points")
    axes.axvline(jpeg, color="red", linestyle="--", label=f"input as JPEG q90 ({jpeg} B)")
    axes.axvline(float32_cut / 10, color="grey", linestyle="--", label="10x fewer than the float32 cut")
    axes.set_xscale("log")
    axes.set_xlabel("bytes per image sent (log)")
    axes.set_ylabel("stitched accuracy, held out (%)")
    axes.set_title("Bottleneck adapters: rate against accuracy (digits, 8x8x128 cut)")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs for each source network")
    parser.add_argument("--adapter-epochs", type=int, default=8, help="at most this many epochs per trained stage")
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "_split_work"))
    parser.add_argument("--plot", default=str(REPO / "docs" / "split_rate_accuracy.png"))
    parser.add_argument("--reuse", action="store_true", help="keep the source networks already trained in --work")
    args = parser.parse_args()

    import numpy as np
    import stitch_models

    work = Path(args.work)
    train, test = digits()
    if not (args.reuse and (work / "head.weights.h5").exists() and (work / "tail.weights.h5").exists()):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        started = time.perf_counter()
        head_acc = train_source(stitch_models.mobile_digits, train, test, args.epochs, work / "head.weights.h5")
        tail_acc = train_source(stitch_models.res_digits, train, test, args.epochs, work / "tail.weights.h5")
        print(f"source networks ({args.epochs} epochs, {time.perf_counter() - started:.0f} s): "
              f"head network {head_acc:.4f}, tail network {tail_acc:.4f}", flush=True)  # fmt: skip
    shutil.copy(HERE / "stitch_models.py", work / "stitch_models.py")
    np.savez(work / "train.npz", x=train[0], y=train[1])
    np.savez(work / "test.npz", x=test[0], y=test[1])
    jpeg = jpeg_bytes(test[0])
    float32_cut = 8 * 8 * 128 * 4

    generate(work, "uncompressed", 'kind = "auto"')
    result = stitched(work, "uncompressed", "lstsq,finetune", args.adapter_epochs)["stages"][-1]
    reference = {"accuracy": result["val_accuracy"], "bytes": sent_bytes(work, "uncompressed")}
    print(f"uncompressed stitch: {reference['bytes']:,} bytes, accuracy {reference['accuracy']:.4f}", flush=True)

    rows = []
    for channels, stride, transmit in BOTTLENECKS:
        name = f"bottleneck_{channels}_s{stride}_{transmit}"
        adapter = f'kind = "bottleneck"\nchannels = {channels}\nstride = {stride}\ntransmit = "{transmit}"'
        generate(work, name, adapter)
        started = time.perf_counter()
        log = stitched(work, name, "lstsq,distill,finetune", args.adapter_epochs)["stages"]
        row = {
            "label": f"{channels} ch, stride {stride}, {transmit}",
            "transmit": transmit,
            "bytes": sent_bytes(work, name),
            "accuracy": log[-1]["val_accuracy"],
            "after_lstsq": log[0]["val_accuracy"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print(f"Input as JPEG (quality 90, median of {len(test[0])} held-out 32 x 32 images): {jpeg} bytes; "
          f"float32 cut: {float32_cut:,} bytes; uncompressed stitch accuracy {reference['accuracy']:.1%}")  # fmt: skip
    print("| bottleneck | bytes per image | fewer than float32 cut | vs JPEG | accuracy after lstsq "
          "| accuracy | vs uncompressed |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| none (auto, float32) | {reference['bytes']:,} | 1x | {reference['bytes'] / jpeg:.1f}x larger | - "
          f"| {reference['accuracy']:.1%} | - |")  # fmt: skip
    met = []
    for r in rows:
        versus = f"{jpeg / r['bytes']:.1f}x smaller" if r["bytes"] < jpeg else f"{r['bytes'] / jpeg:.1f}x larger"
        delta = 100 * (r["accuracy"] - reference["accuracy"])
        print(f"| {r['label']} | {r['bytes']:,} | {float32_cut / r['bytes']:.0f}x | {versus} | {r['after_lstsq']:.1%} "
              f"| {r['accuracy']:.1%} | {delta:+.1f} points |")  # fmt: skip
        if r["bytes"] * 10 <= float32_cut and r["bytes"] < jpeg and delta >= -2.0:
            met.append(r["label"])
    (work / "rows.json").write_text(json.dumps({"rows": rows, "reference": reference, "jpeg": jpeg}, indent=2))
    plot(rows, reference, jpeg, float32_cut, Path(args.plot))
    print(f"\nplot: {args.plot}")
    print(f"target (>= 10x fewer bytes than the float32 cut, fewer than the JPEG, <= 2 points lost): "
          f"{'met by ' + '; '.join(met) if met else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
