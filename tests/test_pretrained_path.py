"""The path users take: `weights = "imagenet"` through Keras's real loading code, offline.

The network fetch is the only thing replaced (tests/weights_standin.py): seeded
weight files under the names Keras asks for, loaded by keras.applications itself.
One model per keras.applications family runs the generated port script with its
default weights, then `--verify`, then compares the ported model with
`keras.applications.X(weights="imagenet")` built with the same stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import weights_standin
from helpers import REPO, import_path

from codegen.runtime.porting import compare_outputs, flatten, seeded_inputs

# (model, input size): one per family, the smallest input each family's imagenet weights allow
FAMILIES = [
    ("ConvNeXtTiny", 32),
    ("DenseNet121", 32),
    ("EfficientNetB0", 32),
    ("EfficientNetV2B0", 32),
    ("InceptionResNetV2", 75),
    ("InceptionV3", 75),
    ("MobileNet", 128),
    ("MobileNetV2", 96),
    ("MobileNetV3Small", 224),
    ("NASNetMobile", 32),
    ("ResNet50", 32),
    ("ResNet50V2", 32),
    ("VGG16", 32),
    ("VGG19", 32),
    ("Xception", 71),
]


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory) -> Path:
    """The stand-in folder, with its hooks installed in this process."""
    folder = tmp_path_factory.mktemp("imagenet_standin")
    weights_standin.install(folder)
    return folder


def run(args: list[str], cwd: Path, standin: Path, keras_home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(weights_standin.subprocess_env(standin, keras_home))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the scripts must be quiet on their own
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def stitchgen(*args: str) -> list[str]:
    return [sys.executable, "-m", "codegen", *args]


@pytest.mark.parametrize("name,size", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_imagenet_port_per_family(name, size, standin_dir, tmp_path):
    constructor = getattr(keras.applications, name)
    kwargs = {"include_top": False, "input_shape": (size, size, 3)}
    weights_standin.write_standin(standin_dir, constructor, **kwargs)
    specs, out, work = tmp_path / "specs", tmp_path / "out", tmp_path / "work"
    for folder in (specs, work):
        folder.mkdir()
    (specs / "net.toml").write_text(
        f'name = "net"\n[model]\nsource = "keras.applications.{name}"\n'
        f"kwargs = {{ include_top = false, input_shape = [{size}, {size}, 3] }}\n"  # a TOML array, as users write
        'weights = "imagenet"\n'
    )
    home = tmp_path / "keras_home"
    result = run(stitchgen("generate", str(specs / "net.toml"), "--output-dir", str(out)), work, standin_dir, home)
    assert result.returncode == 0, result.stderr
    result = run(
        [sys.executable, str(out / "net_port_weights.py"), "--output", "ported.weights.h5", "--verify"],
        work, standin_dir, home,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert "verify: max abs diff" in result.stdout
    assert "oneDNN" not in result.stderr and "cuda" not in result.stderr.lower(), result.stderr

    keras.backend.clear_session()
    reference = constructor(weights="imagenet", **kwargs)  # Keras's own loader, same stand-in file
    generated = import_path(out / "net.py").build_model()
    generated.load_weights(work / "ported.weights.h5")
    batch = seeded_inputs(reference, seed=3)
    passed, message = compare_outputs(flatten(reference(batch)), flatten(generated(batch)), 1e-5)
    assert passed, message


EXAMPLES = sorted((REPO / "examples").glob("*.toml"))


def _example_standins(spec_path: Path, folder: Path) -> None:
    from codegen.frontend.spec import StitchSpec, load_spec

    spec = load_spec(spec_path)
    sources = [spec.head, spec.tail] if isinstance(spec, StitchSpec) else [spec.model]
    for source in sources:
        constructor = getattr(keras.applications, source.source.rsplit(".", 1)[1])
        weights_standin.write_standin(folder, constructor, **source.kwargs)


def _corrupt_middle_weight(model) -> str:
    weighted = [layer for layer in model.layers if layer.weights and layer.weights[0].ndim >= 2]
    layer = weighted[len(weighted) // 2]
    values = layer.get_weights()
    values[0].flat[0] += 1e-3
    layer.set_weights(values)
    return layer.name


@pytest.mark.parametrize("spec_path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_verify_with_default_weights_and_catch_a_corrupted_weight(spec_path, standin_dir):
    """Every checked-in example: its port script passes --verify with its default (imagenet) weights,
    and the same check fails when one weight of the generated model is off by 1e-3."""
    _example_standins(spec_path, standin_dir)
    from codegen.frontend.spec import load_spec

    name = load_spec(spec_path).name
    script = import_path(REPO / "generated" / f"{name}_port_weights.py", f"_port_{name}")
    generated = script.load_generated()
    if hasattr(script, "build_source"):
        source = script.build_source(script.weights_argument(None, script.DEFAULT_WEIGHTS, script.HERE))
        target = generated.build_model()
        script.port(source, target)
        passed, message = script.verify(source, target)
        assert passed, message
        layer = _corrupt_middle_weight(target)
        passed, message = script.verify(source, target)
        assert not passed, f"a 1e-3 change in {layer} went unnoticed: {message}"
        return
    sources = {
        "tail": script.build_tail_source(script.weights_argument(None, script.TAIL_DEFAULT_WEIGHTS, script.HERE)),
        "head": script.build_head_source(script.weights_argument(None, script.HEAD_DEFAULT_WEIGHTS, script.HERE)),
    }
    target = generated.build_model()
    script.port(sources, target)
    results = script.verify(sources, target, generated)
    assert all(passed for passed, _ in results), results
    for part in ("head", "tail"):
        broken = generated.build_model()
        script.port(sources, broken)
        builder = getattr(generated, f"build_{part}")()
        names = {layer.name for layer in builder.layers}
        weighted = [
            layer for layer in broken.layers if layer.name in names and layer.weights and layer.weights[0].ndim >= 2
        ]
        layer = weighted[len(weighted) // 2]
        values = layer.get_weights()
        values[0].flat[0] += 1e-3
        layer.set_weights(values)
        head_result, tail_result = script.verify(sources, broken, generated)
        failed = head_result if part == "head" else tail_result
        assert not failed[0], f"a 1e-3 change in {part} layer {layer.name} went unnoticed: {failed[1]}"


@pytest.mark.parametrize("name", ["mobilenet_to_inception_resnet_v2", "mobilenet_to_inception_resnet_v2_bottleneck"])
def test_seed_hybrid_with_imagenet_on_both_sides_ports_verifies_and_exports(name, standin_dir, tmp_path):
    """The README's walk-through with its default weights: port (both sides imagenet), verify, export;
    the bottleneck seed also exports a full-int8 phone side calibrated on a folder of photos."""
    import tensorflow as tf

    spec_path = REPO / "examples" / f"{name}.toml"
    _example_standins(spec_path, standin_dir)
    work, home = tmp_path / "work", tmp_path / "keras_home"
    work.mkdir()
    script = REPO / "generated" / f"{name}_port_weights.py"
    result = run([sys.executable, str(script), "--output", "hybrid.weights.h5", "--verify"], work, standin_dir, home)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert result.stdout.count("verify ") == 2
    assert "cuInit" not in result.stderr and "oneDNN" not in result.stderr, result.stderr
    extra = []
    if name.endswith("_bottleneck"):
        rng = np.random.default_rng(0)
        (tmp_path / "photos").mkdir()
        for i in range(6):
            image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            tf.io.write_file(str(tmp_path / "photos" / f"{i}.jpg"), tf.io.encode_jpeg(image))
        extra = ["--calibration", str(tmp_path / "photos")]
    result = run(
        stitchgen("export", str(spec_path), "--weights", "hybrid.weights.h5", "--output-dir", str(tmp_path / "export"),
                  *extra),
        work, standin_dir, home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr
    phone = tmp_path / "export" / f"{name}_phone.tflite"
    phone_int8 = tmp_path / "export" / f"{name}_phone_int8.tflite"
    assert phone_int8.stat().st_size < 0.5 * phone.stat().st_size  # int8 weights: about a quarter
    float32_diff = float(result.stdout.split("max abs diff ")[1].split(" ")[0])
    if not extra:  # a bottleneck's codes may sit a level apart at a rounding boundary: export allows one step
        assert float32_diff <= 1e-4
    if extra:
        full = tmp_path / "export" / f"{name}_phone_full_int8.tflite"
        assert full.stat().st_size < 0.5 * phone.stat().st_size
        assert "calibrated on 5 images; on 1 held-out images" in result.stdout, result.stdout


def test_training_teacher_and_suggest_load_imagenet_through_keras(standin_dir, tmp_path):
    """The training script's teacher and `suggest --images`, both with imagenet weights from the stand-in."""
    import tensorflow as tf

    head_kwargs = {"include_top": False, "input_shape": (96, 96, 3)}
    tail_kwargs = {"include_top": False, "input_shape": (64, 64, 3)}
    weights_standin.write_standin(standin_dir, keras.applications.MobileNetV2, **head_kwargs)
    weights_standin.write_standin(standin_dir, keras.applications.ResNet50, **tail_kwargs)
    specs, out, work, images = tmp_path / "specs", tmp_path / "out", tmp_path / "work", tmp_path / "images"
    for folder in (specs, work):
        folder.mkdir()
    rng = np.random.default_rng(0)
    for label in ("left", "right"):
        (images / label).mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            tf.io.write_file(str(images / label / f"{i}.png"), tf.io.encode_png(image))
    (specs / "pair.toml").write_text(
        'name = "pair"\n'
        '[head]\nsource = "keras.applications.MobileNetV2"\nweights = "imagenet"\n'
        'kwargs = { include_top = false, input_shape = [96, 96, 3] }\ncut = "block_6_expand_relu"\n'
        '[tail]\nsource = "keras.applications.ResNet50"\nweights = "imagenet"\n'
        'kwargs = { include_top = false, input_shape = [64, 64, 3] }\nstart = "conv4_block1_1_conv"\n'
        'classes = ["left", "right"]\n'
    )
    home = tmp_path / "keras_home"
    result = run(stitchgen("generate", str(specs / "pair.toml"), "--output-dir", str(out)), work, standin_dir, home)
    assert result.returncode == 0, result.stderr
    result = run([sys.executable, str(out / "pair_port_weights.py"), "--output", "ported.weights.h5", "--verify"],
                 work, standin_dir, home)  # fmt: skip
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    result = run(
        [sys.executable, str(out / "pair_train_adapter.py"), "--weights", "ported.weights.h5", "--data", str(images),
         "--output", "trained.weights.h5", "--epochs", "1", "--batch-size", "4", "--val-split", "0.25"],
        work, standin_dir, home,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert not result.stdout.startswith("note:")  # the teacher is the pretrained tail, not a random one
    log = json.loads((work / "trained.weights.h5.json").read_text())
    assert log["class_names"] == ["left", "right"] and log["stages"][0]["train_distill_loss"][0] > 0

    result = run(
        stitchgen("suggest", "--head", "keras.applications.MobileNetV2", "--tail", "keras.applications.ResNet50",
                  "--head-kwargs", json.dumps(head_kwargs), "--tail-kwargs", json.dumps(tail_kwargs),
                  "--images", str(images), "--top", "2", "--json"),
        work, standin_dir, home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    rows = report["pairs"]
    assert report["ranked_by"] == "residual"
    residuals = [row["residual"] for row in rows]
    assert len(rows) == 2 and all(0.0 <= r < 1.0 for r in residuals), rows
