"""`stitchgen suggest --images` in bounded time and memory: MobileNet -> InceptionResNetV2.

Target (issue: suggest in bounded time and memory): 100 calibration images, 5 pairs,
<= 120 s wall and <= 3 GB peak resident memory on the 2-core machine, and residuals
that differ between pairs. Weights are the offline stand-in (seeded files in Keras's
layout, loaded by keras.applications' real imagenet code: tests/weights_standin.py),
so the residuals are those of pretrained-like networks, not of ImageNet's weights.

    python benchmarks/bench_suggest.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


STANDINS = """
import sys
sys.path.insert(0, {tests!r})
import keras, weights_standin
weights_standin.write_standin({folder!r}, keras.applications.MobileNet, input_shape=(224, 224, 3))
weights_standin.write_standin({folder!r}, keras.applications.InceptionResNetV2, input_shape=(299, 299, 3))
"""


def main() -> int:
    # This process never imports TensorFlow: a forked child's peak RSS starts from its
    # parent's, so the stand-ins are written by one child and suggest runs in another,
    # whose own peak os.wait4 reports.
    import weights_standin  # no Keras import at module level

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        standin = tmp / "standin"
        code = STANDINS.format(tests=str(REPO / "tests"), folder=str(standin))
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        import numpy as np

        rng = np.random.default_rng(0)
        base = rng.uniform(0, 255, (100, 1, 1, 3))
        ramp = np.linspace(0, 1, 160)[None, :, None, None] * rng.uniform(0, 255, (100, 1, 1, 3))
        noise = rng.normal(0, 20, (100, 160, 160, 3))
        x = np.clip(base * 0.5 + ramp + noise, 0, 255).astype("uint8")
        np.savez(tmp / "calibration.npz", x=x)
        env = dict(os.environ, **weights_standin.subprocess_env(standin, tmp / "keras_home"))
        command = [
            sys.executable, "-m", "codegen", "suggest",
            "--head", "keras.applications.MobileNet", "--head-kwargs", '{"input_shape": [224, 224, 3]}',
            "--tail", "keras.applications.InceptionResNetV2", "--tail-kwargs", '{"input_shape": [299, 299, 3]}',
            "--images", str(tmp / "calibration.npz"), "--top", "5", "--json",
        ]  # fmt: skip
        with open(tmp / "out", "w+") as out, open(tmp / "err", "w+") as err:
            start = time.perf_counter()
            child = subprocess.Popen(command, env=env, stdout=out, stderr=err)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - start
            child.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(command, child.returncode, out.read(), err.read())
        peak_gb = usage.ru_maxrss / 1024**2
    if result.returncode != 0 or not result.stdout.strip():
        print(f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        return 1
    pairs = json.loads(result.stdout)["pairs"]
    print("| rank | head cut | tail start | shapes | residual |")
    print("| ---: | --- | --- | --- | ---: |")
    for i, p in enumerate(pairs, 1):
        shapes = f"{tuple(p['head_shape'])} -> {tuple(p['tail_shape'])}"
        print(
            f"| {i} | {p['head_cut']} {p['head_layer']} | {p['tail_start']} {p['tail_layer']} | {shapes} | {p['residual']:.4f} |"
        )
    distinct = len({p["residual"] for p in pairs})
    print(
        f"\nwall {wall:.1f} s (target <= 120), peak {peak_gb:.2f} GB (target <= 3), {distinct} distinct residuals of {len(pairs)}"
    )
    return 0 if wall <= 120 and peak_gb <= 3 and distinct == len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
