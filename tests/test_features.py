"""Synthetic graphs, one per feature: generate, port with the emitted script, compare numbers."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import models_for_tests
import numpy as np
import pytest
from helpers import emitted_names, import_path, max_abs_diff, randomize_weights, seeded_batch

from codegen.backend.emit import STYLES
from codegen.frontend.spec import ModelSpec, parse_source
from codegen.products.model import ModelProject
from codegen.write import write_files

TESTS = Path(__file__).resolve().parent


def generate_builder(function: str, out_dir: Path, name: str = "feature", style: str = "factored"):
    """Generate from a builder in models_for_tests; returns the file texts (the project too, if asked)."""
    source = parse_source(f"models_for_tests:{function}", base_dir=TESTS)
    spec = ModelSpec(name=name, model=source, spec_path=TESTS / f"{function}.toml", output_dir=out_dir, style=style)
    project = ModelProject.from_spec(spec)
    files = project.files()
    write_files(files, out_dir)
    generate_builder.last_project = project
    return files


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("function", models_for_tests.FEATURES)
def test_feature_round_trip(function, style, tmp_path):
    files = generate_builder(function, tmp_path, style=style)
    project = generate_builder.last_project
    for text in files.values():
        ast.parse(text)
        assert "keras.src" not in text and "import tensorflow" not in text

    keras.backend.clear_session()
    reference = getattr(models_for_tests, function)()
    randomize_weights(reference, seed=3)
    weights = tmp_path / "source.weights.h5"
    reference.save_weights(weights)

    port = import_path(tmp_path / "feature_port_weights.py", f"port_{function}_{style}")
    out = tmp_path / "ported.weights.h5"
    assert port.main(["--weights", str(weights), "--output", str(out), "--verify"]) == 0
    generated = import_path(tmp_path / "feature.py", f"gen_{function}_{style}").build_model()
    generated.load_weights(out)

    assert [layer.name for layer in generated.layers] == emitted_names(project, reference)
    batch = seeded_batch(reference)
    diff, scale = max_abs_diff(reference(batch, training=False), generated(batch, training=False))
    assert diff <= 1e-5 * (1 + scale), f"{function}: max abs diff {diff:.3e}"


def test_shared_layer_is_created_once(tmp_path):
    text = generate_builder("shared_layers", tmp_path)["feature.py"]
    assert text.count('name="shared"') == 1
    assert text.count("shared_layer(") == 3


def test_nested_models_get_their_own_builders(tmp_path):
    text = generate_builder("nested_models", tmp_path)["feature.py"]
    assert "def build_encoder():" in text and "def build_head():" in text
    assert text.count("build_encoder()") == 2  # definition + one call; the model object is shared


def test_custom_layer_source_is_emitted_and_strings_stay_literals(tmp_path):
    text = generate_builder("custom_layers", tmp_path)["feature.py"]
    tree = ast.parse(text)
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"Tagged", "Unregistered"} <= classes
    assert 'register_keras_serializable(package="stitchgen_tests", name="Tagged")' in text
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert models_for_tests.TRICKY in strings  # survived as one exact literal
    assert "import models_for_tests" not in text  # the user's module is not needed


def test_ops_that_could_collide_with_layer_names_are_named(tmp_path):
    text = generate_builder("ops_nodes", tmp_path)["feature.py"]
    assert "_name_op(ops.add(" in text
    # build twice in one process: automatic op names then differ, explicit ones must not clash
    module = import_path(tmp_path / "feature.py", "ops_twice")
    module.build_model()
    module.build_model()


def test_non_default_arguments_only(tmp_path):
    text = generate_builder("call_kwargs_and_objects", tmp_path)["feature.py"]
    assert "keras.initializers.HeNormal(seed=3)" in text
    assert "keras.regularizers.L2(" in text and "keras.constraints.MaxNorm(" in text
    assert "training=False" in text
    assert "trainable=False" in text
    assert "use_bias" not in text and "padding" not in text
    assert "strides=(1,)" in text  # MaxPooling1D's strides default to pool_size: must stay


def test_dtype_policy_kept(tmp_path):
    text = generate_builder("dtype_policies", tmp_path)["feature.py"]
    assert 'dtype="mixed_float16"' in text and 'dtype="float64"' in text
    module = import_path(tmp_path / "feature.py", "dtypes_check")
    model = module.build_model()
    assert model.get_layer("half").dtype_policy.name == "mixed_float16"
    assert np.dtype(model.outputs[0].dtype) == np.float64


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_model_file_source(tmp_path, suffix):
    """A saved model file (safe mode), custom layer included; the port defaults to its own weights."""
    keras.backend.clear_session()
    reference = models_for_tests.custom_layers()
    randomize_weights(reference, seed=11)
    saved = tmp_path / f"model{suffix}"
    reference.save(saved)
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(
        f'name = "from_file"\n[model]\nsource = "model{suffix}"\n'
        'custom_objects = ["models_for_tests:Tagged", "models_for_tests:Unregistered"]\n'
    )
    from codegen.generate import generate_files

    files, out_dir = generate_files(spec_path)
    write_files(files, out_dir)
    text = files["from_file.py"]
    assert "class Tagged" in text and "models_for_tests" not in text.split('"""', 2)[2].split("SOURCE")[0]

    port = import_path(tmp_path / "from_file_port_weights.py", f"port_file{suffix[1:]}")
    out = tmp_path / "ported.weights.h5"
    assert port.main(["--output", str(out), "--verify"]) == 0  # default: the weights saved in the file
    generated = import_path(tmp_path / "from_file.py", f"gen_file{suffix[1:]}").build_model()
    generated.load_weights(out)
    batch = seeded_batch(reference)
    diff, scale = max_abs_diff(reference(batch, training=False), generated(batch, training=False))
    assert diff <= 1e-5 * (1 + scale)
