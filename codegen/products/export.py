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
from codegen.write import regular_file_mode


@dataclass
class Exported:
    phone_float32: Path
    phone_int8: Path
    server: Path
    float32_diff: float
    int8_diff: float


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


def _max_diff(got: list, want: list) -> float:
    import numpy as np

    by_shape = sorted(got, key=lambda a: a.shape)
    expected = sorted(want, key=lambda a: a.shape)
    if [a.shape for a in by_shape] != [a.shape for a in expected]:
        raise ExportMismatch("the TFLite phone model's outputs differ in shape from the Keras one's")
    return max(float(np.max(np.abs(g - w))) for g, w in zip(by_shape, expected))


def export(
    project, weights: Path, out_dir: Path, seed: int = 0, tolerance: float = 1e-4, verbose: bool = False
) -> Exported:
    """Write `<name>_phone.tflite`, `<name>_phone_int8.tflite` and `<name>_server.keras`, or nothing."""
    import keras
    import numpy as np
    import tensorflow as tf

    from codegen.generate import import_generated

    if not weights.is_file():
        raise StitchgenError(f"--weights {str(weights)!r} does not exist; port the weights first")
    if out_dir.exists() and not out_dir.is_dir():
        raise StitchgenError(f"--output-dir {str(out_dir)!r} is a file, not a folder")
    name = project.spec.name
    module = import_generated(project, "_export_")
    hybrid = module.build_model()
    try:
        hybrid.load_weights(weights)
    except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many kinds
        raise StitchgenError.wrapping(f"--weights {str(weights)!r} does not hold {name}'s weights", exc) from None
    head, adapter, tail = module.build_head(), module.build_adapter(), module.build_tail()
    for part in (head, adapter, tail):
        _copy_by_name(hybrid, part)

    if project.spec.adapter_side == "phone":
        phone = keras.Model(head.inputs, adapter(head.outputs[0]), name=f"{name}_phone")
        server = tail
    else:
        phone = head
        features = keras.Input(tuple(module.HEAD_OUTPUT_SHAPE), name="features")
        server = keras.Model(features, tail(adapter(features)), name=f"{name}_server")

    created = not out_dir.exists()
    with tempfile.TemporaryDirectory(prefix=".stitchgen-export-") as staging_dir:
        staging = Path(staging_dir)
        float32 = convert(phone, staging / "phone.tflite", verbose)
        int8 = convert(phone, staging / "phone_int8.tflite", verbose, optimizations=[tf.lite.Optimize.DEFAULT])

        x = np.random.default_rng(seed).standard_normal((2,) + tuple(module.INPUT_SHAPE)).astype("float32")
        expected = phone(x, training=False)
        expected = [
            keras.ops.convert_to_numpy(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])
        ]
        diffs = [_max_diff(tflite_outputs(content, x), expected) for content in (float32, int8)]
        if not diffs[0] <= tolerance:
            raise ExportMismatch(
                f"the float32 TFLite phone model differs from the Keras one by {diffs[0]:.3e}; nothing written"
            )
        with _captured_output(verbose):
            server.save(staging / "server.keras")
        paths = (
            out_dir / f"{name}_phone.tflite",
            out_dir / f"{name}_phone_int8.tflite",
            out_dir / f"{name}_server.keras",
        )
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            moves = []
            for staged, final in zip(("phone.tflite", "phone_int8.tflite", "server.keras"), paths):
                handle, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=out_dir)
                os.close(handle)
                shutil.copyfile(staging / staged, tmp)
                os.chmod(tmp, regular_file_mode())  # mkstemp made it 0600
                moves.append((tmp, final))
            for tmp, final in moves:
                os.replace(tmp, final)
        except OSError as exc:
            for tmp, _ in locals().get("moves", []):
                if os.path.exists(tmp):
                    os.remove(tmp)
            if created and out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
            raise StitchgenError(f"cannot write to {str(out_dir)!r}: {exc.strerror}") from None
    return Exported(*paths, float32_diff=diffs[0], int8_diff=diffs[1])
