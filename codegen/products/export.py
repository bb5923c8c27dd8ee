"""`stitchgen export`: the phone side as TensorFlow Lite, the server side as a .keras file.

The adapter goes with the head (`[adapter] side = "phone"`) or with the tail
(`"server"`, the default: the phone then sends the head's output).

Conversion goes through Keras 3's own LiteRT exporter (`Model.export(format="litert")`:
an export archive, then the TFLite converter on that SavedModel), not through
`TFLiteConverter.from_keras_model`, which leans on TensorFlow's legacy Keras hooks
and fails depending on what the process imported first. The TFLite files are checked
with the LiteRT interpreter (`ai-edge-litert`) before anything is written. Every file
is staged first; on any failure nothing is left behind, not even a new empty folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from codegen.errors import StitchgenError
from codegen.products.link import image_files, read_image
from codegen.write import regular_file_mode


@dataclass
class Exported:
    phone_float32: Path
    phone_int8: Path
    server: Path
    float32_diff: float
    int8_diff: float
    full_int8: Path | None = None
    full_int8_report: FullInt8Report | None = None
    step: float = 0.0  # a bottleneck's largest int8 quantisation step on the check batch (0: floats are sent)


def _copy_by_name(source, target) -> None:
    from codegen.runtime.porting import set_layer_weights

    for layer in target.layers:
        if layer.weights:
            set_layer_weights(layer, source.get_layer(layer.name).get_weights())


@contextmanager
def _captured_output(verbose: bool) -> Iterator[list[str]]:
    """Hide the converter's hundred lines of C++ and absl logging (file descriptors 1 and 2).

    The captured text is yielded as a one-item list once the block ends, for error reports.
    """
    captured: list[str] = []
    if verbose:
        yield captured
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def convert(model, path: Path, verbose: bool = False, **converter_settings) -> bytes:
    """`model` as a TFLite flatbuffer, through Keras's LiteRT exporter; `converter_settings` set on the converter."""
    with _captured_output(verbose) as log:
        try:
            model.export(str(path), format="litert", verbose=False, **converter_settings)
        except Exception as exc:  # noqa: BLE001 - the converter raises many kinds
            error = exc
        else:
            error = None
    if error is not None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        detail = "" if verbose else " (rerun with --verbose for the converter's log)"
        raise ExportMismatch(f"TFLite conversion of {model.name} failed: {first}{detail}") from None
    del log
    return path.read_bytes()


def tflite_outputs(content: bytes, x) -> list:
    """Run a TFLite model in the LiteRT interpreter, one image at a time (its batch size is 1)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    with _captured_output(False):  # LiteRT logs "Created TensorFlow Lite XNNPACK delegate" on stderr
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    if tuple(inp["shape"][1:]) != tuple(x.shape[1:]):
        raise ExportMismatch(f"the TFLite model takes {tuple(inp['shape'])}, not images of {tuple(x.shape[1:])}")
    if inp["shape"][0] != 1:
        interpreter.resize_tensor_input(inp["index"], [1, *x.shape[1:]])
        interpreter.allocate_tensors()
    results = []
    for image in x:
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        results.append([interpreter.get_tensor(o["index"]) for o in outputs])
    return [np.concatenate([r[i] for r in results]) for i in range(len(outputs))]


class ExportMismatch(StitchgenError):
    """The converted model does not reproduce the Keras one: not a user error, exit 1."""

    exit_code = 1


def _by_kind(arrays: list) -> list:
    """Outputs in a fixed order (dtype, then shape): TFLite does not keep Keras's output order."""
    return sorted(arrays, key=lambda a: (str(a.dtype), a.shape))


def _max_diff(got: list, want: list, dequantize=None) -> float:
    """Largest difference between TFLite and Keras outputs; through `dequantize` when the phone sends a code."""
    import numpy as np

    got, want = _by_kind(got), _by_kind(want)
    if [(a.shape, a.dtype) for a in got] != [(a.shape, a.dtype) for a in want]:
        raise ExportMismatch("the TFLite phone model's outputs differ in shape or type from the Keras one's")
    if dequantize is not None:
        got, want = [dequantize(got)], [dequantize(want)]
    return max(float(np.max(np.abs(g.astype("float64") - w.astype("float64")))) for g, w in zip(got, want))


@dataclass
class Sides:
    """The two sides as Keras models, and how to read what the phone sends."""

    phone: object  # image in, what is sent out
    server: object  # what is sent in, the tail's output out
    phone_float: object  # the phone side without the link's quantisation (what a full-int8 converter takes)
    to_server: object  # phone_float's output (numpy) -> the server's input
    dequantize: object | None  # what is sent -> float, for comparing codes; None when the phone sends floats
    step: object  # what is sent -> the largest quantisation step in it (0 for floats)


