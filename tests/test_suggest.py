"""`stitchgen suggest`: shape ranking without images, least-squares residual ranking with them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
from helpers import run_cli

from codegen.products.suggest import shape_penalty

TESTS = Path(__file__).resolve().parent


def test_shape_penalty_orders_equal_then_integer_then_other():
    equal = shape_penalty((8, 8, 64), (8, 8, 64))
    factor = shape_penalty((16, 16, 64), (8, 8, 64))
    other = shape_penalty((16, 16, 64), (12, 12, 64))
    assert equal == 0 < factor < other
    assert shape_penalty((8, 8, 64), (8, 8, 256)) > equal


def _task(n: int, seed: int):
    """Images whose label is the brightest quadrant: a small task both networks can learn."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 80, (n, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, n)
    for image, label in zip(x, y):
        row, col = divmod(int(label), 2)
        image[row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 150
    return x, y


def test_suggest_ranks_a_pair_with_a_good_linear_fit_above_a_worse_one(tmp_path):
    """Two trained networks sharing their first convolution (a common stem): h_relu1 -> t_relu1 is
    an exact linear fit (a channel selection); h_relu2 -> t_relu1 is not."""
    import models_for_tests

    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    x, y = _task(96, 0)
    keras.utils.set_random_seed(0)
    head = models_for_tests.tiny_head()
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    head.fit(x / 255.0, y, epochs=2, verbose=0)
    tail = models_for_tests.tiny_tail()
    kernel, bias = head.get_layer("h_conv1").get_weights()
    tail.get_layer("t_conv1").set_weights([kernel[..., :6], bias[:6]])
    tail.get_layer("t_conv1").trainable = False
    tail.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    tail.fit(x / 255.0, y, epochs=2, verbose=0)
    head.save_weights(tmp_path / "head.weights.h5")
    tail.save_weights(tmp_path / "tail.weights.h5")
    np.savez(tmp_path / "calibration.npz", x=_task(64, 1)[0].astype("uint8"))

    plain = run_cli(
        "suggest",
        "--head",
        "models_for_tests:tiny_head",
        "--tail",
        "models_for_tests:tiny_tail",
        "--top",
        "3",
        cwd=tmp_path,
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "penalty" in plain.stdout and len(plain.stdout.strip().splitlines()) == 4

    result = run_cli(
        "suggest", "--head", "models_for_tests:tiny_head", "--tail", "models_for_tests:tiny_tail",
        "--images", "calibration.npz", "--head-weights", "head.weights.h5", "--tail-weights", "tail.weights.h5",
        "--top", "20", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    pairs = json.loads(result.stdout)["pairs"]
    order = [(p["head_tensor"], p["tail_tensor"]) for p in pairs]
    good, worse = order.index(("h_relu1", "t_relu1")), order.index(("h_relu2", "t_relu1"))
    assert pairs[good]["residual"] < 1e-6 < 0.01 < pairs[worse]["residual"]
    assert good < worse
    assert [p["residual"] for p in pairs] == sorted(p["residual"] for p in pairs)
