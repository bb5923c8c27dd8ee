"""What every emitted port (and training) script does besides its tables.

Loading the generated module of the same set, pairing mapped layers and copying
their weights, seeded source weights when the user has none, the verify
criterion, weight arguments relative to the script, and atomic writes with
ordinary file modes.
"""

import importlib.util
import os
import tempfile

import keras
import numpy as np

# The generated scripts define these above the inlined code; the values here stand in for tests.
HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "model"
MODULE_SET = "0000000000000000"
REGENERATE = "stitchgen generate model.toml"

# --- inline ---
WEIGHT_KEYWORDS = ("imagenet", "none", "saved")


class PortError(Exception):
    """A problem that stops the port before anything is written."""


class MixedSetError(Exception):
    """The model module beside this script comes from another generation."""


def module_set_token(text):
    """The `stitchgen-set:` token on a line of its own in a generated file, or None."""
    for line in text.splitlines():
        if line.startswith("stitchgen-set: "):
            return line[len("stitchgen-set: ") :].strip()
    return None


def load_module_beside(here, name, expected_set, regenerate):
    """The generated module `name`.py in `here`, refused when its set token is not `expected_set`.

    Files of one generation belong together: a module from another commit or branch
    would load and then fail, or worse run, with this script's tables.
    """
    path = os.path.join(here, name + ".py")
    try:
        with open(path, encoding="utf-8") as stream:
            found = module_set_token(stream.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise MixedSetError(f"cannot read {path} ({exc}); regenerate the set: {regenerate}") from None
    if found != expected_set:
        raise MixedSetError(
            f"{name}.py is from another generation than this script (set {found or 'none'}, "
            f"expected {expected_set}); regenerate both together: {regenerate}"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_generated():
    """The generated module beside this script (not one elsewhere on sys.path), of this script's set."""
    return load_module_beside(HERE, MODULE, MODULE_SET, REGENERATE)


def layer_by_indices(model, path):
    """The (nested) layer at `path`, a tuple of indices into `.layers`: positions, which auto-names do not change."""
    layer = model
    for index in path:
        layer = layer.layers[index]
    return layer


def layer_by_names(model, path):
    """The (nested) layer at `path`, names joined by "/"."""
    layer = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer


def plan(sources, target, rows):
    """Pair every mapped layer and check names, classes and shapes up front.

    `rows` are (side, layer in the target, position in the source, the source layer's
    names, class name, weight shapes); `sources` maps each side to its source model.
    """
    pairs = []
    for side, target_path, source_path, source_names, class_name, shapes in rows:
        where = "source" if side is None else f"{side} source"
        try:
            src = layer_by_indices(sources[side], source_path)
        except IndexError:
            raise PortError(f"{where} has no layer at {source_path} ({source_names})") from None
        dst = layer_by_names(target, target_path)
        if src.name != source_names.split("/")[-1] or type(src).__name__ != class_name:
            raise PortError(
                f"{where} layer {source_path} is {type(src).__name__} {src.name!r}, expected "
                f"{class_name} {source_names!r}: the source model differs from the one generated from"
            )
        got = tuple(tuple(w.shape) for w in src.weights)
        want = tuple(tuple(w.shape) for w in dst.weights)
        if got != tuple(shapes) or want != tuple(shapes):
            raise PortError(f"weight shapes differ for {where} {source_names}: source {got}, generated {want}")
        pairs.append((src, dst))
    return pairs


def port_rows(sources, target, rows):
    """Copy the weights of every pair `plan` checked, with a progress bar for large models."""
    pairs = plan(sources, target, rows)
    progress = keras.utils.Progbar(len(pairs), unit_name="layer") if len(pairs) > 50 else None
    for i, (src, dst) in enumerate(pairs, start=1):
        set_layer_weights(dst, src.get_weights())
        if progress is not None:
            progress.update(i)


def copy_by_name(source, target):
    """Copy weights between two models that share layer names (hybrid <-> its parts)."""
    for layer in target.layers:
        if layer.weights:
            set_layer_weights(layer, source.get_layer(layer.name).get_weights())


def operation_output(model, name, index):
    """Output `index` of the layer or operation `name` in `model` (a frontier tensor)."""
    for operation in model.operations:
        if operation.name == name:
            output = operation.output
            return output[index] if isinstance(output, (list, tuple)) else output
    raise PortError(f"the source has no layer or operation named {name!r}")


def weights_argument(value, default, here):
    """A --*-weights value: a keyword, a path as the user typed it, or the spec's file.

    `default` is what the spec named: a keyword, or a weights file relative to `here`,
    the script's own folder (so a checked-in set keeps working when the repository moves).
    """
    if value is None:
        value = default if default in WEIGHT_KEYWORDS else os.path.join(here, default)
    if value not in WEIGHT_KEYWORDS and not os.path.isfile(value):
        raise ValueError(f"weights file {value!r} does not exist; give imagenet, none, or a weights file")
    return value


def set_layer_weights(layer, values):
    """`layer.set_weights(values)`, then the derived state some layers keep beside their weights.

    A Normalization layer computes its normalising constants from its `mean` and
    `variance` weights in `finalize_state()`, which Keras's file loaders call but
    `set_weights` does not: without it a ported EfficientNet keeps its initial stem
    normalisation and differs from the source by about 1e-3.
    """
    layer.set_weights(values)
    finalize = getattr(layer, "finalize_state", None)
    if callable(finalize):
        finalize()


def _layers(layer):
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _layers(inner)


def _leading_preprocessing(model):
    """The Rescaling and Normalization layers a single-input model starts with, in order."""
    chain = []
    if len(model.inputs) != 1:
        return chain
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            break
        chain.append(layer)
    return chain


def _undo_preprocessing(batch, chain):
    """Raw inputs that `chain` maps to `batch`: pixels in the model's own range.

    EfficientNetV2 starts with Rescaling(1/128, offset=-1): a standard-normal image
    would reach its first convolution as -1 plus noise of 1/128, and the output would
    barely depend on the input. Inverting the model's own preprocessing puts a
    standard-normal signal where the convolutions start, whatever range the model
    expects its pixels in.
    """
    for layer in reversed(chain):
        if isinstance(layer, keras.layers.Rescaling):
            scale = np.asarray(layer.scale, dtype="float64")
            offset = np.asarray(layer.offset, dtype="float64")
            batch = (batch - offset) / np.where(scale == 0, 1.0, scale)
        else:
            mean = keras.ops.convert_to_numpy(layer.mean).astype("float64")
            std = np.sqrt(np.maximum(keras.ops.convert_to_numpy(layer.variance).astype("float64"), 1e-12))
            batch = (batch - mean) / std if layer.invert else batch * std + mean
    return batch


def seeded_inputs(model, seed=0, batch_size=2):
    """A seeded batch shaped like `model`'s inputs (unknown sizes become 32).

    Standard normal where the network proper starts: after any Rescaling or
    Normalization layers the model begins with (see `_undo_preprocessing`).
    """
    rng = np.random.default_rng(seed)
    chain = _leading_preprocessing(model)

    def make(tensor):
        shape = (batch_size,) + tuple(32 if d is None else d for d in tensor.shape[1:])
        dtype = str(tensor.dtype)
        if dtype.startswith(("int", "uint", "bool")):
            return rng.integers(0, 2, size=shape).astype(dtype)
        return _undo_preprocessing(rng.standard_normal(shape), chain).astype(dtype)

    if isinstance(model, keras.Sequential):  # it has .inputs, but no .input until called
        return make(model.inputs[0])
    return keras.tree.map_structure(make, model.input)


def fill_seeded(model, seed=0):
    """Seeded weights under which a wrong port shows: every variable, signal of order one to the end.

    Used when the source weights are "none": a freshly initialised network gives
    near-constant outputs (zero biases, identity batch norms), on which a wrong
    epsilon or padding stays below any tolerance. Here every variable is random:
    kernels scaled by fan-in (He), biases and shifts small, scales around one with
    10% near zero. Then one forward pass in training mode with momentum 0 sets each
    batch norm's moving statistics to those of its own input on a seeded batch, so
    activations stay normalised through the whole network instead of saturating
    (ReLU6) or vanishing, and the output still depends on the input.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        leaf = variable.path.rsplit("/", 1)[-1]
        if "moving_variance" in leaf or leaf == "variance":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
            value = np.where(rng.random(shape) < 0.1, rng.uniform(-1e-3, 1e-3, shape), value)
        elif leaf in ("beta", "bias", "moving_mean", "mean") or len(shape) <= 1:
            value = rng.normal(0.0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[:-2] if "depthwise" in leaf else shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
        variable.assign(value.astype(variable.dtype))
    for layer in _layers(model):
        if layer is not model and callable(getattr(layer, "finalize_state", None)):
            layer.finalize_state()  # e.g. Normalization: constants derived from the new mean and variance
    norms = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if norms:
        momenta = [layer.momentum for layer in norms]
        for layer in norms:
            layer.momentum = 0.0
        try:
            model(seeded_inputs(model, seed + 1, batch_size=8), training=True)
        finally:
            for layer, momentum in zip(norms, momenta):
                layer.momentum = momentum
        for layer in norms:
            # a few images at 1 x 1 spatial size can give a channel a near-zero variance, which
            # would blow up any other input: each channel gets a tenth of the layer's mean
            # variance added. (The whole mean, tried first, shrinks the input-dependent part
            # at every layer: EfficientNetV2L's output then varied by 4e-5 of its rms.)
            variance = layer.moving_variance
            value = keras.ops.convert_to_numpy(variance)
            variance.assign((value + 0.1 * np.mean(value)).astype(value.dtype))
    return model


def compare_outputs(expected, actual, tolerance):
    """(passed, message) for outputs of the source and the port: max |diff| <= tolerance * rms(expected).

    The criterion is relative to the output's own scale (its root mean square, which
    a saturated maximum such as ReLU6's 6 does not inflate), so tiny outputs do not
    pass by default; it refuses to pass on degenerate outputs (all zero, non-finite,
    or the same for every image in the batch), on which no wrong port could show.
    """
    expected = [np.asarray(e, dtype="float64") for e in expected]
    actual = [np.asarray(a, dtype="float64") for a in actual]
    if len(expected) != len(actual) or any(e.shape != a.shape for e, a in zip(expected, actual)):
        return False, "the outputs differ in number or shape"
    diff = max(float(np.max(np.abs(e - a))) for e, a in zip(expected, actual))
    scale = max(float(np.sqrt(np.mean(np.square(e)))) for e in expected)
    limit = tolerance * scale
    message = f"max abs diff {diff:.3e} (rms output {scale:.3e}, limit {limit:.3e})"
    if not np.isfinite(scale) or not np.isfinite(diff):
        return False, message + ": non-finite output, nothing can be checked"
    spread = max(float(np.max(np.abs(e - e[:1]))) for e in expected)
    if scale == 0.0 or spread <= limit:
        return False, message + ": degenerate output (the same for every input), nothing can be checked"
    return diff <= limit, message


def file_mode():
    """The mode `open(path, "w")` gives a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_atomically(path, write, suffix=""):
    """Write `path` through a temporary sibling that `write(tmp)` fills: a failure leaves no file, old or half."""
    handle, tmp = tempfile.mkstemp(suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(model, path):
    """Write `model`'s weights to `path` atomically."""
    replace_atomically(path, lambda tmp: model.save_weights(tmp, overwrite=True), suffix=".weights.h5")


def one_line(exc):
    """An exception as one line (Keras's messages span several); the whole text under --verbose."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] + (" (--verbose shows the whole message)" if len(lines) > 1 else "")


def flatten(value):
    """Every array in a (nested) model output, in a fixed order."""
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in flatten(value[key])]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten(item)]
    return [keras.ops.convert_to_numpy(value)]