def sides(project, module, hybrid) -> Sides:
    """Phone and server models with the hybrid's weights, split where the spec says."""
    import keras
    import numpy as np

    name = project.spec.name
    head, adapter, tail = module.build_head(), module.build_adapter(), module.build_tail()
    for part in (head, adapter, tail):
        _copy_by_name(hybrid, part)
    if project.spec.bottleneck is not None:
        encoder, decoder = module.build_encoder(), module.build_decoder()
        _copy_by_name(hybrid, encoder)
        _copy_by_name(hybrid, decoder)
        phone = keras.Model(head.inputs[0], encoder(head.outputs[0]), name=f"{name}_phone")
        code = encoder.get_layer("quantize").input
        phone_float = keras.Model(
            head.inputs[0], keras.Model(encoder.inputs, code)(head.outputs[0]), name=f"{name}_phone"
        )
        received = module.transmitted_inputs(tuple(module.CODE_SHAPE), module.TRANSMIT)
        server = keras.Model(received, tail(decoder(received)), name=f"{name}_server")
        quantize, dequantize = module.Quantize(module.TRANSMIT), module.Dequantize(module.TRANSMIT)

        def to_server(values):
            return [keras.ops.convert_to_numpy(v) for v in quantize(values[0])]

        def read(sent):
            ordered = sent if len(sent) == 1 else [sent[1], sent[0]]  # by kind: float32 range, then int8 code
            return keras.ops.convert_to_numpy(dequantize(ordered))

        def step(sent):
            return float(np.max(sent[0][:, 0])) if len(sent) == 2 else 0.0

        return Sides(phone, server, phone_float, to_server, read, step)
    if project.spec.adapter_side == "phone":
        phone = keras.Model(head.inputs[0], adapter(head.outputs[0]), name=f"{name}_phone")
        return Sides(phone, tail, phone, list, None, lambda _: 0.0)  # the tail takes a list of frontier tensors
    features = keras.Input(tuple(module.HEAD_OUTPUT_SHAPE), name="features")
    server = keras.Model(features, tail(adapter(features)), name=f"{name}_server")
    return Sides(head, server, head, lambda values: values[0], None, lambda _: 0.0)


