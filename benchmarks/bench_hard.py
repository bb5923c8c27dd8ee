"""Stitching on a hard task: does the default pipeline reach the weaker source network?

Run:  python benchmarks/bench_hard.py [--work DIR] [--reuse] [--source-epochs 40] [--adapter-epochs 30]

1. Data: benchmarks/hard_task.py, ten classes of shapes x textures with clutter,
   colour, scale and rotation variation (8,000 training images, 2,000 held out;
   seeds 0 and 1). Digits (bench_stitching.py) stays as the smoke test.
2. Networks: the MobileNet-style and ResNet-style networks of
   benchmarks/stitch_models.py, trained from scratch to convergence with flips and
   rotations (early stopping on a 10% validation split, patience 8, learning rate
   halved after 3 epochs without progress; seed 1),
   cached in --work (--reuse keeps them).
3. Cut pairs: equal (8 x 8 x 128 -> the tail's 8 x 8 x 128 frontier) and narrow
   (8 x 8 x 128 -> the tail's 16 x 16 x 64 frontier: fewer channels, upsampled).
4. Per pair: the default pipeline (lstsq,finetune; --epochs is a cap, patience 5)
   with the `auto` adapter, the same with `conv`, with distillation first, and with
   the tail's first block unfrozen (`[tail] trainable_from`). Seeds and seconds printed.

Targets (issue 14): the default pipeline within 2 points of the weaker source network,
and within 1 point with unfreezing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_stitching import accuracy, run, stitched

PAIRS = {
    "equal 8x8x128 -> 8x8x128": ("m_block3_pw_relu", "r_block5_conv1", "r_block5_conv1"),
    "narrow 8x8x128 -> 16x16x64": ("m_block3_pw_relu", "r_block3_conv1", "r_block3_conv1"),
}
# (label, adapter kind, stages, unfreeze the tail's first block)
RUNS = [
    ("default (auto, lstsq,finetune)", "auto", "lstsq,finetune", False),
    ("conv, lstsq,finetune", "conv", "lstsq,finetune", False),
    ("auto, lstsq,distill,finetune", "auto", "lstsq,distill,finetune", False),
    ("auto, lstsq,finetune, tail unfrozen (trainable_from its first layer)", "auto", "lstsq,finetune", True),
]


def train_network(builder, data, epochs: int, path: Path) -> tuple[float, int, float]:
    """Train to convergence on the hard task; (held-out accuracy, epochs run, seconds)."""
    import keras

    keras.utils.set_random_seed(1)
    model = builder()
    # flips and quarter turns keep every class (shapes and textures are drawn at random angles)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal_and_vertical"), keras.layers.RandomRotation(0.25)])
    inputs = keras.Input(model.inputs[0].shape[1:])
    trainer = keras.Model(inputs, model(augment(inputs)))
    trainer.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    history = trainer.fit(
        data["x_train"].astype("float32"),
        data["y_train"],
        validation_split=0.1,
        epochs=epochs,
        batch_size=64,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=3),
        ],
    )
    model.save_weights(path)
    held_out = accuracy(model, (data["x_test"], data["y_test"]))
    return held_out, len(history.history["loss"]), time.perf_counter() - started


def generate(work: Path, name: str, cut: str, start: str, kind: str, trainable_from: str | None) -> None:
    unfreeze = f'trainable_from = "{trainable_from}"\n' if trainable_from else ""
    (work / f"{name}.toml").write_text(
        f'name = "{name}"\n'
        f'[head]\nsource = "stitch_models:mobile_digits"\nweights = "head.weights.h5"\ncut = "{cut}"\npreprocess = "none"\n'
        f'[tail]\nsource = "stitch_models:res_digits"\nweights = "tail.weights.h5"\nstart = "{start}"\npreprocess = "none"\n'
        f"{unfreeze}"
        f'[adapter]\nkind = "{kind}"\n'
    )
    run([sys.executable, "-m", "codegen", "generate", str(work / f"{name}.toml")], REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "_hard_work"))
    parser.add_argument("--reuse", action="store_true", help="keep the data and networks already in --work")
    parser.add_argument("--source-epochs", type=int, default=60, help="at most this many epochs per source network")
    parser.add_argument("--adapter-epochs", type=int, default=30, help="the training script's --epochs (a cap)")
    parser.add_argument("--pairs", default=",".join(str(i) for i in range(len(PAIRS))), help="which pairs, e.g. 0")
    args = parser.parse_args()

    import hard_task
    import numpy as np
    import stitch_models

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data_path = work / "hard.npz"
    if not (args.reuse and data_path.exists()):
        x_train, y_train = hard_task.make(8000, seed=0)
        x_test, y_test = hard_task.make(2000, seed=1)
        np.savez(data_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = dict(np.load(data_path))
    np.savez(work / "train.npz", x=data["x_train"], y=data["y_train"])
    np.savez(work / "test.npz", x=data["x_test"], y=data["y_test"])
    (work / "stitch_models.py").write_text((HERE / "stitch_models.py").read_text())

    sources = {}
    results_path = work / "sources.json"
    if args.reuse and results_path.exists():
        sources = json.loads(results_path.read_text())
    for part, builder in (("head", stitch_models.mobile_digits), ("tail", stitch_models.res_digits)):
        if part not in sources or not (work / f"{part}.weights.h5").exists():
            acc, epochs, seconds = train_network(builder, data, args.source_epochs, work / f"{part}.weights.h5")
            sources[part] = {"accuracy": acc, "epochs": epochs, "seconds": round(seconds)}
            results_path.write_text(json.dumps(sources, indent=2))
        print(f"{part} network ({builder.__name__}): held-out accuracy {sources[part]['accuracy']:.4f} "
              f"after {sources[part]['epochs']} epochs ({sources[part]['seconds']} s)", flush=True)  # fmt: skip
    weaker = min(sources["head"]["accuracy"], sources["tail"]["accuracy"])

    rows = []
    chosen = [list(PAIRS.items())[int(i)] for i in args.pairs.split(",")]
    for p, (pair, (cut, start, first_block)) in enumerate(chosen):
        for r, (label, kind, stages, unfreeze) in enumerate(RUNS):
            name = f"hard{p}_{r}"
            generate(work, name, cut, start, kind, first_block if unfreeze else None)
            started = time.perf_counter()
            log = stitched(work, name, stages, args.adapter_epochs)["stages"]
            row = {
                "pair": pair,
                "run": label,
                "accuracy": log[-1]["val_accuracy"],
                "per_stage": {entry["stage"]: round(entry["val_accuracy"], 4) for entry in log},
                "epochs": {entry["stage"]: entry.get("epochs") for entry in log if "epochs" in entry},
                "seconds": round(time.perf_counter() - started),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    print(f"Source networks, held out: head (MobileNet-style) {sources['head']['accuracy']:.1%}, "
          f"tail (ResNet-style) {sources['tail']['accuracy']:.1%}; weaker {weaker:.1%}; seeds: data 0/1, "
          "networks 1, adapter training 0")  # fmt: skip
    print("| cut pair | run | accuracy per stage | epochs run | accuracy | vs weaker | seconds |")
    print("|---|---|---|---|---:|---:|---:|")
    for row in rows:
        stages = ", ".join(f"{k} {v:.1%}" for k, v in row["per_stage"].items())
        epochs = ", ".join(f"{k} {v}" for k, v in row["epochs"].items())
        print(f"| {row['pair']} | {row['run']} | {stages} | {epochs} | {row['accuracy']:.1%} "
              f"| {100 * (row['accuracy'] - weaker):+.1f} points | {row['seconds']} |")  # fmt: skip


if __name__ == "__main__":
    main()
