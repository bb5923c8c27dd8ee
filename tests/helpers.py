"""Shared test machinery: seeded random weights, generation into a folder, running port scripts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def randomize_weights(model, seed: int = 0) -> None:
    """Seeded weights under which a wrong copy shows: the port scripts' own `none` filler.

    Every variable random (BatchNorm scales 10% near zero), kernels scaled by fan-in,
    BatchNorm statistics set from a seeded batch so the signal survives deep networks:
    the verify criterion refuses outputs that do not depend on the input.
    """
    from codegen.runtime.porting import fill_seeded

    fill_seeded(model, seed)


def seeded_batch(model, seed: int = 1, batch_size: int = 2):
    rng = np.random.default_rng(seed)

    def make(tensor):
        shape = (batch_size,) + tuple(32 if d is None else d for d in tensor.shape[1:])
        if "int" in str(tensor.dtype):
            return rng.integers(0, 2, size=shape).astype(str(tensor.dtype))
        return rng.standard_normal(shape).astype(str(tensor.dtype))

    structure = model._inputs_struct if hasattr(model, "_inputs_struct") else model.inputs[0]
    if isinstance(structure, dict):
        return {k: make(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [make(t) for t in structure]
    return make(structure)


def flatten_outputs(value) -> list[np.ndarray]:
    import keras

    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in flatten_outputs(value[key])]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten_outputs(item)]
    return [np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)]


def max_abs_diff(expected, actual) -> tuple[float, float]:
    exp, act = flatten_outputs(expected), flatten_outputs(actual)
    assert len(exp) == len(act)
    diff = max(float(np.max(np.abs(e - a))) for e, a in zip(exp, act))
    scale = max(float(np.max(np.abs(e))) for e in exp)
    return diff, scale


def import_path(path: Path, name: str | None = None):
    """Import a generated module from its file, under a unique module name."""
    module_name = name or f"_gen_{path.stem}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def subprocess_env(*extra_paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    paths = [str(p) for p in extra_paths] + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def run_script(script: Path, *args: str, extra_paths: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=subprocess_env(*extra_paths),
        cwd=script.parent,
        timeout=900,
    )


def run_cli(*args: str, cwd: Path | None = None, extra_paths: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "codegen", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(*extra_paths),
        cwd=cwd or REPO,
        timeout=900,
    )


def new_file_mode() -> int:
    """The permission bits a file created with open(path, "w") gets under this process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def emitted_names(project, reference) -> list[str]:
    """The reference model's layer names as the generated model names them (the factored style renames)."""
    renamed = {op.source_name: op.name for op in project.emit_graph.ops.values() if op.source_name}
    return [renamed.get(layer.name, layer.name) for layer in reference.layers]
