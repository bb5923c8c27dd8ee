"""Stitched hybrids equal a reference sliced from the sources at run time."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import import_path, max_abs_diff, randomize_weights, run_cli

from codegen.backend.emit import STYLES
from codegen.frontend.spec import load_spec
from codegen.products.hybrid import StitchProject
from codegen.write import write_files

PAIRS = {
    # the seed case: a four-tensor tail frontier
    "seed": ("MobileNet", 224, "conv_pad_6", "InceptionResNetV2", 299, 610, "auto"),
    # 16x16 -> 12x12: not an integer factor, so a Resizing layer
    "resize": ("ResNet50", 64, "conv2_block3_out", "VGG16", 48, "block3_conv1", "conv"),
    # the tail starts after global pooling and takes a vector
    "vector": ("MobileNetV2", 64, "block_5_add", "ResNet50", 64, "predictions", "auto"),
    # 8x8 -> 16x16: integer upsampling, the literature's linear stitching layer
    "upsample": ("DenseNet121", 64, "pool2_pool", "ResNet50", 64, "conv3_block1_1_conv", "linear"),
}


def spec_text(name, head, head_size, cut, tail, tail_size, start, kind) -> str:
    def q(v):
        return repr(v).replace("'", '"')

    return (
        f'name = "{name}"\n'
        f'[head]\nsource = "keras.applications.{head}"\nkwargs = {{ input_shape = [{head_size}, {head_size}, 3] }}\n'
        f'weights = "none"\ncut = {q(cut)}\n'
        f'[tail]\nsource = "keras.applications.{tail}"\nkwargs = {{ input_shape = [{tail_size}, {tail_size}, 3] }}\n'
        f'weights = "none"\nstart = {q(start)}\n'
        f'[adapter]\nkind = "{kind}"\n'
    )


def source_weights(name: str, size: int, seed: int, path: Path):
    keras.backend.clear_session()
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
    randomize_weights(model, seed)
    model.save_weights(path)
    return model


def operation_output(model, name: str, index: int):
    op = next(o for o in model.operations if o.name == name)
    out = op.output
    return out[index] if isinstance(out, (list, tuple)) else out


def build_pair(key: str, tmp_path: Path, style: str = "factored"):
    head, head_size, _cut, tail, tail_size, _start, _kind = PAIRS[key]
    spec_path = tmp_path / "hybrid.toml"
    spec_path.write_text(spec_text("hybrid", *PAIRS[key]))
    project = StitchProject.from_spec(load_spec(spec_path, style=style))
    write_files(project.files(), tmp_path)
    head_src = source_weights(head, head_size, 1, tmp_path / "head.weights.h5")
    tail_src = source_weights(tail, tail_size, 2, tmp_path / "tail.weights.h5")
    return project, head_src, tail_src


def port(tmp_path: Path, *extra: str, weights_dir: Path | None = None) -> int:
    script = import_path(tmp_path / "hybrid_port_weights.py", f"port_hybrid_{tmp_path.parent.name}_{tmp_path.name}")
    weights_dir = weights_dir or tmp_path
    args = [
        "--head-weights",
        str(weights_dir / "head.weights.h5"),
        "--tail-weights",
        str(weights_dir / "tail.weights.h5"),
    ]
    return script.main(args + ["--output", str(tmp_path / "hybrid.weights.h5"), *extra])


@pytest.mark.parametrize("key", list(PAIRS))
def test_hybrid_equals_reference_sliced_from_sources(key, tmp_path):
    project, head_src, tail_src = build_pair(key, tmp_path)
    head_ref = keras.Model(
        head_src.inputs[0], operation_output(head_src, project.head_crossing.producer, project.head_crossing.ref.index)
    )
    crossing = [operation_output(tail_src, c.producer, c.ref.index) for c in project.tail_crossings]
    tail_ref = keras.Model(crossing, tail_src.outputs[0])

    for style in STYLES:
        out_dir = tmp_path / style
        if style != "factored":
            styled = StitchProject.from_spec(load_spec(tmp_path / "hybrid.toml", style=style))
            write_files(styled.files(), out_dir)
        else:
            write_files(project.files(), out_dir)
        assert port(out_dir, "--verify", weights_dir=tmp_path) == 0

        module = import_path(out_dir / "hybrid.py", f"hybrid_{key}_{style}")
        hybrid = module.build_model()
        hybrid.load_weights(out_dir / "hybrid.weights.h5")
        rng = np.random.default_rng(5)
        for layer in hybrid.layers:  # the adapter gets random, non-trivial weights too
            if layer.name.startswith("adapter") and layer.weights:
                layer.set_weights(
                    [
                        rng.normal(0, 0.1, w.shape).astype("float32") + (1.0 if "variance" in w.path else 0.0)
                        for w in layer.weights
                    ]
                )
        adapter = module.build_adapter()
        for layer in adapter.layers:
            if layer.weights:
                layer.set_weights(hybrid.get_layer(layer.name).get_weights())

        x = rng.standard_normal((2,) + tuple(module.INPUT_SHAPE)).astype("float32")
        adapted = adapter(head_ref(x, training=False), training=False)
        adapted = list(adapted) if isinstance(adapted, (list, tuple)) else [adapted]
        reference = tail_ref(adapted, training=False)
        diff, scale = max_abs_diff(reference, hybrid(x, training=False))
        assert scale > 1e-3
        assert diff <= 1e-5 * (1 + scale), f"{key} ({style}): {diff:.3e}"
        assert module.HEAD_OUTPUT_SHAPE == tuple(project.head_crossing.info.shape[1:])
        assert module.TAIL_INPUT_SHAPES == tuple(tuple(c.info.shape[1:]) for c in project.tail_crossings)


def test_adapter_rules(tmp_path):
    texts = {}
    for key in ("resize", "vector", "upsample"):
        _head, _head_size, _cut, _tail, _tail_size, _start, _kind = PAIRS[key]
        spec_path = tmp_path / f"{key}.toml"
        spec_path.write_text(spec_text(key, *PAIRS[key]))
        text = StitchProject.from_spec(load_spec(spec_path)).files()[f"{key}.py"]
        texts[key] = "".join(text.split())  # black may wrap calls anywhere
    assert "layers.Resizing(12,12" in texts["resize"]
    assert "layers.GlobalAveragePooling2D(" in texts["vector"] and "layers.Dense(2048" in texts["vector"]
    assert "layers.UpSampling2D(2" in texts["upsample"] and 'BatchNormalization(name="adapter' not in texts["upsample"]


def test_one_training_step_changes_only_the_adapter(tmp_path):
    build_pair("upsample", tmp_path)
    assert port(tmp_path) == 0
    module = import_path(tmp_path / "hybrid.py", "hybrid_train")
    model = module.build_model()
    model.load_weights(tmp_path / "hybrid.weights.h5")
    before = {w.path: np.array(w) for w in model.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4,) + module.INPUT_SHAPE).astype("float32")
    y = rng.standard_normal((4,) + tuple(model.outputs[0].shape[1:])).astype("float32")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    changed = {
        path
        for path, value in before.items()
        if not np.array_equal(value, np.array(next(w for w in model.weights if w.path == path)))
    }
    assert changed, "the adapter did not train"
    assert all(path.startswith("adapter") for path in changed), sorted(
        p for p in changed if not p.startswith("adapter")
    )
    adapter_kernels = {w.path for w in model.trainable_weights}
    assert adapter_kernels and all(p.startswith("adapter") for p in adapter_kernels)


def test_verify_fails_loudly_on_corrupted_weights(tmp_path, capsys):
    build_pair("vector", tmp_path)
    corrupted = tmp_path / "tail.weights.h5"
    corrupted.write_bytes(corrupted.read_bytes()[:4096])
    assert port(tmp_path, "--verify") == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "hybrid.weights.h5").exists()


@pytest.mark.parametrize(
    "cut, start, kind, fragments",
    [
        ('"conv_pad6"', "10", "auto", ["no layer named 'conv_pad6'", "conv_pad_6"]),
        ("999", "10", "auto", ["out of range"]),
        ('"conv_pw_1"', "0", "auto", ["at or before the input"]),
        ('"conv_pad_6"', "10", "fancy", ["kind 'fancy' does not exist"]),
        ('"conv2_block1_1_relu"', "10", "auto", []),
    ],
)
def test_stitch_errors(tmp_path, cut, start, kind, fragments):
    head = "ResNet50" if "block" in cut else "MobileNet"
    text = (
        f'name = "bad"\n[head]\nsource = "keras.applications.{head}"\nkwargs = {{ input_shape = [64, 64, 3], include_top = false }}\ncut = {cut}\n'
        f'[tail]\nsource = "keras.applications.MobileNet"\nkwargs = {{ input_shape = [64, 64, 3], include_top = false }}\nstart = {start}\n'
        f'[adapter]\nkind = "{kind}"\n'
    )
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    out = tmp_path / "out"
    result = run_cli("generate", str(spec), "--output-dir", str(out))
    assert result.returncode == 2, result.stderr
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "Traceback" not in result.stderr
    if head == "ResNet50":  # a cut inside a residual block: name the crossing tensors and the nearest cuts
        assert "crossed by 2 tensors" in line[0] and "nearest valid cuts" in line[0]
    for fragment in fragments:
        assert fragment in line[0], line[0]
    assert not out.exists()
