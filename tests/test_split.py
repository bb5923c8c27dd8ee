"""Split computing: the bottleneck adapter, bytes as sent, `stitchgen plan`, and the full-int8 phone side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import import_path, randomize_weights, run_cli

from codegen.frontend.spec import Bottleneck
from codegen.ir.graph import TensorInfo
from codegen.planning.adapter import code_info, transmitted_bytes
from codegen.runtime.transmission import Dequantize, Quantize, Transmission

TESTS = Path(__file__).resolve().parent
SPEC = """name = "split"
[head]
source = "models_for_tests:tiny_head"
cut = "h_relu2"
[tail]
source = "models_for_tests:tiny_tail"
start = "t_conv2"
[adapter]
kind = "bottleneck"
channels = 4
stride = 2
"""
# tiny_head's h_relu2 is 8 x 8 x 12: stride 2 and 4 channels send 4 x 4 x 4 int8 values and a scale and zero point
SENT_BYTES = 4 * 4 * 4 + 8


# ---------------------------------------------------------------- shapes, bytes and the quantise step


@pytest.mark.unit
@pytest.mark.parametrize(
    ("shape", "channels", "stride", "transmit", "code", "size"),
    [
        ((29, 29, 256), 16, 2, "int8", (15, 15, 16), 15 * 15 * 16 + 8),
        ((29, 29, 256), 16, 1, "float16", (29, 29, 16), 29 * 29 * 16 * 2),
        ((29, 29, 256), 256, 1, "float32", (29, 29, 256), 861_184),  # the seed's uncompressed float32 cut
        ((7, 7, 64), 8, 4, "int8", (2, 2, 8), 2 * 2 * 8 + 8),
        ((1024,), 32, 1, "int8", (32,), 32 + 8),
    ],
)
def test_code_shapes_and_bytes_are_exact(shape, channels, stride, transmit, code, size):
    info = code_info(TensorInfo((None, *shape), "float32"), Bottleneck(channels, transmit, stride))
    assert info.shape[1:] == code
    assert transmitted_bytes(info, transmit) == size


@pytest.mark.unit
def test_a_bottleneck_needs_a_fixed_size():
    from codegen.errors import StitchgenError

    with pytest.raises(StitchgenError, match="fixed input_shape"):
        code_info(TensorInfo((None, None, None, 64), "float32"), Bottleneck(8))


def _sample(seed=0, shape=(3, 5, 5, 4)):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * rng.uniform(0.1, 10, (shape[0], 1, 1, 1)) + 2).astype("float32")


def test_quantise_step_is_the_identity_at_float32_and_within_half_a_step_at_int8():
    x = _sample()
    assert np.array_equal(keras.ops.convert_to_numpy(Transmission("float32")(x)), x)
    sent = Quantize("float32")(x)
    assert np.array_equal(keras.ops.convert_to_numpy(Dequantize("float32")(sent)), x)

    codes, code_range = (keras.ops.convert_to_numpy(v) for v in Quantize("int8")(x))
    assert codes.dtype == np.int8 and code_range.shape == (3, 2)
    back = keras.ops.convert_to_numpy(Dequantize("int8")([codes, code_range]))
    half_step = (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))) / 255 / 2  # one scale per image
    error = np.abs(back - x).max(axis=(1, 2, 3))
    assert np.all(error <= half_step * (1 + 1e-5)), (error, half_step)
    assert np.all(error > 0.1 * half_step)  # it does quantise: a step of error is there to be bounded
    assert codes.min() == -128 and codes.max() == 127  # the whole range is used
    # training sees exactly what the server will receive
    assert np.array_equal(keras.ops.convert_to_numpy(Transmission("int8")(x)), back)

    half = keras.ops.convert_to_numpy(Dequantize("float16")(Quantize("float16")(x)))
    assert np.array_equal(half, x.astype("float16").astype("float32"))


def test_quantise_bound_fails_for_a_wrong_zero_point():
    """The half-step bound can fail: shift the zero point by one level and it does."""
    x = _sample(1)
    codes, code_range = (keras.ops.convert_to_numpy(v) for v in Quantize("int8")(x))
    wrong = code_range.copy()
    wrong[:, 1] += 1
    back = keras.ops.convert_to_numpy(Dequantize("int8")([codes, wrong]))
    half_step = (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))) / 255 / 2
    assert np.any(np.abs(back - x).max(axis=(1, 2, 3)) > half_step * (1 + 1e-5))


def test_the_link_passes_gradients_straight_through():
    x = tf.Variable(_sample(2))
    for precision in ("float32", "float16", "int8"):
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(Transmission(precision)(x) * 3.0)
        assert np.all(tape.gradient(y, x).numpy() == 3.0), precision


# ---------------------------------------------------------------- the generated hybrid, exported


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    """A bottleneck hybrid generated from a spec folder, seeded weights, and a folder of images elsewhere."""
    root = tmp_path_factory.mktemp("split")
    (root / "specs").mkdir()
    shutil.copy(TESTS / "models_for_tests.py", root / "specs" / "models_for_tests.py")
    (root / "specs" / "split.toml").write_text(SPEC)
    (root / "work").mkdir()
    result = run_cli("generate", "../specs/split.toml", "--output-dir", "../gen", cwd=root / "work")
    assert result.returncode == 0, result.stderr
    module = import_path(root / "gen" / "split.py", "split_fixture")
    hybrid = module.build_model()
    randomize_weights(hybrid, seed=11)
    hybrid.save_weights(root / "hybrid.weights.h5")
    rng = np.random.default_rng(3)
    (root / "photos" / "a").mkdir(parents=True)
    for i in range(10):
        image = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
        tf.io.write_file(str(root / "photos" / "a" / f"{i}.png"), tf.io.encode_png(image))
    return root


def test_generated_hybrid_splits_into_encoder_and_decoder(split_dir):
    module = import_path(split_dir / "gen" / "split.py", "split_sides")
    hybrid = module.build_model()
    hybrid.load_weights(split_dir / "hybrid.weights.h5")
    head, encoder, decoder, tail = (
        module.build_head(),
        module.build_encoder(),
        module.build_decoder(),
        module.build_tail(),
    )
    for part in (head, encoder, decoder, tail):
        for layer in part.layers:
            if layer.weights:
                layer.set_weights(hybrid.get_layer(layer.name).get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    sent = encoder(head(x))
    assert [keras.ops.convert_to_numpy(s).dtype.name for s in sent] == ["int8", "float32"]
    assert sum(keras.ops.convert_to_numpy(s).nbytes for s in sent) == 4 * SENT_BYTES  # exact, per image
    whole = keras.ops.convert_to_numpy(hybrid(x, training=False))
    split = keras.ops.convert_to_numpy(tail(decoder(sent)))
    assert np.max(np.abs(whole - split)) == 0.0
    assert module.CODE_SHAPE == (4, 4, 4) and module.TRANSMIT == "int8"


def _litert(path: Path, x: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    rows = []
    for image in x:
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        rows.append({str(o["dtype"].__name__): interpreter.get_tensor(o["index"]) for o in outputs})
    return rows


@pytest.fixture(scope="module")
def exported(split_dir):
    out = split_dir / "export"
    result = run_cli(
        "export",
        "../specs/split.toml",
        "--weights",
        "../hybrid.weights.h5",
        "--output-dir",
        "../export",
        "--calibration",
        "../photos",
        cwd=split_dir / "work",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_exported_encoder_and_decoder_match_keras(split_dir, exported):
    out, _ = exported
    module = import_path(split_dir / "gen" / "split.py", "split_export")
    hybrid = module.build_model()
    hybrid.load_weights(split_dir / "hybrid.weights.h5")
    head, encoder = module.build_head(), module.build_encoder()
    for part in (head, encoder):
        for layer in part.layers:
            if layer.weights:
                layer.set_weights(hybrid.get_layer(layer.name).get_weights())
    x = np.random.default_rng(5).uniform(-1, 1, (3, 16, 16, 3)).astype("float32")
    codes, code_range = (keras.ops.convert_to_numpy(v) for v in encoder(head(x)))
    rows = _litert(out / "split_phone.tflite", x)
    got_codes = np.concatenate([r["int8"] for r in rows])
    got_range = np.concatenate([r["float32"] for r in rows])
    assert np.max(np.abs(got_codes.astype(int) - codes.astype(int))) <= 1  # a rounding boundary at most
    assert np.mean(got_codes == codes) >= 0.99
    np.testing.assert_allclose(got_range, code_range, rtol=1e-5)

    server = keras.saving.load_model(out / "split_server.keras", custom_objects=module.CUSTOM_OBJECTS, compile=False)
    whole = keras.ops.convert_to_numpy(hybrid(x, training=False))
    served = keras.ops.convert_to_numpy(server([got_codes, got_range], training=False))
    keras_sent = keras.ops.convert_to_numpy(server([codes, code_range], training=False))
    assert np.max(np.abs(keras_sent - whole)) <= 1e-6
    assert np.max(np.abs(served - whole)) <= 0.05  # at most a level off on a few values


def test_full_int8_phone_side_runs_in_litert_and_reports_agreement(split_dir, exported):
    out, result = exported
    from ai_edge_litert.interpreter import Interpreter

    path = out / "split_phone_full_int8.tflite"
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert {o["dtype"] for o in interpreter.get_output_details()} == {np.int8}
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.zeros((1, 16, 16, 3), np.int8))
    interpreter.invoke()
    line = next(line for line in result.stdout.splitlines() if line.startswith("full int8 phone side"))
    assert f"{path.stat().st_size:,} bytes" in line
    assert "calibrated on 8 images; on 2 held-out images" in line  # every 5th of 10 is held out
    agreement = float(line.rsplit(" on ", 1)[1].rstrip("%")) / 100
    assert 0.0 <= agreement <= 1.0


def test_report_gives_the_bytes_as_sent_and_the_measured_jpeg(split_dir):
    result = run_cli(
        "report", "../specs/split.toml", "--repeats", "0", "--json", "--images", "../photos", cwd=split_dir / "work"
    )
    assert result.returncode == 0, result.stderr
    sent = json.loads(result.stdout)["sent"]
    assert sent["bytes"] == SENT_BYTES
    assert sent["float32_cut"] == 8 * 8 * 12 * 4
    sizes = []
    for path in sorted((split_dir / "photos").rglob("*.png")):
        image = tf.image.resize(tf.cast(tf.io.decode_png(tf.io.read_file(str(path)), channels=3), "float32"), (16, 16))
        pixels = np.clip(np.round(image.numpy()), 0, 255).astype("uint8")
        sizes.append(len(tf.io.encode_jpeg(pixels, quality=90).numpy()))
    assert sent["jpeg"]["bytes"] == round(float(np.median(sizes)))
    assert sent["jpeg"]["how"].startswith("measured: median of 10 images")
    typical = json.loads(run_cli("report", str(split_dir / "specs" / "split.toml"), "--repeats", "0", "--json").stdout)
    assert typical["sent"]["jpeg"]["bytes"] == round(16 * 16 * 2.7 / 8)


# ---------------------------------------------------------------- plan


def test_plan_picks_the_cut_worked_out_by_hand(split_dir):
    """Phone 1 ms per layer, server 0 ms, no round trip: latency = layers on the phone + bytes x 8 / bandwidth.

    Cuts (last layer on the phone, index: bytes sent): h_conv1 1: 2,048 ... adapter_encode 6: 256 (the float32
    code), adapter_transmit 7: 72 (int8 code, scale, zero point) ... t_pool 14: 40 (10 floats).
    At 1000 Mbit/s: h_conv1 costs 1 + 2048 x 8 / 1e6 = 1.016 ms, the least.
    At 1 Mbit/s: adapter_transmit costs 7 + 72 x 8 / 1000 = 7.576 ms; adapter_encode 6 + 2.048 = 8.048; h_conv1 17.4.
    At 0.01 Mbit/s: t_pool costs 14 + 40 x 0.8 = 46 ms; adapter_transmit 7 + 57.6 = 64.6.
    """
    module = import_path(split_dir / "gen" / "split.py", "split_plan")
    names = [layer.name for layer in module.build_model().layers]
    (split_dir / "phone.csv").write_text("layer,ms\n" + "".join(f"{n},{0 if n == 'image' else 1}\n" for n in names))
    (split_dir / "server.csv").write_text("".join(f"{n},0\n" for n in names))
    result = run_cli(
        "plan",
        "../specs/split.toml",
        "--bandwidth",
        "1000,1,0.01",
        "--phone-latency",
        "../phone.csv",
        "--server-latency",
        "../server.csv",
        "--json",
        "--plot",
        "../plan.png",
        cwd=split_dir / "work",
    )
    assert result.returncode == 0, result.stderr
    chosen = json.loads(result.stdout)["choices"]
    assert [c["layer"] for c in chosen] == ["h_conv1", "adapter_transmit", "t_pool"]
    assert [c["bytes"] for c in chosen] == [2048, 72, 40]
    assert [round(c["total_ms"], 6) for c in chosen] == [1.016384, 7.576, 46.0]
    assert all(c["all_on_phone_ms"] == len(names) - 1 for c in chosen)
    jpeg = round(16 * 16 * 2.7 / 8)  # typical size: no --images
    assert [round(c["all_on_server_ms"], 6) for c in chosen] == [round(jpeg * 8 / b / 1000, 6) for b in (1e3, 1, 0.01)]
    assert [c["best"] for c in chosen] == ["all on server", "all on server", "all on phone"]
    assert (split_dir / "plan.png").read_bytes()[:4] == b"\x89PNG"

    import stitchgen  # the Python API gives the same choices

    same = stitchgen.plan(
        split_dir / "specs" / "split.toml",
        [1000, 1, 0.01],
        phone_latency=split_dir / "phone.csv",
        server_latency=split_dir / "server.csv",
    )
    assert same["choices"] == chosen
    with pytest.raises(stitchgen.StitchgenError, match="above 0 Mbit/s"):
        stitchgen.plan(split_dir / "specs" / "split.toml", [10, 0])

    text = run_cli(
        "plan",
        "../specs/split.toml",
        "--bandwidth",
        "1",
        "--phone-slowdown",
        "4",
        "--repeats",
        "1",
        cwd=split_dir / "work",
    )
    assert text.returncode == 0, text.stderr
    assert "| 1 |" in text.stdout and "4x this machine's times" in text.stdout


# ---------------------------------------------------------------- bad input: one line, exit 2


def _one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("channels = 0", "channels must be a whole number of at least 1"),
        ("channels = -3", "channels must be a whole number of at least 1"),
        ("channels = 13", "more than the head's output has (12"),
        ('channels = 4\ntransmit = "int4"', "transmit 'int4' is not one of"),
        ("channels = 4\nstride = 0", "stride must be a whole number"),
    ],
)
def test_bad_bottleneck_settings(tmp_path, change, message):
    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    (tmp_path / "bad.toml").write_text(SPEC.replace("channels = 4\nstride = 2", change))
    line = _one_line_error(run_cli("generate", str(tmp_path / "bad.toml"), "--output-dir", str(tmp_path / "out")))
    assert message in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bandwidth", ["0", "10,-1", "fast", "1,,2"])
def test_bad_bandwidth(split_dir, bandwidth):
    line = _one_line_error(run_cli("plan", str(split_dir / "specs" / "split.toml"), "--bandwidth", bandwidth))
    assert "--bandwidth" in line, line


def test_latency_file_with_unknown_layers(split_dir, tmp_path):
    (tmp_path / "phone.csv").write_text("layer,ms\nh_conv1,3\nno_such_layer,2\n")
    line = _one_line_error(
        run_cli("plan", str(split_dir / "specs" / "split.toml"), "--phone-latency", str(tmp_path / "phone.csv"))
    )
    assert "no_such_layer" in line and "--phone-latency" in line, line
    (tmp_path / "bad.csv").write_text("h_conv1,fast\n")
    line = _one_line_error(
        run_cli("plan", str(split_dir / "specs" / "split.toml"), "--server-latency", str(tmp_path / "bad.csv"))
    )
    assert "'fast' is not a number" in line, line


def test_plot_into_a_missing_folder(split_dir, tmp_path):
    line = _one_line_error(
        run_cli("plan", str(split_dir / "specs" / "split.toml"), "--plot", str(tmp_path / "no" / "plan.png"))
    )
    assert "--plot" in line and "folder does not exist" in line, line


def test_calibration_needs_images(split_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    line = _one_line_error(
        run_cli(
            "export",
            str(split_dir / "specs" / "split.toml"),
            "--weights",
            str(split_dir / "hybrid.weights.h5"),
            "--output-dir",
            str(tmp_path / "out"),
            "--calibration",
            str(tmp_path / "empty"),
        )
    )
    assert "holds no images" in line, line
    assert not (tmp_path / "out").exists()
