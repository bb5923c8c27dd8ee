"""Codegen, build, inference and porting times for InceptionResNetV2, side by side.

Run:  python benchmarks/bench_codegen.py [--repeats 5]
Prints a table of medians and ratios; every pair is measured in the same run.
Targets (issue 2): codegen <= 1.5x import-and-build; generated inference ratio
1.00 +/- 0.03; porting <= 1.2x a bulk set_weights(get_weights()).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "examples" / "inception_resnet_v2.toml"


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - start


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        baseline, codegen = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            baseline.append(
                wall([sys.executable, "-c", "import keras; keras.applications.InceptionResNetV2(weights=None)"])
            )
            codegen.append(wall([sys.executable, "-m", "codegen", "generate", str(SPEC), "--output-dir", tmp]))
        rows.append(
            ("codegen vs import keras + build source (s)", statistics.median(codegen), statistics.median(baseline))
        )

        import keras
        import numpy as np

        generated = load(Path(tmp) / "inception_resnet_v2.py", "irv2_generated")
        port = load(Path(tmp) / "inception_resnet_v2_port_weights.py", "irv2_port")

        build_gen = timed(generated.build_model, args.repeats)
        build_src = timed(lambda: keras.applications.InceptionResNetV2(weights=None), args.repeats)
        rows.append(("build: generated vs source (s)", build_gen, build_src))

        source = port.build_source("none")
        target = generated.build_model()
        copy_layer = timed(lambda: port.port(source, target), args.repeats)
        copy_bulk = timed(lambda: target.set_weights(source.get_weights()), args.repeats)
        rows.append(("port layer by layer vs bulk set_weights(get_weights()) (s)", copy_layer, copy_bulk))

        batch = np.random.default_rng(0).standard_normal((8, 299, 299, 3)).astype("float32")
        source(batch, training=False)
        target(batch, training=False)
        infer_gen, infer_src = [], []
        for _ in range(args.repeats):
            infer_gen.append(timed(lambda: target(batch, training=False), 1))
            infer_src.append(timed(lambda: source(batch, training=False), 1))
        rows.append(
            ("inference, batch 8: generated vs source (s)", statistics.median(infer_gen), statistics.median(infer_src))
        )

    print(f"InceptionResNetV2, {args.repeats} repeats, medians")
    print(f"| {'measurement':<60} | {'stitchgen':>10} | {'baseline':>10} | {'ratio':>6} |")
    print(f"|{'-' * 62}|{'-' * 12}|{'-' * 12}|{'-' * 8}|")
    for label, ours, base in rows:
        print(f"| {label:<60} | {ours:>10.3f} | {base:>10.3f} | {ours / base:>6.2f} |")


if __name__ == "__main__":
    main()
