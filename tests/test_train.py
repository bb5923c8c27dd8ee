"""The emitted adapter-training script: least squares, distillation, fine-tuning, caching, resume."""

from __future__ import annotations

import itertools
import json
import shutil
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import import_path, new_file_mode, randomize_weights, run_script

from codegen.frontend.preprocess import default_preprocess
from codegen.frontend.spec import load_spec, parse_source
from codegen.products.hybrid import StitchProject
from codegen.write import write_files

TESTS = Path(__file__).resolve().parent
SPEC = """name = "tiny"
[head]
source = "models_for_tests:tiny_head"
cut = "h_relu2"
preprocess = "keras.applications.mobilenet.preprocess_input"
[tail]
source = "models_for_tests:tiny_tail"
start = "t_conv2"
preprocess = "keras.applications.resnet50.preprocess_input"
[adapter]
kind = "auto"
"""


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory):
    """A generated tiny hybrid, its source weights, the ported weights, an image folder and a .npz."""
    import models_for_tests

    root = tmp_path_factory.mktemp("tiny")
    shutil.copy(TESTS / "models_for_tests.py", root / "models_for_tests.py")
    (root / "tiny.toml").write_text(SPEC)
    write_files(StitchProject.from_spec(load_spec(root / "tiny.toml")).files(), root)
    keras.backend.clear_session()
    for name, seed in (("head", 1), ("tail", 2)):
        model = getattr(models_for_tests, f"tiny_{name}")()
        randomize_weights(model, seed)
        model.save_weights(root / f"{name}.weights.h5")
    result = run_script(
        root / "tiny_port_weights.py",
        "--head-weights", str(root / "head.weights.h5"),
        "--tail-weights", str(root / "tail.weights.h5"),
        "--output", str(root / "ported.weights.h5"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rng = np.random.default_rng(0)
    for label in ("0", "2"):  # without [tail] classes, labels are the tail network's own class ids
        (root / "images" / label).mkdir(parents=True)
        for i in range(16):
            image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            tf.io.write_file(str(root / "images" / label / f"{i}.png"), tf.io.encode_png(image))
    np.savez(root / "data.npz", x=rng.integers(0, 256, (36, 24, 24, 3), dtype=np.uint8))
    return root


def train(root: Path, out: Path, *extra: str):
    args = ["--weights", str(root / "ported.weights.h5"), "--tail-weights", str(root / "tail.weights.h5")]
    return run_script(root / "tiny_train_adapter.py", *args, "--output", str(out), "--batch-size", "8", *extra)


def layer_weights(path: Path, root: Path) -> dict[str, list[np.ndarray]]:
    module = import_path(root / "tiny.py", f"tiny_{path.stem}_{abs(hash(str(path)))}")
    model = module.build_model()
    model.load_weights(path)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def changed(a, b) -> set[str]:
    return {name for name in a if any(not np.array_equal(x, y) for x, y in zip(a[name], b[name]))}


@pytest.mark.parametrize("data", ["images", "data.npz"])
def test_all_stages_end_to_end(hybrid_dir, tmp_path, data):
    out = tmp_path / "trained.weights.h5"
    strategy = ["--strategy", "mirrored"] if data.endswith(".npz") else []  # tf.distribute on this machine's CPU
    result = train(
        hybrid_dir,
        out,
        "--data",
        str(hybrid_dir / data),
        "--stages",
        "lstsq,distill,finetune",
        "--epochs",
        "1",
        *strategy,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((tmp_path / "trained.weights.h5.json").read_text())
    assert [s["stage"] for s in log["stages"]] == ["lstsq", "distill", "finetune"]
    n_val = log["val_images"]
    assert n_val == max(1, round(0.1 * (log["train_images"] + n_val)))  # --val-split 0.1 of --data
    for stage in log["stages"]:
        # a fraction of the validation images, not any number in [0, 1]
        agreeing = stage["val_agreement"] * n_val
        assert 0 <= agreeing <= n_val and abs(agreeing - round(agreeing)) < 1e-9, (stage["val_agreement"], n_val)
        assert ("val_accuracy" in stage) == (data == "images")  # labels only from class folders here
        assert len(stage["val_distill_loss"]) == 1
    assert (tmp_path / "trained.weights.h5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for path in (out, tmp_path / "trained.weights.h5.json", tmp_path / "trained.weights.h5.png"):
        assert path.stat().st_mode & 0o777 == new_file_mode(), path  # not mkstemp's 0600
    moved = changed(layer_weights(hybrid_dir / "ported.weights.h5", hybrid_dir), layer_weights(out, hybrid_dir))
    assert moved and all(name.startswith("adapter") for name in moved), sorted(moved)


def test_resume_continues_and_rejects_a_bad_checkpoint(hybrid_dir, tmp_path):
    out = tmp_path / "run.weights.h5"
    common = ("--data", str(hybrid_dir / "data.npz"), "--stages", "lstsq,distill")
    first = train(hybrid_dir, out, *common, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    state = json.loads((tmp_path / "run.weights.h5.ckpt.json").read_text())
    assert state["done"] == ["lstsq", "distill"]

    again = train(hybrid_dir, out, *common, "--epochs", "2", "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after lstsq, distill" in again.stdout

    other = train(hybrid_dir, out, "--data", str(hybrid_dir / "data.npz"), "--stages", "distill", "--resume")
    assert other.returncode == 2 and "--resume: the checkpoint was written for" in other.stderr

    foreign = train(hybrid_dir, out, "--data", str(hybrid_dir / "images"), "--stages", "lstsq,distill", "--resume")
    assert foreign.returncode == 2 and "written by another run" in foreign.stderr, foreign.stderr[-2000:]

    checkpoint = tmp_path / "run.weights.h5.ckpt.weights.h5"
    checkpoint.write_bytes(checkpoint.read_bytes()[:2000])
    before = out.read_bytes()
    broken = train(hybrid_dir, out, *common, "--resume")
    assert broken.returncode == 2, broken.stderr[-2000:]
    error = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "does not hold this adapter's weights" in error[0]
    assert "Traceback" not in broken.stderr and out.read_bytes() == before


def test_a_non_finite_loss_stops_the_run_with_exit_1_and_no_output(hybrid_dir, tmp_path):
    out = tmp_path / "run.weights.h5"
    result = train(hybrid_dir, out, "--data", str(hybrid_dir / "data.npz"), "--stages", "distill",
                   "--epochs", "3", "--learning-rate", "1e36")  # fmt: skip
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert "training diverged" in line and "the loss is not finite" in line, line
    assert "Traceback" not in result.stderr and not out.exists() and not (tmp_path / "run.weights.h5.json").exists()


def test_resume_after_a_hard_kill_in_the_middle_of_a_stage(hybrid_dir, tmp_path):
    """SIGKILL after some distill epochs: --resume continues that stage from its last epoch."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import subprocess_env

    out = tmp_path / "run.weights.h5"
    state_path = tmp_path / "run.weights.h5.ckpt.json"
    common = ["--weights", str(hybrid_dir / "ported.weights.h5"), "--tail-weights", str(hybrid_dir / "tail.weights.h5"),
              "--output", str(out), "--batch-size", "8", "--data", str(hybrid_dir / "data.npz"),
              "--stages", "lstsq,distill"]  # fmt: skip
    script = str(hybrid_dir / "tiny_train_adapter.py")
    running = subprocess.Popen(
        [sys.executable, script, *common, "--epochs", "500", "--patience", "0"], cwd=hybrid_dir, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    state = {}
    while time.monotonic() < deadline and running.poll() is None:
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):  # not written yet
            state = {}
        if state.get("stage") == "distill" and state.get("epoch", 0) >= 2:
            break
        time.sleep(0.2)
    running.send_signal(signal.SIGKILL)
    running.wait()
    assert state.get("stage") == "distill", state
    state = json.loads(state_path.read_text())  # the last epoch it saved before the kill
    stopped = state["epoch"]
    assert state["done"] == ["lstsq"] and stopped >= 2 and not out.exists()

    resumed = train(hybrid_dir, out, "--data", str(hybrid_dir / "data.npz"), "--stages", "lstsq,distill",
                    "--epochs", str(stopped + 2), "--patience", "0", "--resume")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after lstsq, epoch {stopped}" in resumed.stdout
    assert "stage lstsq" not in resumed.stdout  # the finished stage is not run again
    log = json.loads((tmp_path / "run.weights.h5.json").read_text())
    (distill,) = [entry for entry in log["stages"] if entry["stage"] == "distill"]
    assert len(distill["history"]) == stopped + 2  # the killed run's epochs and the resumed ones, once each


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.savez(p, x=np.zeros((4, 16, 16, 1), "uint8")), "expected N x H x W x 3"),
        (lambda p: np.savez(p, x=np.zeros((0, 16, 16, 3), "uint8")), "holds no images"),
        (
            lambda p: np.savez(
                p, x=np.where(np.eye(16)[None, :, :, None] > 0, np.nan, 1.0).repeat(3, -1).astype("float32")
            ),
            "image 0 has non-finite pixels",
        ),
        (
            lambda p: np.savez(
                p, x=np.concatenate([np.ones((2, 16, 16, 3)), np.full((1, 16, 16, 3), np.inf)]).astype("float32")
            ),
            "image 2 has non-finite pixels",
        ),
    ],
)
def test_bad_data_gets_a_clear_error(hybrid_dir, tmp_path, make, message):
    data = tmp_path / "bad.npz"
    make(data)
    result = train(hybrid_dir, tmp_path / "x.weights.h5", "--data", str(data))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.weights.h5").exists()


def test_named_class_folders_without_classes_are_refused(hybrid_dir, tmp_path):
    for name in ("cats", "dogs"):
        shutil.copytree(hybrid_dir / "images" / "0", tmp_path / "named" / name)
    out = tmp_path / "x.weights.h5"
    result = train(hybrid_dir, out, "--data", str(tmp_path / "named"))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "not the tail network's class ids" in line and "add classes = 2" in line, line
    assert not out.exists()


def test_labels_beyond_the_tail_classes_are_refused(hybrid_dir, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((6, 20, 20, 3), "uint8"), y=np.array([0, 1, 2, 3, 7, 0]))
    result = train(hybrid_dir, tmp_path / "x.weights.h5", "--data", str(data))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "labels 3, 7 are outside 0..2 (the tail network's 3 class ids)" in line, line


def test_teacher_and_head_get_their_own_preprocessing(hybrid_dir):
    script = import_path(hybrid_dir / "tiny_train_adapter.py", "tiny_train_pre")
    assert script.HEAD_PREPROCESS == "keras.applications.mobilenet.preprocess_input"
    assert script.TAIL_PREPROCESS == "keras.applications.resnet50.preprocess_input"
    images = np.random.default_rng(1).uniform(0, 255, (2, 20, 20, 3)).astype("float32")
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(images, (16, 16)))
    np.testing.assert_array_equal(
        script.teacher_inputs(images, (16, 16)), keras.applications.resnet50.preprocess_input(resized.copy())
    )
    np.testing.assert_array_equal(
        script.head_inputs(images, (16, 16)), keras.applications.mobilenet.preprocess_input(resized.copy())
    )
    assert not np.allclose(script.teacher_inputs(images, (16, 16)), script.head_inputs(images, (16, 16)))


def test_application_sources_default_to_their_family_preprocessing():
    def family(name):
        return default_preprocess(parse_source(f"keras.applications.{name}"))

    assert family("MobileNet") == "keras.applications.mobilenet.preprocess_input"
    assert family("InceptionResNetV2") == "keras.applications.inception_resnet_v2.preprocess_input"
    assert family("ResNet50") == "keras.applications.resnet.preprocess_input"
    assert default_preprocess(parse_source("models_for_tests:tiny_head", base_dir=TESTS)) == "none"


def _synthetic(script, adapter, n=64, seed=0):
    """Teacher activations that are exactly a linear map of the head features."""
    rng = np.random.default_rng(seed)
    features = rng.normal(1.0, 2.0, (n, 8, 8, 12)).astype("float32")
    weight, bias = rng.normal(0, 0.5, (12, 6)), rng.normal(0, 0.5, 6)
    linear = features.reshape(-1, 12).astype("float64") @ weight + bias
    targets = linear.reshape(n, 8, 8, 6).astype("float32")
    teacher = rng.random((n, 3)).astype("float32")
    cache = script.Cache((features, [targets], teacher / teacher.sum(-1, keepdims=True), np.full(n, -1)), False)
    return cache, linear.reshape(n, 8, 8, 6)


def test_lstsq_recovers_a_linear_map_and_distill_lowers_the_loss(hybrid_dir):
    script = import_path(hybrid_dir / "tiny_train_adapter.py", "tiny_train_synthetic")
    generated = import_path(hybrid_dir / "tiny.py", "tiny_synthetic")
    adapter = generated.build_adapter()
    cache, linear = _synthetic(script, adapter)
    script.fit_least_squares(adapter, cache, batch_size=16)
    conv_out = keras.Model(adapter.input, adapter.get_layer("adapter_conv").output)(cache.features)
    assert np.max(np.abs(keras.ops.convert_to_numpy(conv_out) - linear)) < 1e-4 * (1 + np.max(np.abs(linear)))
    bn_out = adapter.get_layer("adapter_bn_out")  # an exact identity after the fit
    identity = keras.ops.convert_to_numpy(bn_out(conv_out, training=False))
    np.testing.assert_array_equal(identity, keras.ops.convert_to_numpy(conv_out))

    keras.utils.set_random_seed(0)
    fresh = generated.build_adapter()
    tail = generated.build_tail()
    args = types.SimpleNamespace(
        stages=["distill"],
        batch_size=16,
        epochs=6,
        patience=0,  # six epochs, all of them: the loss must fall at every one
        learning_rate=1e-3,
        verbose=False,
        output=str(hybrid_dir / "syn.weights.h5"),
    )
    run = script.Run(args, generated, script.make_strategy("default"))
    run.adapter, run.tail = fresh, tail
    train_cache, val_cache = cache.split(0.25)
    run.stage("distill", train_cache, val_cache)
    losses = [epoch["loss"] for epoch in run.state["history"]["distill"]]
    assert len(losses) == 6 and all(b < a for a, b in itertools.pairwise(losses)), losses


def test_early_stopping_stops_and_restores_the_best_epoch(hybrid_dir, tmp_path):
    """Fine-tuning 32 labelled images at a high learning rate overfits: validation loss turns within a few epochs."""
    out = tmp_path / "early.weights.h5"
    result = train(hybrid_dir, out, "--data", str(hybrid_dir / "images"), "--val-split", "0.25", "--stages", "finetune",
                   "--epochs", "40", "--patience", "3", "--learning-rate", "0.05")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (stage,) = json.loads((tmp_path / "early.weights.h5.json").read_text())["stages"]
    losses = [h["val_loss"] for h in stage["history"]]
    assert stage["epochs"] < 40 and "stopped early" in result.stdout, losses
    assert stage["epochs"] == stage["best_epoch"] + 3  # three epochs without a better validation loss
    best = min([stage["best_val_loss"], *losses])
    if stage["best_epoch"]:
        assert losses[stage["best_epoch"] - 1] == best
    # the weights it ends with are the best epoch's: re-evaluated after restoring, not the last epoch's
    assert abs(stage["val_loss"] - best) <= 1e-5 * max(1.0, abs(best)), (stage["val_loss"], best, losses)
    assert stage["val_loss"] < losses[-1]
    assert stage["learning_rate"] < 0.05  # the plateau halved it on the way


def _train_npz(root: Path, name: str, count: int, seed: int) -> Path:
    path = root / name
    np.savez(path, x=np.random.default_rng(seed).integers(0, 256, (count, 24, 24, 3), dtype=np.uint8))
    return path


def _epoch_losses(stdout: str) -> list[float]:
    return [float(line.split("loss ", 1)[1].split(",")[0]) for line in stdout.splitlines() if line.startswith("epoch ")]


def test_mirrored_on_two_logical_cpu_devices_matches_one_device(hybrid_dir, tmp_path):
    data, val = _train_npz(tmp_path, "data.npz", 64, 3), _train_npz(tmp_path, "val.npz", 16, 4)
    common = ("--data", str(data), "--val", str(val), "--stages", "lstsq,distill", "--epochs", "2", "--patience", "0")
    one = train(hybrid_dir, tmp_path / "one.weights.h5", *common)
    two = train(hybrid_dir, tmp_path / "two.weights.h5", *common, "--strategy", "mirrored", "--cpu-devices", "2")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    assert (tmp_path / "two.weights.h5").exists()
    # each step splits the batch of 8 over two replicas: the same mean loss up to batch-norm statistics
    a, b = _epoch_losses(one.stdout), _epoch_losses(two.stdout)
    assert len(a) == len(b) == 2 and all(abs(x - y) <= 1e-3 * abs(x) for x, y in zip(a, b)), (a, b)


def test_multiworker_with_two_worker_processes(hybrid_dir, tmp_path):
    """Two workers on this machine (TF_CONFIG with localhost ports), each reading its shard of the batches.

    Tolerance: the per-epoch training loss equals a single-worker run with the global
    batch (2 x 8) within 1e-3 relative. The adapter's batch norm normalises each
    worker's 8 examples rather than all 16, which is the whole difference.
    """
    import socket
    import subprocess
    import sys

    from helpers import subprocess_env

    data, val = _train_npz(tmp_path, "data.npz", 64, 3), _train_npz(tmp_path, "val.npz", 16, 4)
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            ports.append(probe.getsockname()[1])
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    out = tmp_path / "multi.weights.h5"
    common = ["--weights", str(hybrid_dir / "ported.weights.h5"), "--tail-weights", str(hybrid_dir / "tail.weights.h5"),
              "--data", str(data), "--val", str(val), "--stages", "lstsq,distill", "--epochs", "2", "--patience", "0",
              "--batch-size", "8", "--strategy", "multiworker", "--output", str(out)]  # fmt: skip
    workers = []
    for index in range(2):
        env = {
            **subprocess_env(),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        command = [sys.executable, str(hybrid_dir / "tiny_train_adapter.py"), *common]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        workers.append(subprocess.Popen(command, cwd=tmp_path, env=env, **pipes))
    results = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [r[1][-2000:] for r in results]
    chief, other = results
    assert f"wrote {out}" in chief[0] and "the chief writes" in other[0]
    for suffix in ("", ".json", ".png"):
        assert Path(str(out) + suffix).exists(), suffix
    log = json.loads(Path(str(out) + ".json").read_text())
    assert [s["stage"] for s in log["stages"]] == ["lstsq", "distill"] and log["train_images"] == 64

    single = train(hybrid_dir, tmp_path / "single.weights.h5", "--data", str(data), "--val", str(val),
                   "--stages", "lstsq,distill", "--epochs", "2", "--patience", "0", "--batch-size", "16")  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    a, b, c = _epoch_losses(single.stdout), _epoch_losses(chief[0]), _epoch_losses(other[0])
    assert b == c  # the losses are all-reduced: both workers report the same numbers
    assert len(a) == len(b) == 2 and all(abs(x - y) <= 1e-3 * abs(x) for x, y in zip(a, b)), (a, b)


def test_unfreezing_trains_only_the_layers_it_names(hybrid_dir, tmp_path):
    """[tail] trainable_from = "t_pred": the adapter and t_pred train; every other layer stays bit for bit."""
    from helpers import run_cli

    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    spec = SPEC.replace('name = "tiny"', 'name = "unf"').replace(
        'start = "t_conv2"\n', 'start = "t_conv2"\ntrainable_from = "t_pred"\n'
    )
    (tmp_path / "unf.toml").write_text(spec)
    assert run_cli("generate", str(tmp_path / "unf.toml")).returncode == 0
    ported = tmp_path / "ported.weights.h5"
    result = run_script(tmp_path / "unf_port_weights.py", "--head-weights", str(hybrid_dir / "head.weights.h5"),
                        "--tail-weights", str(hybrid_dir / "tail.weights.h5"), "--output", str(ported))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "unf.weights.h5"
    result = run_script(tmp_path / "unf_train_adapter.py", "--weights", str(ported), "--tail-weights",
                        str(hybrid_dir / "tail.weights.h5"), "--data", str(hybrid_dir / "images"), "--output", str(out),
                        "--stages", "lstsq,finetune", "--epochs", "3", "--learning-rate", "0.01")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]

    def weights(path):
        module = import_path(tmp_path / "unf.py", f"unf_{path.stem}")
        model = module.build_model()
        model.load_weights(path)
        return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}

    moved = changed(weights(ported), weights(out))
    assert "t_pred" in moved and all(name.startswith("adapter") or name == "t_pred" for name in moved), sorted(moved)
    log = json.loads((tmp_path / "unf.weights.h5.json").read_text())
    assert log["tail_trainable_from"] == "t_pred" and log["unfrozen_tail_layers"] == ["t_pred"]

    (tmp_path / "bad.toml").write_text(spec.replace('trainable_from = "t_pred"', 'trainable_from = "t_conv1"'))
    bad = run_cli("generate", str(tmp_path / "bad.toml"))
    assert bad.returncode == 2 and "trainable_from 't_conv1' is not in the tail" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad.py").exists()


def test_mixed_precision_trains_in_bfloat16_and_writes_float32_weights(hybrid_dir, tmp_path):
    """--mixed-precision: the same stages run, the weights written are float32 and close to a float32 run's."""
    runs = {}
    for flag in ("", "--mixed-precision"):
        out = tmp_path / f"run{flag or '_float32'}.weights.h5"
        extra = [flag] if flag else []
        result = train(hybrid_dir, out, "--data", str(hybrid_dir / "data.npz"), "--stages", "lstsq,finetune",
                       "--epochs", "2", *extra)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[flag] = (layer_weights(out, hybrid_dir), json.loads(Path(str(out) + ".json").read_text()))
    (mixed, mixed_log), (full, full_log) = runs["--mixed-precision"], runs[""]
    assert [s["stage"] for s in mixed_log["stages"]] == ["lstsq", "finetune"]
    for name, values in mixed.items():
        for got, want in zip(values, full[name]):
            assert got.dtype == np.float32 and np.all(np.isfinite(got)), name
    # least squares on bfloat16 activations: the same fit to about bfloat16's precision
    lstsq = [log["stages"][0]["train_distill_loss"][0] for log in (mixed_log, full_log)]
    assert abs(lstsq[0] - lstsq[1]) <= 0.05 * lstsq[1], lstsq
    assert mixed["adapter_conv"][0].tobytes() != full["adapter_conv"][0].tobytes()  # it did compute differently
