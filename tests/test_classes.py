"""`[tail] classes`: a new trainable classifier for the user's own classes, end to end.

The hybrid gets the new layer (keras.applications' `classes` convention), the
port script leaves it initialised and checks the tail at the tensor it reads,
the training script trains adapter and classifier on the user's labels, and
labels outside the classes are refused in one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import import_path, randomize_weights, run_cli, run_script

from codegen.frontend.spec import load_spec
from codegen.products.hybrid import StitchProject
from codegen.write import write_files

TESTS = Path(__file__).resolve().parent
NAMES = ["red", "green", "blue"]
SPEC = """name = "colours"
[head]
source = "models_for_tests:tiny_head"
cut = "h_relu2"
preprocess = "keras.applications.mobilenet.preprocess_input"
[tail]
source = "models_for_tests:tiny_tail"
start = "t_conv2"
preprocess = "keras.applications.mobilenet.preprocess_input"
classes = ["blue", "red", "green"]
"""


def write_images(folder: Path, per_class: int, seed: int, names=NAMES) -> None:
    """Noisy images whose class is the dominant colour channel: learnable, not trivial at 20 x 20."""
    rng = np.random.default_rng(seed)
    for channel, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 120, (20, 20, 3)).astype(np.uint8)
            image[..., channel % 3] += (100 + rng.integers(0, 30, (20, 20))).astype(np.uint8)
            tf.io.write_file(str(folder / name / f"{i}.png"), tf.io.encode_png(image))


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """The generated 3-class hybrid, its source weights, the ported weights, train and held-out folders."""
    import models_for_tests

    root = tmp_path_factory.mktemp("colours")
    shutil.copy(TESTS / "models_for_tests.py", root / "models_for_tests.py")
    (root / "colours.toml").write_text(SPEC)
    write_files(StitchProject.from_spec(load_spec(root / "colours.toml")).files(), root)
    keras.backend.clear_session()
    for name, seed in (("head", 1), ("tail", 2)):
        model = getattr(models_for_tests, f"tiny_{name}")()
        randomize_weights(model, seed)
        model.save_weights(root / f"{name}.weights.h5")
    result = run_script(
        root / "colours_port_weights.py",
        "--head-weights", str(root / "head.weights.h5"),
        "--tail-weights", str(root / "tail.weights.h5"),
        "--output", str(root / "ported.weights.h5"),
        "--verify",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert result.stdout.count("verify") == 2  # head, and tail up to the new classifier's input
    write_images(root / "train", 30, seed=0)
    write_images(root / "heldout", 12, seed=1)
    return root


def train(root: Path, out: Path, *extra: str):
    args = ["--weights", str(root / "ported.weights.h5"), "--tail-weights", str(root / "tail.weights.h5")]
    return run_script(root / "colours_train_adapter.py", *args, "--output", str(out), "--batch-size", "8", *extra)


def test_the_hybrid_carries_the_classes(colours):
    module = import_path(colours / "colours.py")
    assert module.CLASSES == 3 and module.CLASS_NAMES == ("blue", "red", "green") and module.CLASSIFIER == "t_pred"
    model = module.build_model()
    assert tuple(model.outputs[0].shape) == (None, 3)
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert "t_pred" in trainable and not any(name.startswith(("t_conv", "h_")) for name in trainable), trainable
    tail = module.build_tail()
    assert {w.path.split("/")[0] for w in tail.trainable_weights} == {"t_pred"}


def test_the_port_leaves_the_new_classifier_initialised(colours):
    import models_for_tests

    module = import_path(colours / "colours.py")
    hybrid = module.build_model()
    hybrid.load_weights(colours / "ported.weights.h5")
    source = models_for_tests.tiny_tail()
    source.load_weights(colours / "tail.weights.h5")
    np.testing.assert_array_equal(
        hybrid.get_layer("t_conv2").get_weights()[0], source.get_layer("t_conv2").get_weights()[0]
    )
    assert not np.array_equal(hybrid.get_layer("t_pred").get_weights()[0], source.get_layer("t_pred").get_weights()[0])
    assert (
        "t_pred"
        not in (colours / "colours_port_weights.py").read_text().split("LAYER_MAP = (")[1].split(")\n# fmt: on")[0]
    )


def test_training_on_user_classes_beats_chance_on_held_out_images(colours, tmp_path):
    out = tmp_path / "trained.weights.h5"
    result = train(colours, out, "--data", str(colours / "train"), "--val", str(colours / "heldout"), "--epochs", "10")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = json.loads((tmp_path / "trained.weights.h5.json").read_text())
    assert log["classes"] == 3 and log["class_names"] == ["blue", "red", "green"]  # the spec's order, not the folders'
    assert all("val_agreement" not in stage for stage in log["stages"])  # the tail's own classes are other classes

    # held-out accuracy measured here, with the trained hybrid and the labels mapped by name
    module = import_path(colours / "colours.py")
    model = module.build_model()
    model.load_weights(out)
    correct = total = 0
    for name in NAMES:
        for path in sorted((colours / "heldout" / name).iterdir()):
            image = tf.io.decode_png(tf.io.read_file(str(path))).numpy().astype("float32")[None]
            x = keras.applications.mobilenet.preprocess_input(keras.ops.image.resize(image, module.INPUT_SHAPE[:2]))
            predicted = int(np.argmax(model(x, training=False)))
            correct += module.CLASS_NAMES[predicted] == name
            total += 1
    accuracy = correct / total
    assert accuracy >= 0.55, accuracy  # chance is 1/3
    assert abs(accuracy - log["stages"][-1]["val_accuracy"]) < 1e-6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: np.savez(root / "d.npz", x=np.zeros((6, 20, 20, 3), "uint8"), y=np.array([0, 1, 2, 5, 0, 1])),
         "labels 5 are outside 0..2 (the spec's classes = 3)"),
        (lambda root: np.savez(root / "d.npz", x=np.zeros((6, 20, 20, 3), "uint8")), "needs them"),
        (lambda root: write_images(root / "d", 3, seed=2, names=["red", "purple"]), "purple are not among the classes"),
    ],
)  # fmt: skip
def test_labels_outside_the_classes_are_refused_in_one_line(colours, tmp_path, make, message):
    make(tmp_path)
    data = tmp_path / ("d.npz" if (tmp_path / "d.npz").exists() else "d")
    out = tmp_path / "x.weights.h5"
    result = train(colours, out, "--data", str(data), "--epochs", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not out.exists()


def test_a_tail_without_a_top_gets_one(tmp_path):
    spec = tmp_path / "specs" / "features.toml"
    spec.parent.mkdir()
    spec.write_text(
        'name = "features"\n'
        '[head]\nsource = "keras.applications.MobileNet"\nweights = "none"\n'
        'kwargs = { include_top = false, input_shape = [32, 32, 3] }\ncut = "conv_pw_2_relu"\n'
        '[tail]\nsource = "keras.applications.MobileNet"\nweights = "none"\n'
        'kwargs = { include_top = false, input_shape = [32, 32, 3] }\nstart = "conv_pad_4"\nclasses = 5\n'
    )
    out = tmp_path / "out"
    result = run_cli("generate", str(spec), "--output-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module = import_path(out / "features.py")
    model = module.build_model()
    assert tuple(model.outputs[0].shape) == (None, 5) and module.CLASS_NAMES is None
    assert [layer.name for layer in model.layers[-2:]] == ["avg_pool", "predictions"]
    result = run_script(out / "features_port_weights.py", "--output", str(tmp_path / "p.weights.h5"), "--verify")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


@pytest.mark.parametrize(
    "value, message",
    [("1", "between 2 and"), ('"three"', "must be a number of classes"), ('["a", "a"]', "lists a name twice"),
     ('["a", ""]', "non-empty printable"), ("true", "must be a number of classes")],
)  # fmt: skip
def test_bad_classes_in_a_spec_are_one_line(tmp_path, value, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace('classes = ["blue", "red", "green"]', f"classes = {value}"))
    result = run_cli("generate", str(spec), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
