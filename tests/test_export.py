"""`stitchgen export`: a TFLite phone side that agrees with Keras, a .keras server side that loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import import_path, randomize_weights, run_cli
from test_train import SPEC as TINY_SPEC

TESTS = Path(__file__).resolve().parent


def _tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in x:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"]))
    return np.concatenate(rows)


def _generate_and_export(tmp_path: Path, name: str, spec: str, seed: int):
    """Generate the spec's hybrid, give it seeded weights, export it: (module, hybrid, export folder, result)."""
    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    (tmp_path / f"{name}.toml").write_text(spec)
    assert run_cli("generate", str(tmp_path / f"{name}.toml")).returncode == 0
    module = import_path(tmp_path / f"{name}.py", f"{name}_export_{seed}_{tmp_path.name}")
    hybrid = module.build_model()
    randomize_weights(hybrid, seed=seed)
    hybrid.save_weights(tmp_path / "hybrid.weights.h5")
    out = tmp_path / "export"
    weights = str(tmp_path / "hybrid.weights.h5")
    result = run_cli("export", str(tmp_path / f"{name}.toml"), "--weights", weights, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return module, hybrid, out, result


@pytest.mark.parametrize("side", ["server", "phone"])
def test_export_phone_and_server_sides(tmp_path, side):
    spec = TINY_SPEC.replace('kind = "auto"', f'kind = "auto"\nside = "{side}"')
    module, hybrid, out, result = _generate_and_export(tmp_path, "tiny", spec, seed=4)
    assert "max abs diff" in result.stdout

    x = np.random.default_rng(9).uniform(-1, 1, (3, 16, 16, 3)).astype("float32")
    head = module.build_head()
    adapter = module.build_adapter()
    for part in (head, adapter):
        for layer in part.layers:
            if layer.weights:
                layer.set_weights(hybrid.get_layer(layer.name).get_weights())
    features = head(x, training=False)
    phone_expected = adapter(features, training=False) if side == "phone" else features
    got = _tflite(out / "tiny_phone.tflite", x)
    assert np.max(np.abs(got - keras.ops.convert_to_numpy(phone_expected))) <= 1e-4
    # the tiny head has no tensor of 1024+ weights, which dynamic-range quantisation needs: same size, never larger
    assert (out / "tiny_phone_int8.tflite").stat().st_size <= (out / "tiny_phone.tflite").stat().st_size

    server = keras.saving.load_model(out / "tiny_server.keras", compile=False)
    full = keras.ops.convert_to_numpy(hybrid(x, training=False))
    sent = keras.ops.convert_to_numpy(phone_expected)
    server_in = [sent] if side == "phone" else sent  # the tail takes its frontier tensors as a list
    server_out = keras.ops.convert_to_numpy(server(server_in, training=False))
    assert np.max(np.abs(server_out - full)) <= 1e-5 * (1 + np.max(np.abs(full)))


def test_int8_phone_side_is_at_most_half_the_float32_one(tmp_path):
    """Dynamic-range int8 stores weights in a byte: with 20k weights on the phone, the file shrinks."""
    spec = TINY_SPEC.replace("models_for_tests:tiny_head", "models_for_tests:wide_head").replace("h_relu2", "w_relu2")
    _, _, out, _ = _generate_and_export(tmp_path, "wide", spec.replace('name = "tiny"', 'name = "wide"'), seed=6)
    float32, int8 = (out / "wide_phone.tflite").stat().st_size, (out / "wide_phone_int8.tflite").stat().st_size
    assert float32 > 4 * 18_000  # the 64 x 32 x 3 x 3 kernel alone, in float32
    assert int8 <= 0.5 * float32, (int8, float32)


def test_export_needs_existing_weights(tmp_path):
    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    result = run_cli("export", str(tmp_path / "tiny.toml"), "--weights", str(tmp_path / "nope.weights.h5"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_export_in_a_fresh_process_with_file_modes_and_nothing_left_on_failure(tmp_path):
    """The CLI is a fresh process that imports nothing first; written files get ordinary modes;
    a failing export leaves no folder and no file behind."""
    from helpers import new_file_mode

    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    assert run_cli("generate", str(tmp_path / "tiny.toml")).returncode == 0
    module = import_path(tmp_path / "tiny.py", "tiny_export_modes")
    hybrid = module.build_model()
    randomize_weights(hybrid, seed=5)
    hybrid.save_weights(tmp_path / "hybrid.weights.h5")
    out = tmp_path / "new" / "export"
    result = run_cli(
        "export",
        str(tmp_path / "tiny.toml"),
        "--weights",
        str(tmp_path / "hybrid.weights.h5"),
        "--output-dir",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr  # no converter log, no TensorFlow start-up lines
    for name in ("tiny_phone.tflite", "tiny_phone_int8.tflite", "tiny_server.keras"):
        assert (out / name).stat().st_mode & 0o777 == new_file_mode(), name
    assert sorted(p.name for p in out.iterdir()) == ["tiny_phone.tflite", "tiny_phone_int8.tflite", "tiny_server.keras"]

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="unrelated")])
    other.save_weights(tmp_path / "wrong.weights.h5")
    failed = tmp_path / "never" / "made"
    result = run_cli(
        "export",
        str(tmp_path / "tiny.toml"),
        "--weights",
        str(tmp_path / "wrong.weights.h5"),
        "--output-dir",
        str(failed),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    assert not (tmp_path / "never").exists()
