"""The command line: bad input gets one line, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import REPO, new_file_mode, run_cli

TESTS = Path(__file__).resolve().parent


def write_spec(directory: Path, text: str, name: str = "spec.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_user_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


GOOD = 'name = "tiny"\n[model]\nsource = "models_for_tests:shared_layers"\n'


@pytest.mark.parametrize(
    "text, fragments",
    [
        ('name = "tiny"\ncolour = 1\n[model]\nsource = "models_for_tests:shared_layers"\n', ["unknown key 'colour'"]),
        (
            'name = "tiny"\n[model]\nsource = "models_for_tests:shared_layers"\nweight = "none"\n',
            ["unknown key 'weight'", "did you mean 'weights'"],
        ),
        ('name = "Not A Module"\n[model]\nsource = "models_for_tests:shared_layers"\n', ["name 'Not A Module'"]),
        (
            'name = "tiny"\n[model]\nsource = "keras.applications.MobileNetV5"\n',
            ["no model 'MobileNetV5'", "MobileNet"],
        ),
        ('name = "tiny"\n[model]\nsource = "missing.keras"\n', ["does not exist"]),
        (
            'name = "tiny"\n[model]\nsource = "models_for_tests:with_lambda"\n',
            ["Lambda layer", "register_keras_serializable"],
        ),
        ('name = "tiny"\n[model]\nsource = "models_for_tests:subclassed"\n', ["subclassed model"]),
        ('name = "tiny"\n[model]\nsource = "models_for_tests:no_such_builder"\n', ["has no builder 'no_such_builder'"]),
        ('name = "tiny"\n[model\n', ["not valid TOML"]),
        ('name = "tiny"\nstyle = "baroque"\n[model]\nsource = "models_for_tests:shared_layers"\n', ["style 'baroque'"]),
    ],
)
def test_bad_specs(tmp_path, text, fragments):
    spec = write_spec(tmp_path, text)
    out = tmp_path / "out"
    result = run_cli("generate", str(spec), "--output-dir", str(out), extra_paths=(TESTS,))
    assert_user_error(result, *fragments)
    assert not out.exists()


def test_missing_spec_file(tmp_path):
    result = run_cli("generate", str(tmp_path / "nope.toml"))
    assert_user_error(result, "does not exist")


def test_generate_then_check(tmp_path):
    spec = write_spec(tmp_path, GOOD)
    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    result = run_cli("generate", str(spec))
    assert result.returncode == 0, result.stderr
    module = tmp_path / "tiny.py"
    assert module.exists() and (tmp_path / "tiny_port_weights.py").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert module.stat().st_mode & 0o777 == new_file_mode()  # readable like any checked-in file, not 0600

    assert run_cli("generate", str(spec), "--check").returncode == 0

    # a hand edit is detected, reported with a diff, and nothing is written
    edited = module.read_text().replace('name="other"', 'name="renamed"')
    module.write_text(edited)
    result = run_cli("generate", str(spec), "--check")
    assert result.returncode == 1
    assert "edited by hand" in result.stderr
    assert any(
        line.startswith("-") and 'layers.Dense(6, name="renamed")' in line for line in result.stdout.splitlines()
    )
    assert module.read_text() == edited

    # a stale (but untouched) file is reported as stale
    assert run_cli("generate", str(spec)).returncode == 0
    spec.write_text(GOOD.replace("shared_layers", "sequential_model"))
    result = run_cli("generate", str(spec), "--check")
    assert result.returncode == 1 and "stale" in result.stderr

    os.remove(tmp_path / "tiny_port_weights.py")
    result = run_cli("generate", str(spec), "--check")
    assert result.returncode == 1 and "missing" in result.stderr
    assert not (tmp_path / "tiny_port_weights.py").exists()


def test_inspect_table_and_json():
    result = run_cli("inspect", "keras.applications.MobileNet", "--kwargs", '{"input_shape": [224, 224, 3]}')
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if " conv_pad_6 " in line)
    assert row.split()[0] == "36" and "(None, 29, 29, 256)" in row and row.rstrip().endswith("*")
    as_json = run_cli("inspect", "keras.applications.MobileNet", "--kwargs", '{"input_shape": [224, 224, 3]}', "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert len(rows) == len(result.stdout.splitlines()) - 1  # one per table row
    (pad,) = [r for r in rows if r["name"] == "conv_pad_6"]
    assert pad == {"index": 36, "name": "conv_pad_6", "class": "ZeroPadding2D", "output_shape": [None, 29, 29, 256],
                   "params": 0, "cut": True}  # fmt: skip
    assert sum(r["params"] for r in rows) == 4253864  # MobileNet's count_params()


def test_inspect_frontier_and_errors():
    result = run_cli("inspect", "keras.applications.MobileNet", "--frontier", "conv_pad6")
    assert_user_error(result, "no layer named 'conv_pad6'", "conv_pad_6")
    result = run_cli("inspect", "keras.applications.MobileNet", "--frontier", "4000")
    assert_user_error(result, "out of range")
    result = run_cli("inspect", "keras.applications.MobileNet", "--kwargs", "[1, 2]")
    assert_user_error(result, "--kwargs must be a JSON object")


def test_help_for_every_command():
    top = run_cli("--help")
    for command in ("inspect", "generate", "report", "suggest", "export"):
        assert command in top.stdout
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout


def test_regenerate_command_is_machine_independent():
    text = (REPO / "generated" / "mobilenet.py").read_text()
    assert "stitchgen generate examples/mobilenet.toml" in text
    assert str(REPO) not in text
