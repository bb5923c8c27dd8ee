"""What every emitted training script does besides its constants: data, caches, stages, checkpoints.

The template defines the constants below the imports (module name, set token, the
tail's source and frontier, the adapter's branches, the classes) and the tail
source's builder, then inlines everything after the marker. The values here stand
in for a generated script's, so this module is linted and unit-tested as Python.
"""

import argparse
import hashlib
import importlib
import json
import os
import struct
import sys
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

from codegen.runtime.porting import (
    MixedSetError,
    PortError,
    copy_by_name,
    load_generated,
    one_line,
    operation_output,
    replace_atomically,
    save_atomic,
    set_layer_weights,
    weights_argument,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "hybrid"
MODULE_SET = "0000000000000000"
REGENERATE = "stitchgen generate hybrid.toml"
TAIL_DEFAULT_WEIGHTS = "none"
HEAD_PREPROCESS = "none"
TAIL_PREPROCESS = "none"
TAIL_FRONTIER = (("tail_start", 0),)
BRANCHES = (("adapter_conv", None),)
INPUT_BATCH_NORM = None
ENCODER = None
CLASSES = None
CLASS_NAMES = None
CLASSIFIER = None


def build_tail_source(weights):
    """The tail's source network; the template writes one per source kind."""
    raise NotImplementedError(weights)


# --- inline ---
STAGES = ("lstsq", "distill", "finetune")
DEFAULT_STAGES = "lstsq,finetune"
MEMORY_CACHE_BYTES = 2 * 1024**3  # larger caches go to memory-mapped .npy files


class TrainError(Exception):
    """A problem with the inputs: reported in one line, nothing written."""


class Diverged(Exception):
    """Training produced a non-finite loss: exit 1, no output file."""


def resolve_preprocess(path):
    """The function a dotted path names; "none" is the identity."""
    if path == "none":
        return lambda x: x
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise TrainError(f"cannot import preprocessing function {path!r}: {exc}") from None


# ---------------------------------------------------------------- data


def read_images(path, size, channels, batch_size):
    """(batches of (float32 images resized to `size`, int labels or -1), count, has labels, folder names or None)."""
    if not os.path.exists(path):
        raise TrainError(f"{path} does not exist")
    if path.endswith(".npz"):
        data = npz_arrays(path)
        if "x" not in data:
            raise TrainError(f"{path} has no array named 'x'")
        x = data["x"]
        if x.ndim != 4 or x.shape[-1] != channels:
            raise TrainError(f"{path}: x has shape {x.shape}; expected N x H x W x {channels}")
        y = data["y"].astype("int64") if "y" in data else np.full(len(x), -1, "int64")
        if len(x) == 0:
            raise TrainError(f"{path} holds no images")

        def batches():
            for start in range(0, len(x), batch_size):
                images = keras.ops.image.resize(x[start : start + batch_size].astype("float32"), size)
                yield keras.ops.convert_to_numpy(images), y[start : start + batch_size]

        return batches, len(x), "y" in data, None
    if not os.path.isdir(path):
        raise TrainError(f"{path} is neither an image directory nor a .npz file")
    if channels != 3:
        raise TrainError(f"the head expects {channels} channels; image directories give RGB images")
    has_labels = any(os.path.isdir(os.path.join(path, entry)) for entry in os.listdir(path))
    try:
        dataset = keras.utils.image_dataset_from_directory(
            path, labels="inferred" if has_labels else None, image_size=size, batch_size=batch_size, shuffle=False
        )
    except ValueError as exc:
        raise TrainError(f"{path}: {exc}") from None
    count = len(dataset.file_paths)

    def batches():
        for item in dataset:
            images, labels = item if has_labels else (item, np.full(item.shape[0], -1, "int64"))
            yield np.asarray(images, "float32"), np.asarray(labels, "int64")

    return batches, count, has_labels, (list(dataset.class_names) if has_labels else None)


def npz_arrays(path):
    """The arrays of an .npz: members stored uncompressed (np.savez) memory-mapped, the rest loaded.

    A mapped array is read batch by batch, so memory does not grow with the data set;
    np.savez_compressed files have to be decompressed whole.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
        arrays = {}
        loaded = None
        for info in members:
            name = info.filename[: -len(".npy")]
            mapped = _mapped_member(path, info) if info.compress_type == zipfile.ZIP_STORED else None
            if mapped is None:
                loaded = loaded if loaded is not None else np.load(path, allow_pickle=False)
                mapped = loaded[name]
            arrays[name] = mapped
        return arrays
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise TrainError(f"{path} is not a readable .npz file ({exc})") from None


def _mapped_member(path, info):
    """A memory map of one stored .npy member of a zip file, or None when it cannot be mapped."""
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)  # the local file header: its name and extra field lengths end it
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        raw.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(raw)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(raw)
        else:
            return None
        offset = raw.tell()
    if dtype.hasobject or 0 in shape:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


class Cache:
    """Head features, teacher activations at the cut, teacher predictions and labels, computed once."""

    def __init__(self, arrays, has_labels, class_names=None):
        self.features, self.targets, self.teacher, self.labels = arrays
        self.has_labels = has_labels
        self.class_names = class_names

    def __len__(self):
        return len(self.labels)

    @classmethod
    def build(cls, path, parts, batch_size, directory, name, known_names=None):
        head, teacher, head_pre, tail_pre = parts
        head_size = tuple(head.inputs[0].shape[1:3])
        tail_size = tuple(teacher.inputs[0].shape[1:3])
        channels = head.inputs[0].shape[-1]
        batches, count, has_labels, folders = read_images(path, max(head_size, tail_size), channels, batch_size)
        shapes = [tuple(head.outputs[0].shape[1:])] + [tuple(t.shape[1:]) for t in teacher.outputs]
        nbytes = 4 * count * sum(int(np.prod(s)) for s in shapes)
        arrays = [_allocate(directory, f"{name}_{i}", (count,) + shape, nbytes) for i, shape in enumerate(shapes)]
        labels = np.empty(count, "int64")
        progress = keras.utils.Progbar(count, unit_name="image")
        start = 0
        for images, y in batches():
            n = len(images)
            finite = np.isfinite(images).reshape(n, -1).all(axis=1)
            if not finite.all():
                raise TrainError(f"{path}: image {start + int(np.argmin(finite))} has non-finite pixels")
            head_in = head_inputs(images, head_size, head_pre)
            tail_in = teacher_inputs(images, tail_size, tail_pre)
            outputs = [_apply(head, head_in)] + _as_list(_apply(teacher, tail_in))
            for array, value in zip(arrays, outputs):
                array[start : start + n] = keras.ops.convert_to_numpy(value)
            labels[start : start + n] = y
            start += n
            progress.update(start)
        tail_classes = int(arrays[-1].shape[-1])
        labels, names = own_labels(labels, folders, has_labels, tail_classes, path, known_names)
        return cls((arrays[0], arrays[1:-1], arrays[-1], labels), has_labels, names)

    def split(self, fraction, seed=0):
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = max(1, round(len(self) * fraction))
        if n_val >= len(self):
            raise TrainError("the training set is too small to split off validation images; pass --val")
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])

        def take(index):
            arrays = (self.features[index], [t[index] for t in self.targets], self.teacher[index], self.labels[index])
            return Cache(arrays, self.has_labels, self.class_names)

        return take(train), take(val)


def _shown(values, limit=5):
    values = [str(v) for v in values]
    return ", ".join(values[:limit]) + (f" and {len(values) - limit} more" if len(values) > limit else "")


def own_labels(labels, folders, has_labels, tail_classes, path, known_names=None):
    """(labels checked against the classes the hybrid predicts, the class names they stand for).

    With a new classifier (CLASSES), labels are 0..CLASSES-1: class sub-folders are
    matched by name to CLASS_NAMES (the spec's) or to the training set's folders,
    else numbered in sorted order. Without one, labels are the tail network's own
    class ids, and class sub-folders must be named by them.
    """
    if not has_labels:
        if CLASSES is not None:
            raise TrainError(
                f"{path} has no labels, and the hybrid's new {CLASSES}-way classifier needs them: "
                "give class sub-folders, or `y` in the .npz"
            )
        return labels, None
    names = None
    if folders is not None:
        if CLASSES is None:
            if not all(name.isdigit() for name in folders):
                raise TrainError(
                    f"{path}: class sub-folders ({_shown(folders)}) are not the tail network's class ids; name them "
                    f"by id (0..{tail_classes - 1}), or add classes = {len(folders)} to the spec's [tail] table "
                    "and regenerate for classes of your own"
                )
            labels = np.array([int(name) for name in folders], "int64")[labels]
        else:
            names = list(CLASS_NAMES or known_names or folders)
            unknown = [name for name in folders if name not in names]
            if unknown:
                raise TrainError(
                    f"{path}: class sub-folders {_shown(unknown)} are not among the classes {_shown(names)}"
                )
            labels = np.array([names.index(name) for name in folders], "int64")[labels]
    count = CLASSES if CLASSES is not None else tail_classes
    bad = np.unique(labels[(labels < 0) | (labels >= count)])
    if bad.size:
        what = f"the spec's classes = {CLASSES}" if CLASSES is not None else f"the tail network's {count} class ids"
        hint = "" if CLASSES is not None else "; for classes of your own, add classes = N to the spec's [tail] table"
        raise TrainError(f"{path}: labels {_shown(bad)} are outside 0..{count - 1} ({what}){hint}")
    if CLASSES is not None and names is None:
        names = list(CLASS_NAMES) if CLASS_NAMES else [str(i) for i in range(CLASSES)]
    return labels, names


def _allocate(directory, name, shape, nbytes):
    if nbytes <= MEMORY_CACHE_BYTES:
        return np.empty(shape, "float32")
    os.makedirs(directory, exist_ok=True)
    return np.lib.format.open_memmap(os.path.join(directory, name + ".npy"), mode="w+", dtype="float32", shape=shape)


def _apply(model, x):
    """Call a single-input model however its inputs are structured."""
    return model([x] if isinstance(model.input, (list, tuple)) else x, training=False)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def stream(inputs, targets, batch_size, shuffle, seed=0, shard=(0, 1)):
    """A tf.data pipeline over (possibly memory-mapped) arrays: only one batch in memory at a time.

    `shard` is (worker index, number of workers): each worker reads every n-th batch of
    the same seeded order, and all read equally many (collective steps must pair up),
    so a step of n workers averages the gradients of n consecutive batches.
    """
    count = len(inputs)
    index_of, workers = shard
    steps = -(-count // batch_size)
    if workers > 1:
        steps = max(workers, steps - steps % workers) // workers

    def batches():
        order = np.random.default_rng(seed).permutation(count) if shuffle else np.arange(count)
        starts = range(0, count, batch_size)
        if workers > 1:
            starts = [starts[(k * workers + index_of) % len(starts)] for k in range(steps)]
        for start in starts:
            index = np.sort(order[start : start + batch_size])
            picked = tuple(t[index] for t in targets)
            yield inputs[index], picked if len(picked) > 1 else picked[0]

    specs = tuple(tf.TensorSpec((None,) + t.shape[1:], tf.as_dtype(t.dtype)) for t in targets)
    signature = (tf.TensorSpec((None,) + inputs.shape[1:], tf.float32), specs if len(specs) > 1 else specs[0])
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
    options = tf.data.Options()  # the workers shard by batch above, not tf.data
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


# ---------------------------------------------------------------- stages


def fit_least_squares(adapter, cache, batch_size):
    """Per branch: the final linear layer by least squares on the calibration set; mean squared errors after."""
    if INPUT_BATCH_NORM is not None:  # standardise the head's features first
        layer = adapter.get_layer(INPUT_BATCH_NORM)
        axes = tuple(range(cache.features.ndim - 1))
        mean = np.mean(cache.features, axis=axes, dtype="float64")
        var = np.var(cache.features, axis=axes, dtype="float64")
        gamma, beta, _, _ = layer.get_weights()
        layer.set_weights([np.ones_like(gamma), np.zeros_like(beta), mean.astype("float32"), var.astype("float32")])
    if ENCODER is not None:
        fit_encoder(adapter, cache, batch_size)
    for k, (linear_name, bn_name) in enumerate(BRANCHES):
        linear = adapter.get_layer(linear_name)
        probe = keras.Model(adapter.input, linear.input)
        targets = cache.targets[k]
        size = int(probe.outputs[0].shape[-1]) + 1
        gram = np.zeros((size, size))
        cross = np.zeros((size, targets.shape[-1]))
        for start in range(0, len(cache), batch_size):
            z = numpy_float64(probe(cache.features[start : start + batch_size], training=False))
            z = np.concatenate([z.reshape(-1, size - 1), np.ones((z.size // (size - 1), 1))], axis=1).astype("float64")
            t = np.asarray(targets[start : start + batch_size], "float64").reshape(-1, targets.shape[-1])
            gram += z.T @ z
            cross += z.T @ t
        ridge = 1e-9 * max(np.trace(gram) / size, 1e-12)
        solution = np.linalg.solve(gram + ridge * np.eye(size), cross)
        kernel = linear.get_weights()[0]
        linear.set_weights([solution[:-1].reshape(kernel.shape).astype("float32"), solution[-1].astype("float32")])
        if bn_name is not None:  # an exact identity: gamma 1, beta 0, mean 0, variance 1 - epsilon
            bn = adapter.get_layer(bn_name)
            gamma, beta, mean, _ = bn.get_weights()
            bn.set_weights(
                [np.ones_like(gamma), np.zeros_like(beta), np.zeros_like(mean), np.full_like(mean, 1.0 - bn.epsilon)]
            )
    return distill_losses(adapter, cache, batch_size)


def numpy_float64(tensor):
    """A model output as float64 NumPy (under mixed precision it arrives as bfloat16)."""
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")), "float64")


def patches(z, size):
    """Rows of `size` values: per position (a 1x1 or Dense encoder), or per stride x stride patch (strided)."""
    if z.ndim == 4 and size != z.shape[-1]:
        stride = round((size // z.shape[-1]) ** 0.5)
        b, h, w, c = z.shape
        z = z[:, : h // stride * stride, : w // stride * stride]
        z = z.reshape(b, h // stride, stride, w // stride, stride, c).transpose(0, 1, 3, 2, 4, 5)
    return z.reshape(-1, size)


def fit_encoder(adapter, cache, batch_size):
    """A bottleneck's encoder as the principal directions of its (standardised) input, centred.

    Of all linear maps to that many channels, these keep the most of the input's
    variance; the decoder's last layer is then fitted by least squares on the codes
    as the link delivers them.
    """
    layer = adapter.get_layer(ENCODER)
    probe = keras.Model(adapter.input, layer.input)
    kernel = layer.get_weights()[0]
    size = int(np.prod(kernel.shape[:-1]))
    moment, total, count = np.zeros((size, size)), np.zeros(size), 0
    for start in range(0, len(cache), batch_size):
        z = numpy_float64(probe(cache.features[start : start + batch_size], training=False))
        rows = patches(z, size)
        moment += rows.T @ rows
        total += rows.sum(axis=0)
        count += len(rows)
    mean = total / count
    _, vectors = np.linalg.eigh(moment / count - np.outer(mean, mean))
    top = vectors[:, ::-1][:, : kernel.shape[-1]]
    layer.set_weights([top.reshape(kernel.shape).astype("float32"), (-mean @ top).astype("float32")])


def distill_losses(adapter, cache, batch_size):
    """Mean squared error to the teacher's activations, one per frontier tensor."""
    totals = np.zeros(len(BRANCHES))
    for start in range(0, len(cache), batch_size):
        outputs = _as_list(adapter(cache.features[start : start + batch_size], training=False))
        for k, output in enumerate(outputs):
            diff = numpy_float64(output) - cache.targets[k][start : start + batch_size]
            totals[k] += float(np.sum(np.square(diff, dtype="float64")))
    return [float(totals[k] / (len(cache) * np.prod(cache.targets[k].shape[1:]))) for k in range(len(BRANCHES))]


def predictions(adapter, tail, cache, batch_size):
    out = []
    for start in range(0, len(cache), batch_size):
        adapted = _as_list(adapter(cache.features[start : start + batch_size], training=False))
        out.append(numpy_float64(tail(adapted, training=False)))
    return np.concatenate(out)


def scores(adapter, tail, cache, batch_size):
    """Agreement (top-1) with the tail network's own predictions, and accuracy when labels exist."""
    predicted = np.argmax(predictions(adapter, tail, cache, batch_size), axis=-1)
    result = {}
    if CLASSES is None:  # with a new classifier the tail network's own predictions are other classes
        result["val_agreement"] = float(np.mean(predicted == np.argmax(cache.teacher, axis=-1)))
    if cache.has_labels:
        result["val_accuracy"] = float(np.mean(predicted == cache.labels))
    return result


def is_probability(values):
    return bool(np.all(values >= 0) and np.allclose(np.sum(values, axis=-1), 1.0, atol=1e-3))


class Checkpoint:
    """After every epoch: keep the best weights (in memory, and atomically on disk) and the state to resume.

    Also the schedule: after `--patience` epochs without a better validation loss the
    stage stops early, and after half as many the learning rate halves.
    """

    def __init__(self, run, stage):
        self.run, self.stage = run, stage

    def on_epoch_end(self, epoch, logs):
        """True when the stage should stop (patience spent)."""
        value = float(logs["val_loss"])
        if not all(np.isfinite(float(v)) for v in logs.values()):
            raise Diverged(
                f"stage {self.stage}, epoch {epoch + 1}: the loss is not finite ({value}); nothing written, "
                f"the last good checkpoint is {self.run.checkpoint}; try a lower --learning-rate"
            )
        state = self.run.state
        state["epoch"] = epoch + 1
        state.setdefault("history", {}).setdefault(self.stage, []).append({k: float(v) for k, v in logs.items()})
        if state.get("best") is None or value < state["best"]:
            state.update(best=value, improved=True, best_epoch=epoch + 1, waited=0)
            self.run.save_checkpoint()
        else:
            state["waited"] = state.get("waited", 0) + 1
            patience = self.run.args.patience
            if patience and state["waited"] % max(1, patience // 2) == 0:  # plateau: halve the learning rate
                state["learning_rate"] = state.get("learning_rate", self.run.args.learning_rate) / 2
            self.run.save_state()
        return bool(self.run.args.patience) and state["waited"] >= self.run.args.patience


def per_example_loss(kind, from_logits):
    """The stage's loss per example (a vector over the batch), as a function of (targets, outputs).

    Computed in float32 whatever the outputs' dtype (bfloat16 under --mixed-precision).
    """
    if kind == "distill":

        def loss(targets, outputs):
            terms = [
                keras.ops.mean(keras.ops.square(keras.ops.cast(o, "float32") - t), axis=tuple(range(1, len(o.shape))))
                for t, o in zip(_as_list(targets), _as_list(outputs))
            ]
            return sum(terms[1:], terms[0])

    elif kind == "labels":

        def loss(targets, outputs):
            outputs = keras.ops.cast(outputs, "float32")
            return keras.losses.sparse_categorical_crossentropy(targets, outputs, from_logits=from_logits)

    else:

        def loss(targets, outputs):
            outputs = keras.ops.cast(outputs, "float32")
            return keras.losses.categorical_crossentropy(targets, outputs, from_logits=from_logits)

    return loss


def worker_shard(strategy):
    """(this worker's index, the number of workers) under MultiWorkerMirroredStrategy, else (0, 1)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 0, 1
    cluster = resolver.cluster_spec().as_dict()
    order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
    order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
    if not order:
        return 0, 1
    return order.index((resolver.task_type, resolver.task_id)), len(order)


def is_chief(strategy):
    """Only the first worker writes files: the others train the same replicas and write nothing."""
    return worker_shard(strategy)[0] == 0


class Run:
    """One training run: the models, the caches, the checkpoint and the log."""

    def __init__(self, args, generated, strategy):
        self.args = args
        self.generated = generated
        self.strategy = strategy
        self.checkpoint = args.output + ".ckpt.weights.h5"
        self.state_path = args.output + ".ckpt.json"
        self.state = {
            "module": MODULE,
            "stages": args.stages,
            "fingerprint": run_fingerprint(args),
            "done": [],
            "stage": None,
            "epoch": 0,
            "best": None,
        }
        self.log = []
        self.adapter = self.tail = self._trained = None

    @property
    def trained(self):
        """What training changes, as one model to checkpoint: the adapter (and a new classifier)."""
        if self._trained is None:
            self._trained = trained_parts(self.adapter, self.tail)
        return self._trained

    def save_checkpoint(self):
        """The best weights so far: kept in memory (every worker) and written atomically (the chief)."""
        self.best_weights = [np.array(w, copy=True) for w in self.trained.get_weights()]
        if is_chief(self.strategy):
            save_atomic(self.trained, self.checkpoint)
        self.save_state()

    def save_state(self):
        if is_chief(self.strategy):
            write_atomic(self.state_path, json.dumps({**self.state, "log": self.log}, indent=2))

    def restore_best(self):
        """End a stage with its best epoch's weights."""
        if getattr(self, "best_weights", None) is not None:
            self.trained.set_weights(self.best_weights)

    def resume(self):
        if not os.path.exists(self.state_path) or not os.path.exists(self.checkpoint):
            raise TrainError(f"--resume: no checkpoint at {self.checkpoint}")
        try:
            with open(self.state_path, encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError) as exc:
            raise TrainError(f"--resume: {self.state_path} is not a readable checkpoint state ({exc})") from None
        if state.get("module") != MODULE or state.get("stages") != self.args.stages:
            raise TrainError(
                f"--resume: the checkpoint was written for {state.get('module')!r} with stages {state.get('stages')}; "
                f"this run is {MODULE} with {self.args.stages}"
            )
        if state.get("fingerprint") != self.state["fingerprint"]:
            raise TrainError(
                "--resume: the checkpoint was written by another run (different --weights contents, --data, --val, "
                "--val-split, --batch-size, --learning-rate, --tail-weights or preprocessing); rerun without --resume"
            )
        try:
            self.trained.load_weights(self.checkpoint)
        except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many kinds
            raise TrainError(f"--resume: {self.checkpoint} does not hold this adapter's weights ({exc})") from None
        if not all(np.all(np.isfinite(w)) for w in self.trained.get_weights()):
            raise TrainError(f"--resume: {self.checkpoint} holds non-finite weights; rerun without --resume")
        self.best_weights = [np.array(w, copy=True) for w in self.trained.get_weights()]
        self.state = {k: v for k, v in state.items() if k != "log"}
        self.log = state.get("log", [])
        print(f"resuming after {', '.join(self.state['done']) or 'no finished stage'}, epoch {self.state['epoch']}")

    def stage(self, name, train, val):
        if name in self.state["done"]:
            return
        if self.state["stage"] != name:
            self.state.update(stage=name, epoch=0, best=None)
        before = scores(self.adapter, self.tail, val, self.args.batch_size)
        started = time.perf_counter()
        print(f"stage {name}: before {format_scores(before)}")
        entry = {"stage": name, "before": before}
        if name == "lstsq":
            entry["train_distill_loss"] = fit_least_squares(self.adapter, train, self.args.batch_size)
        else:
            entry["epochs"] = self.fit(name, train, val)
            entry["best_epoch"] = self.state.get("best_epoch", 0)  # 0: the starting point stayed best
            entry["best_val_loss"], entry["val_loss"] = self.state.get("best"), self.state.get("val_loss")
            entry["learning_rate"] = self.state.get("learning_rate", self.args.learning_rate)  # at the end
        entry.update(scores(self.adapter, self.tail, val, self.args.batch_size))
        entry["val_distill_loss"] = distill_losses(self.adapter, val, self.args.batch_size)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        entry["history"] = self.state.get("history", {}).get(name, [])
        self.log.append(entry)
        print(f"stage {name}: after  {format_scores(entry)}  distill loss per tensor {entry['val_distill_loss']}")
        self.state["done"].append(name)
        self.state.update(stage=None, epoch=0, best=None)
        self.save_checkpoint()

    def fit(self, name, train, val):
        """Train the stage's model with a loop of `strategy.run` steps; returns the epochs run.

        A custom loop rather than `model.fit`: Keras 3's fit cannot run under
        MultiWorkerMirroredStrategy (keras#20585), and one loop serves every strategy.
        """
        args, strategy = self.args, self.strategy
        with strategy.scope():
            if name == "distill":
                model = self.adapter
                loss = per_example_loss("distill", False)
                train_targets, val_targets = train.targets, val.targets
            else:
                adapted = _as_list(self.adapter(self.adapter.input))
                model = keras.Model(self.adapter.input, self.tail(adapted))
                if CLASSES is not None:  # the loss follows the new classifier's own activation
                    sample = numpy_float64(model(train.features[:8], training=False))
                    probabilities = is_probability(sample)
                else:
                    probabilities = is_probability(train.teacher[: min(len(train), 64)])
                if train.has_labels:
                    loss = per_example_loss("labels", not probabilities)
                    train_targets, val_targets = [train.labels], [val.labels]
                else:  # no labels: distil the tail network's own predictions
                    loss = per_example_loss("soft", not probabilities)
                    train_targets = [soft(train.teacher, probabilities)]
                    val_targets = [soft(val.teacher, probabilities)]
            optimizer = keras.optimizers.Adam(self.state.get("learning_rate", args.learning_rate))
            optimizer.build(model.trainable_variables)
        step = train_step(strategy, model, optimizer, loss)
        if self.state["epoch"] == 0:  # the starting point competes too: a stage never ends worse on validation
            self.state.update(best=evaluate(model, loss, val.features, val_targets, args.batch_size), best_epoch=0)
            self.state.update(improved=False, waited=0, learning_rate=args.learning_rate)
            self.save_checkpoint()
        checkpoint = Checkpoint(self, name)
        shard = worker_shard(strategy)
        epochs = 0
        for epoch in range(self.state["epoch"], args.epochs):
            optimizer.learning_rate.assign(self.state.get("learning_rate", args.learning_rate))
            data = stream(train.features, train_targets, args.batch_size, shuffle=True, seed=epoch, shard=shard)
            progress = keras.utils.Progbar(int(data.cardinality()), unit_name="step") if args.verbose else None
            total, steps, started = 0.0, 0, time.perf_counter()
            for x, y in strategy.experimental_distribute_dataset(data):
                total += float(step(x, y))
                steps += 1
                if progress is not None:
                    progress.update(steps)
            logs = {"loss": total / max(steps, 1)}
            logs["val_loss"] = evaluate(model, loss, val.features, val_targets, args.batch_size)
            seconds = time.perf_counter() - started
            print(
                f"epoch {epoch + 1}/{args.epochs}: loss {logs['loss']:.6g}, val_loss {logs['val_loss']:.6g} ({seconds:.1f} s)"
            )
            epochs += 1
            if checkpoint.on_epoch_end(epoch, logs):
                print(f"stage {name}: no better validation loss in {args.patience} epochs; stopped early")
                break
        self.restore_best()
        self.state["val_loss"] = evaluate(model, loss, val.features, val_targets, args.batch_size)  # restored
        if not self.state.get("improved", True):
            print(f"note: stage {name}: no epoch beat the starting point on validation loss; kept the starting point")
        return epochs


def train_step(strategy, model, optimizer, loss):
    """One distributed step: per-replica gradients of the global-batch mean loss, applied once."""
    weights = model.trainable_variables

    def replica(x, y):
        with tf.GradientTape() as tape:
            per_example = loss(y, model(x, training=True))
            value = tf.nn.compute_average_loss(per_example)
        optimizer.apply_gradients(zip(tape.gradient(value, weights), weights))
        return value

    @tf.function
    def step(x, y):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(x, y)), axis=None)

    return step


def evaluate(model, loss, features, targets, batch_size):
    """Mean loss over a whole set, batch by batch (run alike on every worker)."""
    total = 0.0
    for start in range(0, len(features), batch_size):
        picked = [t[start : start + batch_size] for t in targets]
        outputs = model(features[start : start + batch_size], training=False)
        per_example = loss(picked if len(picked) > 1 else picked[0], outputs)
        total += float(keras.ops.sum(per_example))
    return total / len(features)


def soft(teacher, probabilities):
    if probabilities:
        return teacher
    shifted = np.exp(teacher - teacher.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def format_scores(scores):
    parts = []
    if "val_agreement" in scores:
        parts.append(f"val agreement {scores['val_agreement']:.4f}")
    if "val_accuracy" in scores:
        parts.append(f"val accuracy {scores['val_accuracy']:.4f}")
    return ", ".join(parts)


def run_fingerprint(args):
    """What makes two runs the same run, so that --resume never continues another one."""
    digest = hashlib.sha256()
    weights = getattr(args, "weights", None)
    if weights is not None and os.path.isfile(weights):
        with open(weights, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    paths = [
        None if p is None else os.path.realpath(p) for p in (getattr(args, "data", None), getattr(args, "val", None))
    ]
    names = (
        "val_split",
        "batch_size",
        "learning_rate",
        "tail_weights",
        "head_preprocess",
        "tail_preprocess",
        "seed",
        "mixed_precision",
    )
    digest.update(repr((paths, [getattr(args, name, None) for name in names])).encode())
    return digest.hexdigest()


def unfrozen_tail_layers(tail):
    """The tail's layers that train: a new classifier, and those from [tail] trainable_from on."""
    return [layer for layer in tail.layers if layer.trainable and layer.weights]


def trained_parts(adapter, tail):
    """What training changes, as one model to checkpoint: the adapter, and the tail layers that train."""
    unfrozen = [layer.name for layer in unfrozen_tail_layers(tail)]
    if not unfrozen:
        return adapter
    if unfrozen != [CLASSIFIER]:  # trainable_from: the adapter and the whole tail, whose weights it holds
        return keras.Model(adapter.input, tail(_as_list(adapter(adapter.input))), name="trained")
    classifier = tail.get_layer(CLASSIFIER)
    features = keras.Input(tuple(classifier.input.shape[1:]), name="classifier_input")
    return keras.Model([adapter.input, features], list(adapter.outputs) + [classifier(features)], name="trained")


def teacher_model(source):
    """The tail's source network up to the frontier, plus its own output."""
    try:
        tensors = [operation_output(source, name, index) for name, index in TAIL_FRONTIER]
    except PortError as exc:
        raise TrainError(f"the tail {exc}") from None
    return keras.Model(source.inputs, tensors + _as_list(source.outputs)[:1])


def head_inputs(images, size, preprocess=HEAD_PREPROCESS):
    """What the hybrid sees: images resized to the head's input size, with the head's preprocessing."""
    resized = np.array(keras.ops.convert_to_numpy(keras.ops.image.resize(images, size)), copy=True)  # writable
    return resolve_preprocess(preprocess)(resized)


def teacher_inputs(images, size, preprocess=TAIL_PREPROCESS):
    """What the teacher sees: the same images at the tail source's size, with its own preprocessing."""
    resized = np.array(keras.ops.convert_to_numpy(keras.ops.image.resize(images, size)), copy=True)  # writable
    return resolve_preprocess(preprocess)(resized)


def make_strategy(name, cpu_devices=1):
    """The tf.distribute strategy, created before anything else touches TensorFlow.

    `cpu_devices` > 1 splits the CPU into that many logical devices, so that `mirrored`
    runs several replicas on one machine (and can be tried without accelerators).
    """
    if cpu_devices > 1:
        (cpu,) = tf.config.list_physical_devices("CPU")[:1]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("CPU")] if cpu_devices > 1 else None
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()  # configured by TF_CONFIG
    return tf.distribute.get_strategy()


def write_atomic(path, text):
    """Write `text` to `path` atomically."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)

    replace_atomically(path, write)


def plot(log, path):
    """Loss curves per stage as a PNG; skipped with a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no loss plot written")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    offset = 0
    for entry in log:
        history = entry.get("history") or []
        for key in ("loss", "val_loss"):
            values = [h[key] for h in history if key in h]
            if values:
                ax.plot(
                    range(offset + 1, offset + len(values) + 1), values, marker="o", label=f"{entry['stage']} {key}"
                )
        offset += len(history)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:  # a run of lstsq alone has no curves
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        replace_atomically(path, fig.savefig, suffix=".png")
    finally:
        plt.close(fig)


def data_help():
    """--data's help: which labels this hybrid trains on."""
    if CLASSES is not None:
        return f"training images: a directory (class sub-folders) or a .npz file (x, y); labels 0..{CLASSES - 1}"
    return (
        "training images: a directory or a .npz file; labels must be the tail network's own class ids "
        "(sub-folders named by id); for classes of your own add classes = N to the spec's [tail] table"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="the hybrid's ported weights (from the port script)")
    parser.add_argument(
        "--data",
        required=True,
        help=data_help(),
    )
    parser.add_argument("--val", help="validation images (default: --val-split of --data)")
    parser.add_argument("--val-split", type=float, default=0.1, help="fraction of --data held out without --val")
    parser.add_argument("--output", required=True, help="where to write the trained hybrid (.weights.h5)")
    parser.add_argument("--stages", default=DEFAULT_STAGES, help="comma-separated, from: lstsq, distill, finetune")
    parser.add_argument(
        "--epochs", type=int, default=30, help="at most this many epochs per trained stage (--patience stops earlier)"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=5,
        help="stop a stage after this many epochs without a better validation loss, halving the learning rate "
        "after half as many; 0 never stops early",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seeds Keras, NumPy and TensorFlow: a rerun repeats a run")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--tail-weights",
        help=f"the teacher's weights: imagenet, a weights file, or none (default: {TAIL_DEFAULT_WEIGHTS})".replace(
            "%", "%%"
        ),
    )
    parser.add_argument("--head-preprocess", default=HEAD_PREPROCESS, help="dotted function path or none")
    parser.add_argument("--tail-preprocess", default=TAIL_PREPROCESS, help="dotted function path or none")
    parser.add_argument("--cache-dir", help="where large caches are memory-mapped (default: OUT.cache)")
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="tf.distribute: mirrored over this machine's devices, multiworker over the TF_CONFIG cluster "
        "(run the same command on every worker) (default: %(default)s)",
    )
    parser.add_argument(
        "--cpu-devices", type=int, default=1, help="split the CPU into N logical devices for --strategy mirrored"
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="train the adapter and tail in bfloat16 with float32 weights (Keras's mixed_bfloat16 policy)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt.weights.h5")
    parser.add_argument(
        "--verbose", action="store_true", help="a progress bar per batch, TensorFlow's logs and whole error messages"
    )
    args = parser.parse_args(argv)
    if not args.output.endswith(".weights.h5"):
        parser.error("--output must end in .weights.h5")
    if args.epochs < 1 or args.patience < 0 or args.batch_size < 1 or not args.learning_rate > 0:
        parser.error("--epochs and --batch-size must be at least 1, --patience at least 0, --learning-rate above 0")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        parser.error(f"--stages: {', '.join(unknown) or 'none given'}; choose from {', '.join(STAGES)}")
    args.stages = stages
    run = None
    try:
        # before anything else touches TensorFlow: collective ops are configured at program start-up
        strategy = make_strategy(args.strategy, args.cpu_devices)
        keras.utils.set_random_seed(args.seed)
        generated = load_generated()
        tail_weights = weights_argument(args.tail_weights, TAIL_DEFAULT_WEIGHTS, HERE)
        if tail_weights == "none":
            print(
                "note: --tail-weights none: the teacher is a seeded random tail network, not the hybrid's "
                "pretrained tail; agreement and distillation targets are only meaningful for a tail ported "
                "from the same seeded weights"
            )
        teacher = teacher_model(build_tail_source(tail_weights))
        hybrid = generated.build_model()
        hybrid.load_weights(args.weights)
        head = generated.build_head()
        copy_by_name(hybrid, head)
        if args.mixed_precision:  # only what trains: the frozen head and the teacher stay float32
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        with strategy.scope():
            adapter = generated.build_adapter()
            tail = generated.build_tail()
        keras.mixed_precision.set_global_policy("float32")
        copy_by_name(hybrid, adapter)
        copy_by_name(hybrid, tail)
        resolve_preprocess(args.head_preprocess), resolve_preprocess(args.tail_preprocess)  # fail early
        parts = (head, teacher, args.head_preprocess, args.tail_preprocess)
        cache_dir = args.cache_dir or args.output + ".cache"
        train = Cache.build(args.data, parts, args.batch_size, cache_dir, "train")
        if args.val:
            val = Cache.build(args.val, parts, args.batch_size, cache_dir, "val", train.class_names)
        else:
            train, val = train.split(args.val_split)
        run = Run(args, generated, strategy)
        run.adapter, run.tail = adapter, tail
        if args.resume:
            run.resume()
        for name in stages:
            run.stage(name, train, val)
        trained = list(adapter.layers) + unfrozen_tail_layers(tail)
        for layer in trained:  # the trained adapter (and tail layers that train) into the whole hybrid
            if layer.weights:
                values = layer.get_weights()
                if not all(np.all(np.isfinite(v)) for v in values):
                    raise TrainError(f"training diverged: {layer.name} has non-finite weights; nothing written")
                set_layer_weights(hybrid.get_layer(layer.name), values)
        if not is_chief(strategy):
            print(f"worker {worker_shard(strategy)[0]}: done; the chief writes {args.output}")
            return 0
        save_atomic(hybrid, args.output)
        summary = {"stages": run.log, "train_images": len(train), "val_images": len(val)}
        if getattr(generated, "TAIL_TRAINABLE_FROM", None) is not None:  # reported apart: the tail changed too
            unfrozen = [layer.name for layer in unfrozen_tail_layers(tail) if layer.name != CLASSIFIER]
            summary.update(tail_trainable_from=generated.TAIL_TRAINABLE_FROM, unfrozen_tail_layers=unfrozen)
        if CLASSES is not None:
            summary.update(classes=CLASSES, class_names=train.class_names)
        write_atomic(args.output + ".json", json.dumps(summary, indent=2))
        plot(run.log, args.output + ".png")
    except KeyboardInterrupt:
        where = run.checkpoint if run is not None else "nowhere yet"
        print(f"interrupted: the last good checkpoint is {where}; rerun with --resume", file=sys.stderr)
        return 130
    except (TrainError, MixedSetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Diverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - report any failure; the checkpoint stays
        print(f"error: {type(exc).__name__}: {str(exc) if args.verbose else one_line(exc)}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}, {args.output}.json")
    return 0
