"""Adapter-training throughput: images per second per worker, one worker against two, caching on and off.

Run:  python benchmarks/bench_throughput.py [--work DIR] [--epochs 4]
Reuses the work folder of benchmarks/bench_split.py (run that first: it trains the two
digits networks and ports the `uncompressed` hybrid).

1. One worker, then two worker processes on this machine (`--strategy multiworker`,
   TF_CONFIG with two localhost ports, each reading its shard of every batch): the
   emitted training script's `distill` stage, `--epochs` epochs with `--patience 0`;
   seconds per epoch are read from its log (the first epoch, which traces, is left
   out); images per second per worker = images the worker reads / seconds per epoch.
3. Precision: lstsq,finetune in float32 and with --mixed-precision (bfloat16 compute),
   seconds per epoch and held-out accuracy.
2. Caching on and off: one distill epoch with the frozen head's features and the
   teacher's targets cached (what the script does), against recomputing both every
   step (bench_stitching.cached_vs_uncached), as images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_stitching import cached_vs_uncached, digits

EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+: .*\(([\d.]+) s\)$", re.MULTILINE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_command(work: Path, out: str, epochs: int, *extra: str, stages: str = "distill") -> list[str]:
    return [
        sys.executable, "uncompressed_train_adapter.py", "--weights", "uncompressed_head_ported.weights.h5",
        "--tail-weights", "tail.weights.h5", "--data", "train.npz", "--val", "test.npz", "--output", out,
        "--stages", stages, "--epochs", str(epochs), "--patience", "0", "--batch-size", "64", *extra,
    ]  # fmt: skip


def epoch_seconds(log: str) -> float:
    """Median seconds per epoch after the first."""
    times = [float(s) for n, s in EPOCH_LINE.findall(log) if int(n) > 1]
    if not times:
        raise SystemExit(f"no epoch lines in the training log:\n{log[-2000:]}")
    return statistics.median(times)


def single(work: Path, epochs: int, *extra: str, stages: str = "distill") -> tuple[float, dict]:
    """(median seconds per epoch, the run's log) of one worker."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = _train_command(work, "single.weights.h5", epochs, *extra, stages=stages)
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return epoch_seconds(result.stdout), json.loads((work / "single.weights.h5.json").read_text())


def two_workers(work: Path, epochs: int) -> list[float]:
    ports = [_free_port(), _free_port()]
    cluster = '"cluster": {"worker": [' + ", ".join(f'"localhost:{p}"' for p in ports) + "]}"
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": "{" + cluster + f', "task": {{"type": "worker", "index": {index}}}' + "}",
        }
        command = _train_command(work, "multi.weights.h5", epochs, "--strategy", "multiworker")
        processes.append(subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))  # fmt: skip
    logs = [p.communicate(timeout=3600) for p in processes]
    for p, (_, err) in zip(processes, logs):
        if p.returncode != 0:
            raise SystemExit(err[-3000:])
    return [epoch_seconds(out) for out, _ in logs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "_split_work"))
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    work = Path(args.work)
    if not (work / "uncompressed_head_ported.weights.h5").exists():
        raise SystemExit(f"{work} lacks the ported `uncompressed` hybrid: run benchmarks/bench_split.py first")
    # regenerate: the work folder's scripts may come from an older stitchgen
    subprocess.run([sys.executable, "-m", "codegen", "generate", str(work / "uncompressed.toml")], check=True,
                   capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    train, _ = digits()
    images = len(train[0])

    one, _ = single(work, args.epochs)
    two = two_workers(work, args.epochs)
    precision = {
        flag: single(work, args.epochs, *([flag] if flag else []), stages="lstsq,finetune")
        for flag in ("", "--mixed-precision")
    }
    cached, uncached = cached_vs_uncached(work, "uncompressed", train, repeats=3)
    print(f"{images} training images, batch 64, distill stage, {os.cpu_count()} CPU cores")
    print("| run | seconds per epoch | images per second per worker | images per second in all |")
    print("|---|---:|---:|---:|")
    print(f"| one worker | {one:.2f} | {images / one:,.0f} | {images / one:,.0f} |")
    slowest = max(two)
    print(f"| two workers (multiworker) | {slowest:.2f} | {images / 2 / slowest:,.0f} | {images / slowest:,.0f} |")
    print(f"| cache on (features and targets cached) | {cached:.2f} | {images / cached:,.0f} | - |")
    print(f"| cache off (head and teacher every step) | {uncached:.2f} | {images / uncached:,.0f} | - |")
    print()
    print(f"lstsq,finetune with --epochs {args.epochs} --patience 0, one worker:")
    print("| precision | seconds per finetune epoch | images per second | held-out accuracy |")
    print("|---|---:|---:|---:|")
    for flag, (seconds, log) in precision.items():
        label = "mixed_bfloat16 (--mixed-precision)" if flag else "float32"
        print(f"| {label} | {seconds:.2f} | {images / seconds:,.0f} | {log['stages'][-1]['val_accuracy']:.2%} |")


if __name__ == "__main__":
    main()
