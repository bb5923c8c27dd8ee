"""Files live in the user's folders: spec, model files, output folder and working directory apart.

`generate` runs from a fourth folder with `--output-dir` elsewhere; every emitted
script then runs from that fourth folder; then the whole tree moves, and the
checked-in set still works because it records paths relative to itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import models_for_tests
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, randomize_weights, subprocess_env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=900)


def stitchgen(*args: str) -> list[str]:
    return [sys.executable, "-m", "codegen", *args]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """root/specs (specs), root/models (.keras files and a weights file), root/work (the working directory)."""
    root = tmp_path_factory.mktemp("user") / "project"
    for folder in ("specs", "models", "work"):
        (root / folder).mkdir(parents=True)
    (root / ".git").mkdir()  # the user's repository: the header's regenerate command is relative to its root
    keras.backend.clear_session()
    for name, seed in (("tiny_head", 1), ("tiny_tail", 2)):
        model = getattr(models_for_tests, name)()
        randomize_weights(model, seed)
        model.save(root / "models" / f"{name}.keras")
        if name == "tiny_tail":
            randomize_weights(model, seed + 10)
            model.save_weights(root / "models" / "tail_other.weights.h5")
    (root / "specs" / "single.toml").write_text('name = "single"\n[model]\nsource = "../models/tiny_head.keras"\n')
    (root / "specs" / "hybrid.toml").write_text(
        'name = "hybrid"\n'
        '[head]\nsource = "../models/tiny_head.keras"\ncut = "h_relu2"\npreprocess = "none"\n'
        '[tail]\nsource = "../models/tiny_tail.keras"\nweights = "../models/tail_other.weights.h5"\n'
        'start = "t_conv2"\npreprocess = "none"\n'
    )
    rng = np.random.default_rng(0)
    for label in ("0", "1", "2"):  # the tail network's own class ids
        (root / "data" / label).mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            tf.io.write_file(str(root / "data" / label / f"{i}.png"), tf.io.encode_png(image))
    return root


def test_single_model_from_a_keras_file_in_four_places(tree, tmp_path):
    work = tree / "work"
    result = run(stitchgen("generate", "../specs/single.toml", "--output-dir", "../out/single"), work)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # quiet: no TensorFlow start-up lines
    header = (tree / "out" / "single" / "single_port_weights.py").read_text()
    assert "Regenerate: stitchgen generate specs/single.toml --output-dir out/single" in header
    script = tree / "out" / "single" / "single_port_weights.py"
    result = run([sys.executable, str(script), "--output", "single.weights.h5", "--verify"], work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (work / "single.weights.h5").is_file()

    moved = tmp_path / "elsewhere"
    shutil.copytree(tree, moved)
    result = run(
        [
            sys.executable,
            str(moved / "out" / "single" / "single_port_weights.py"),
            "--output",
            "w.weights.h5",
            "--verify",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # the header's command reproduces the same bytes in the same place
    before = {p.name: p.read_bytes() for p in (tree / "out" / "single").iterdir()}
    result = run(stitchgen("generate", "specs/single.toml", "--output-dir", "out/single", "--check"), tree)
    assert result.returncode == 0, result.stderr
    assert before == {p.name: p.read_bytes() for p in (tree / "out" / "single").iterdir()}


def test_hybrid_of_two_keras_files_in_four_places(tree, tmp_path):
    work = tree / "work"
    out = tree / "out" / "hybrid"
    result = run(stitchgen("generate", str(tree / "specs" / "hybrid.toml"), "--output-dir", str(out)), work)
    assert result.returncode == 0, result.stderr
    result = run(
        [sys.executable, str(out / "hybrid_port_weights.py"), "--output", "ported.weights.h5", "--verify"], work
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("verify") == 2
    result = run(
        [sys.executable, str(out / "hybrid_train_adapter.py"), "--weights", "ported.weights.h5", "--data", "../data",
         "--output", "trained.weights.h5", "--epochs", "1", "--batch-size", "6"],
        work,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (work / "trained.weights.h5").is_file() and (work / "trained.weights.h5.json").is_file()

    # the spec's weights file is the default, resolved relative to the script: ported tail = tail_other
    import importlib.util

    spec = importlib.util.spec_from_file_location("_hybrid_four", out / "hybrid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hybrid = module.build_model()
    hybrid.load_weights(work / "ported.weights.h5")
    tail = models_for_tests.tiny_tail()
    tail.load_weights(tree / "models" / "tail_other.weights.h5")
    np.testing.assert_array_equal(
        hybrid.get_layer("t_pred").get_weights()[0], tail.get_layer("t_pred").get_weights()[0]
    )

    moved = tmp_path / "moved"
    shutil.copytree(tree, moved)
    moved_out = moved / "out" / "hybrid"
    result = run(
        [sys.executable, str(moved_out / "hybrid_port_weights.py"), "--output", "p.weights.h5", "--verify"], tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_weights_file_in_a_spec_is_one_line(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "net.toml").write_text(
        'name = "net"\n[model]\nsource = "keras.applications.MobileNet"\nweights = "nowhere.weights.h5"\n'
    )
    result = run(
        stitchgen("generate", str(tmp_path / "specs" / "net.toml"), "--output-dir", str(tmp_path / "out")), tmp_path
    )
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1 and "nowhere.weights.h5" in result.stderr and "does not exist" in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_model_file_missing_is_one_line(tmp_path):
    (tmp_path / "net.toml").write_text('name = "net"\n[model]\nsource = "../models/gone.keras"\n')
    result = run(stitchgen("generate", str(tmp_path / "net.toml")), REPO)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "gone.keras" in result.stderr
    assert not any(p.suffix == ".py" for p in tmp_path.iterdir())
    assert os.listdir(tmp_path) == ["net.toml"]
