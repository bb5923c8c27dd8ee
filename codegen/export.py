"""`stitchgen export`: the phone side as TensorFlow Lite, the server side as a .keras file.

The adapter goes with the head (`[adapter] side = "phone"`) or with the tail
(`"server"`, the default: the phone then sends the head's output). The TFLite
head is checked against the Keras head on a random batch before anything is
reported as done; every file is written to a temporary name first.
"""

from __future__ import annotations

import os
import tempfile
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
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def _atomic_bytes(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, regular_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _tflite_outputs(content: bytes, x):
    """Run a TFLite model one image at a time (its input has batch size 1)."""
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    results = []
    for image in x:
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        results.append([interpreter.get_tensor(o["index"]) for o in outputs])
    return [np.concatenate([r[i] for r in results]) for i in range(len(outputs))]


class ExportMismatch(StitchgenError):
    """The converted model does not reproduce the Keras one: not a user error, exit 1."""

    exit_code = 1


def export(project, weights: Path, out_dir: Path, seed: int = 0, tolerance: float = 1e-4) -> Exported:
    """Write `<name>_phone.tflite`, `<name>_phone_int8.tflite` and `<name>_server.keras`."""
    import keras
    import numpy as np
    import tensorflow as tf

    from codegen.generate import import_generated

    if not weights.is_file():
        raise StitchgenError(f"--weights {str(weights)!r} does not exist; port the weights first")
    name = project.spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    module = import_generated(project, "_export_")
    hybrid = module.build_model()
    try:
        hybrid.load_weights(weights)
    except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many kinds
        raise StitchgenError(f"--weights {str(weights)!r} does not hold {name}'s weights ({exc})") from None
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

    converter = tf.lite.TFLiteConverter.from_keras_model(phone)
    float32 = converter.convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(phone)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
    int8 = converter.convert()

    x = np.random.default_rng(seed).standard_normal((2,) + tuple(module.INPUT_SHAPE)).astype("float32")
    expected = phone(x, training=False)
    expected = [keras.ops.convert_to_numpy(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])]
    diffs = []
    for content in (float32, int8):
        got = _tflite_outputs(content, x)
        by_shape = sorted(got, key=lambda a: a.shape)
        want = sorted(expected, key=lambda a: a.shape)
        diffs.append(max(float(np.max(np.abs(g - w))) for g, w in zip(by_shape, want)))

    if not diffs[0] <= tolerance:
        raise ExportMismatch(f"the float32 TFLite phone model differs from the Keras one by {diffs[0]:.3e}; nothing written")
    paths = (out_dir / f"{name}_phone.tflite", out_dir / f"{name}_phone_int8.tflite", out_dir / f"{name}_server.keras")
    _atomic_bytes(paths[0], float32)
    _atomic_bytes(paths[1], int8)
    handle, tmp = tempfile.mkstemp(prefix=f".{paths[2].name}.", suffix=".keras", dir=out_dir)
    os.close(handle)
    try:
        server.save(tmp)
        os.replace(tmp, paths[2])
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return Exported(*paths, float32_diff=diffs[0], int8_diff=diffs[1])
