"""Checked-in outputs equal what their specs regenerate; output is clean and deterministic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, subprocess_env

from codegen.backend.header import hash_matches
from codegen.generate import generate_files

SPECS = sorted((REPO / "examples").glob("*.toml"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_generated_files_are_current(spec):
    files, out_dir = generate_files(spec)
    for name, text in files.items():
        on_disk = (out_dir / name).read_text(encoding="utf-8")
        assert on_disk == text, f"{name} is stale: run stitchgen generate {spec.relative_to(REPO)}"
        assert hash_matches(on_disk)


def test_generated_files_pass_black_and_ruff():
    files = sorted(str(p) for p in (REPO / "generated").glob("*.py"))
    assert files
    black = subprocess.run(
        [sys.executable, "-m", "black", "--check", "--quiet", *files], capture_output=True, text=True
    )
    assert black.returncode == 0, black.stderr
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", *files], capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout
    for path in files:
        text = Path(path).read_text()
        assert "keras.src" not in text
        if not path.endswith("_train_adapter.py"):  # training streams with tf.data and runs under tf.distribute
            assert "import tensorflow" not in text


def _generate_in_subprocess(spec: Path, out: Path, hashseed: str, *extra: str) -> dict[str, bytes]:
    env = subprocess_env(REPO / "tests")
    env["PYTHONHASHSEED"] = hashseed
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "generate", str(spec), "--output-dir", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_determinism_across_hash_seeds(tmp_path):
    spec = tmp_path / "ops.toml"
    spec.write_text('name = "ops_model"\n[model]\nsource = "models_for_tests:ops_nodes"\n' "custom_objects = []\n")
    first = _generate_in_subprocess(spec, tmp_path / "out", "0")
    second = _generate_in_subprocess(spec, tmp_path / "out", "1")
    assert first == second
    for style in ("factored", "flat"):
        blocks = tmp_path / f"blocks_{style}.toml"
        blocks.write_text(
            f'name = "blocks"\nstyle = "{style}"\n[model]\nsource = "models_for_tests:repeated_blocks"\nkwargs = {{ n = 5, odd = 3 }}\n'
        )
        assert _generate_in_subprocess(blocks, tmp_path / "out", "5") == _generate_in_subprocess(
            blocks, tmp_path / "out", "99"
        )
    mobilenet = REPO / "examples" / "mobilenet.toml"
    assert _generate_in_subprocess(mobilenet, tmp_path / "out", "123") == _generate_in_subprocess(
        mobilenet, tmp_path / "out", "7"
    )


def test_style_flag_overrides_the_spec_and_is_recorded_in_the_header(tmp_path):
    spec = REPO / "examples" / "mobilenet_flat.toml"
    flat = _generate_in_subprocess(spec, tmp_path / "flat", "0")["mobilenet_flat.py"].decode()
    factored = _generate_in_subprocess(spec, tmp_path / "factored", "0", "--style", "factored")[
        "mobilenet_flat.py"
    ].decode()
    assert "Regenerate: stitchgen generate examples/mobilenet_flat.toml --output-dir " in flat
    assert "--style" not in flat.split("Regenerate:")[1].splitlines()[0]
    assert factored.split("Regenerate:")[1].splitlines()[0].endswith(" --style factored")
    assert "def conv_dw(" in factored and "def conv_dw(" not in flat
    assert len(factored.splitlines()) < len(flat.splitlines())
