"""Every keras.applications model: generate -> port in a subprocess -> same numbers.

`weights=None` with seeded random weights (biases, BatchNorm statistics and
near-zero scales too), classifier activation off, small inputs where the
architecture allows. Tolerance: max |diff| <= 1e-5 * (1 + max |source output|).
"""

from __future__ import annotations

import dataclasses
import inspect

import keras
import numpy as np
import pytest
from helpers import emitted_names, import_path, max_abs_diff, randomize_weights, run_script, seeded_batch

from codegen.backend.emit import STYLES
from codegen.frontend.introspect import introspect
from codegen.frontend.load import load_model
from codegen.frontend.spec import ModelSpec, parse_source
from codegen.products.costs import graph_cost
from codegen.products.model import ModelProject
from codegen.write import write_files

NAMES = sorted(a for a in dir(keras.applications) if a[:1].isupper())
MIN_SIZE = {"InceptionResNetV2": 75, "InceptionV3": 75, "Xception": 71}
NO_CLASSIFIER_ACTIVATION = set()  # every model of this Keras accepts classifier_activation


def app_kwargs(name: str) -> dict:
    size = MIN_SIZE.get(name, 32)
    kwargs = {"input_shape": [size, size, 3], "classes": 10, "classifier_activation": None}
    return kwargs


# The 40 constructors of keras.applications (Keras 3), by family, written out so that a
# model Keras adds, or one the discovery above misses, fails here instead of going untested.
FAMILIES = {
    "ConvNeXt": ["ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge"],
    "DenseNet": ["DenseNet121", "DenseNet169", "DenseNet201"],
    "EfficientNet": [f"EfficientNetB{i}" for i in range(8)],
    "EfficientNetV2": [f"EfficientNetV2B{i}" for i in range(4)]
    + ["EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S"],
    "Inception": ["InceptionResNetV2", "InceptionV3"],
    "MobileNet": ["MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small"],
    "NASNet": ["NASNetLarge", "NASNetMobile"],
    "ResNet": ["ResNet101", "ResNet152", "ResNet50"],
    "ResNetV2": ["ResNet101V2", "ResNet152V2", "ResNet50V2"],
    "VGG": ["VGG16", "VGG19"],
    "Xception": ["Xception"],
}


def test_every_application_is_covered():
    expected = sorted(name for names in FAMILIES.values() for name in names)
    assert len(expected) == 40
    assert NAMES == expected, sorted(set(NAMES) ^ set(expected))
    for name in NAMES:  # each one really is a model constructor of keras.applications
        assert "include_top" in inspect.signature(getattr(keras.applications, name)).parameters, name


@pytest.mark.parametrize("name", NAMES)
def test_application_round_trip(name, tmp_path, capsys):
    """Both styles from one introspection: the emitted port script, then the numbers.

    factored (the default): the port script in a subprocess, then the written weights
    loaded into build_model() and compared here. flat: the same script in-process,
    whose --verify compares the generated model with the source on a seeded batch.
    """
    source = parse_source(f"keras.applications.{name}", kwargs=app_kwargs(name), weights="none")
    spec = ModelSpec(name="model_under_test", model=source, spec_path=tmp_path / "spec.toml", output_dir=tmp_path)
    reference = load_model(source)  # built once: introspected, then the numerical reference
    introspection = introspect(reference)
    assert graph_cost(introspection.graph).params == reference.count_params()  # the report's parameter totals
    randomize_weights(reference, seed=7)
    weights = tmp_path / "source.weights.h5"
    reference.save_weights(weights)
    batch = seeded_batch(reference)
    expected = reference(batch, training=False)

    for style in STYLES:
        out_dir = tmp_path / style
        project = ModelProject(dataclasses.replace(spec, style=style, output_dir=out_dir), introspection)
        write_files(project.files(), out_dir)
        out = out_dir / "ported.weights.h5"
        args = ["--weights", str(weights), "--output", str(out), "--verify"]
        if style == "factored":  # the default style through the command line users run
            result = run_script(out_dir / "model_under_test_port_weights.py", *args)
            assert result.returncode == 0, f"{style}: {result.stderr[-3000:]}"
            assert "verify: max abs diff" in result.stdout
        else:  # in-process: same script, without a second interpreter start
            assert import_path(out_dir / "model_under_test_port_weights.py", f"port_{name}_{style}").main(args) == 0
            assert "verify: max abs diff" in capsys.readouterr().out
            continue

        generated = import_path(out_dir / "model_under_test.py", f"{name}_{style}").build_model()
        generated.load_weights(out)
        assert [layer.name for layer in generated.layers] == emitted_names(project, reference), style
        diff, scale = max_abs_diff(expected, generated(batch, training=False))
        assert np.isfinite(scale) and scale > 1e-3, f"degenerate outputs (max |y| = {scale}) would hide a wrong port"
        assert diff <= 1e-5 * (1 + scale), f"{name} ({style}): max abs diff {diff:.3e} (max |y| {scale:.3e})"