def _outputs(model, x) -> list:
    import keras

    value = model(x, training=False)
    return [keras.ops.convert_to_numpy(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def export(
    project,
    weights: Path,
    out_dir: Path,
    seed: int = 0,
    tolerance: float = 1e-4,
    verbose: bool = False,
    calibration: Path | None = None,
) -> Exported:
    """Write `<name>_phone.tflite`, `<name>_phone_int8.tflite` and `<name>_server.keras` (and, with
    `calibration`, `<name>_phone_full_int8.tflite`), or nothing."""
    import numpy as np
    import tensorflow as tf

    from codegen.generate import import_generated

    if not weights.is_file():
        raise StitchgenError(f"--weights {str(weights)!r} does not exist; port the weights first")
    if out_dir.exists() and not out_dir.is_dir():
        raise StitchgenError(f"--output-dir {str(out_dir)!r} is a file, not a folder")
    name = project.spec.name
    module = import_generated(project, "_export_")
    images = None
    if calibration is not None:
        images = calibration_images(calibration, tuple(module.INPUT_SHAPE), project.preprocessing()[0])
    hybrid = module.build_model()
    try:
        hybrid.load_weights(weights)
    except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many kinds
        raise StitchgenError.wrapping(f"--weights {str(weights)!r} does not hold {name}'s weights", exc) from None
    parts = sides(project, module, hybrid)

    created = not out_dir.exists()
    with tempfile.TemporaryDirectory(prefix=".stitchgen-export-") as staging_dir:
        staging = Path(staging_dir)
        float32 = convert(parts.phone, staging / "phone.tflite", verbose)
        int8 = convert(parts.phone, staging / "phone_int8.tflite", verbose, optimizations=[tf.lite.Optimize.DEFAULT])

        x = np.random.default_rng(seed).standard_normal((2,) + tuple(module.INPUT_SHAPE)).astype("float32")
        expected = _outputs(parts.phone, x)
        diffs = [_max_diff(tflite_outputs(content, x), expected, parts.dequantize) for content in (float32, int8)]
        # a value on a rounding boundary may land one level away after conversion: allow one step
        limit = tolerance * (1 + max(float(np.max(np.abs(e.astype("float64")))) for e in expected))
        step = parts.step(_by_kind(expected))
        limit += step
        if not diffs[0] <= limit:
            raise ExportMismatch(
                f"the float32 TFLite phone model differs from the Keras one by {diffs[0]:.3e}; nothing written"
            )
        staged = {"phone.tflite": f"{name}_phone.tflite", "phone_int8.tflite": f"{name}_phone_int8.tflite"}
        full = None
        if images is not None:
            full = full_int8(parts, hybrid, images, staging / "phone_full_int8.tflite", verbose)
            staged["phone_full_int8.tflite"] = f"{name}_phone_full_int8.tflite"
        with _captured_output(verbose):
            parts.server.save(staging / "server.keras")
        staged["server.keras"] = f"{name}_server.keras"
        _publish(staging, staged, out_dir, created)
    return Exported(
        out_dir / staged["phone.tflite"],
        out_dir / staged["phone_int8.tflite"],
        out_dir / staged["server.keras"],
        float32_diff=diffs[0],
        int8_diff=diffs[1],
        full_int8=None if full is None else out_dir / staged["phone_full_int8.tflite"],
        full_int8_report=full,
        step=step,
    )


def _publish(staging: Path, staged: dict[str, str], out_dir: Path, created: bool) -> None:
    """Copy the staged files into `out_dir`, each atomically; on failure remove what was started."""
    moves = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for source, final_name in staged.items():
            final = out_dir / final_name
            handle, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=out_dir)
            os.close(handle)
            moves.append((tmp, final))
            shutil.copyfile(staging / source, tmp)
            os.chmod(tmp, regular_file_mode())  # mkstemp made it 0600
        for tmp, final in moves:
            os.replace(tmp, final)
    except OSError as exc:
        for tmp, _ in moves:
            if os.path.exists(tmp):
                os.remove(tmp)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise StitchgenError(f"cannot write to {str(out_dir)!r}: {exc.strerror}") from None


HELD_OUT_EVERY = 5  # every fifth calibration image checks the full-int8 phone side; the rest calibrate it


def calibration_images(folder: Path, input_shape: tuple, preprocess: str):
    """The images under `folder` (sorted, recursively), resized to the input and preprocessed as the head expects."""
    import importlib

    import numpy as np

    files = image_files(folder, "--calibration")
    if len(files) < 2:
        raise StitchgenError(
            f"--calibration {str(folder)!r} holds 1 image; give at least 2: most calibrate, every "
            f"{HELD_OUT_EVERY}th (and at least one) checks"
        )
    x = np.stack([read_image(path, input_shape[:2], input_shape[-1], "--calibration") for path in files])
    if preprocess != "none":
        module, function = preprocess.rsplit(".", 1)
        x = np.asarray(getattr(importlib.import_module(module), function)(x), "float32")
    return x


@dataclass
class FullInt8Report:
    size_bytes: int
    calibration_images: int
    held_out_images: int
    relative_error: float  # rms(int8 phone output - float32 phone output) / rms(float32 phone output), held out
    agreement: float  # top-1 agreement of the hybrid through the int8 phone side with the float32 hybrid, held out


def full_int8(parts: Sides, hybrid, images, path: Path, verbose: bool) -> FullInt8Report:
    """The phone side with int8 inputs, outputs and activations, calibrated on `images`; checked in LiteRT."""
    import numpy as np
    import tensorflow as tf

    held = np.arange(len(images)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    if not held.any():
        held[-1] = True
    calibrate, check = images[~held], images[held]

    def representative():
        for image in calibrate:
            yield [image[None]]

    content = convert(
        parts.phone_float,
        path,
        verbose,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative,
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        inference_input_type=tf.int8,
        inference_output_type=tf.int8,
    )
    want = _outputs(parts.phone_float, check)
    got = _in_order(quantized_outputs(content, check), want)
    error = max(float(np.sqrt(np.mean((g - w) ** 2)) / max(np.sqrt(np.mean(w**2)), 1e-12)) for g, w in zip(got, want))
    float_top = np.argmax(_outputs(hybrid, check)[0], axis=-1)
    int8_top = np.argmax(_outputs(parts.server, parts.to_server(got))[0], axis=-1)
    return FullInt8Report(len(content), len(calibrate), len(check), error, float(np.mean(float_top == int8_top)))


def _in_order(got: list, want: list) -> list:
    """TFLite outputs in the Keras model's order, matched by shape (TFLite does not keep the order)."""
    left = list(got)
    ordered = []
    for w in want:
        match = next((g for g in left if g.shape == w.shape), None)
        if match is None:
            raise ExportMismatch("the full-int8 TFLite phone model's outputs differ in shape from the Keras one's")
        left = [g for g in left if g is not match]
        ordered.append(match)
    return ordered


def quantized_outputs(content: bytes, x) -> list:
    """Run a full-integer TFLite model on float `x`: quantise the input, dequantise the outputs."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    with _captured_output(False):
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    scale, zero_point = inp["quantization"]
    info = np.iinfo(inp["dtype"])
    results = []
    for image in x:
        q = np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], q[None])
        interpreter.invoke()
        row = []
        for o in outputs:
            o_scale, o_zero = o["quantization"]
            row.append((interpreter.get_tensor(o["index"]).astype("float32") - o_zero) * o_scale)
        results.append(row)
    return [np.concatenate([r[i] for r in results]) for i in range(len(outputs))]
