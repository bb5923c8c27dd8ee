"""Hostile or broken input reaches the user as one line and exit 2, never a traceback,
and nothing is written. Each case is one an adversarial pass found raising instead."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

BUILDERS = """
import keras


def boom():
    raise RuntimeError("kaboom")


def small():
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))


@keras.saving.register_keras_serializable(package="hostile")
class Odd(keras.layers.Layer):
    def __init__(self, key="v", value=1, **kwargs):
        super().__init__(**kwargs)
        self.key, self.value = key, value

    def call(self, x):
        return x * 2.0

    def get_config(self):
        return {**super().get_config(), self.key: self.value}


def odd(key="v"):
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, Odd(key=key, name="odd")(inputs))
"""

MOBILENET = 'source = "keras.applications.MobileNet"\nweights = "none"\n'
CASES = {
    "custom object ':'": (f'{MOBILENET}custom_objects = [":"]', "custom_objects must be a list"),
    "custom object '..:X'": (f'{MOBILENET}custom_objects = ["..:X"]', "custom_objects must be a list"),
    "custom object 5": (f"{MOBILENET}custom_objects = [5]", "custom_objects must be a list"),
    "custom object not a class": (f'{MOBILENET}custom_objects = ["os:sep"]', "is a str, not a layer class"),
    "empty input_shape": (f"{MOBILENET}kwargs = {{ input_shape = [] }}", "cannot build keras.applications.MobileNet"),
    "builder raises RuntimeError": ('source = "builders:boom"', "RuntimeError: kaboom"),
    "garbage .h5 model": ('source = "garbage.h5"', "cannot load garbage.h5"),
    "config key not an identifier": ('source = "builders:odd"\ncustom_objects = ["builders:Odd"]\nkwargs = { key = "a-b" }',
                                     "config key 'a-b' is not a Python identifier"),
    "config key a keyword": ('source = "builders:odd"\ncustom_objects = ["builders:Odd"]\nkwargs = { key = "lambda" }',
                             "config key 'lambda' is not a Python identifier"),
}  # fmt: skip


@pytest.fixture
def places(tmp_path):
    """Spec folder (with the user's builders and a garbage model file), output folder, working folder."""
    specs, work = tmp_path / "specs", tmp_path / "work"
    specs.mkdir()
    work.mkdir()
    (specs / "builders.py").write_text(BUILDERS)
    (specs / "garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2048))
    return specs, tmp_path / "out", work


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_model_tables_that_cannot_build_are_one_line(places, case):
    specs, out, work = places
    table, fragment = CASES[case]
    (specs / "net.toml").write_text(f'name = "net"\n[model]\n{table}\n')
    line = one_error_line(run_cli("generate", str(specs / "net.toml"), "--output-dir", str(out), cwd=work))
    assert fragment in line, line
    assert not out.exists()


def test_deeply_nested_toml_is_one_line(places):
    specs, _, work = places
    (specs / "deep.toml").write_text('name = "deep"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    assert "nested too deeply" in one_error_line(run_cli("generate", str(specs / "deep.toml"), cwd=work))


def test_check_on_a_file_that_is_not_utf8_says_so_and_writes_nothing(places):
    specs, out, work = places
    (specs / "net.toml").write_text('name = "net"\n[model]\nsource = "builders:small"\n')
    result = run_cli("generate", str(specs / "net.toml"), "--output-dir", str(out), cwd=work)
    assert result.returncode == 0, result.stderr
    (out / "net.py").write_bytes(b"\xff\xfe not text")
    result = run_cli("generate", str(specs / "net.toml"), "--output-dir", str(out), "--check", cwd=work)
    assert result.returncode == 1 and "not UTF-8" in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert (out / "net.py").read_bytes() == b"\xff\xfe not text"  # --check never writes


def test_plot_under_a_path_whose_parent_is_a_file(places):
    specs, _, work = places
    (work / "afile").write_text("mine")
    line = one_error_line(run_cli("inspect", "builders:small", "--plot", "afile/x.svg", cwd=work, extra_paths=(specs,)))
    assert "cannot write 'afile/x.svg'" in line, line
    assert (work / "afile").read_text() == "mine"


def test_suggest_images_npz_without_x(places):
    _, _, work = places
    np.savez(work / "noX.npz", y=np.zeros(3))
    kwargs = '{"input_shape": [32, 32, 3], "include_top": false}'
    result = run_cli(
        "suggest", "--head", "keras.applications.MobileNet", "--tail", "keras.applications.MobileNet",
        "--head-kwargs", kwargs, "--tail-kwargs", kwargs, "--images", "noX.npz",
        "--head-weights", "none", "--tail-weights", "none", cwd=work,
    )  # fmt: skip
    assert "has no array named 'x'" in one_error_line(result)


def test_suggest_images_file_that_is_not_an_npz(places):
    _, _, work = places
    Path(work / "fake.npz").write_bytes(b"not a zip")
    kwargs = '{"input_shape": [32, 32, 3], "include_top": false}'
    result = run_cli(
        "suggest", "--head", "keras.applications.MobileNet", "--tail", "keras.applications.MobileNet",
        "--head-kwargs", kwargs, "--tail-kwargs", kwargs, "--images", "fake.npz",
        "--head-weights", "none", "--tail-weights", "none", cwd=work,
    )  # fmt: skip
    assert "not a readable .npz" in one_error_line(result)


SPEC_CASES = {
    "name with a trailing newline": ('name = "net\\n"\n', "must be a lowercase Python module name"),
    "name keras": ('name = "keras"\n', "would shadow the 'keras' module"),
    "name numpy": ('name = "numpy"\n', "would shadow the 'numpy' module"),
    "name hashlib (imported by the training script)": ('name = "hashlib"\n', "would shadow the 'hashlib' module"),
    "name a keyword": ('name = "lambda"\n', "must be a lowercase Python module name"),
    "style 5": ('name = "net"\nstyle = 5\n', "style 5 is not one of"),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_spec_keys_that_would_break_the_set_are_one_line(places, case):
    specs, out, work = places
    head, fragment = SPEC_CASES[case]
    (specs / "net.toml").write_text(f'{head}[model]\nsource = "builders:small"\n')
    for extra in ((), ("--style", "flat")):  # an override does not hide a bad key
        line = one_error_line(run_cli("generate", str(specs / "net.toml"), "--output-dir", str(out), *extra, cwd=work))
        assert fragment in line, line
    assert not out.exists()


def test_a_bad_head_kwargs_is_named_as_such(places):
    _, _, work = places
    result = run_cli(
        "suggest", "--head", "keras.applications.MobileNet", "--tail", "keras.applications.MobileNet",
        "--head-kwargs", "{not json", "--tail-kwargs", "{}", cwd=work,
    )  # fmt: skip
    assert one_error_line(result).startswith("error: --head-kwargs is not valid JSON"), result.stderr


def test_keras_multi_line_errors_are_one_line_and_whole_under_verbose(places):
    """A garbage weights file: Keras's message runs over lines; the user sees the first, --verbose all."""
    specs, out, work = places
    (specs / "net.toml").write_text('name = "net"\n[model]\nsource = "garbage.h5"\n')
    quiet = run_cli("generate", str(specs / "net.toml"), "--output-dir", str(out), cwd=work)
    line = one_error_line(quiet)
    loud = run_cli("--verbose", "generate", str(specs / "net.toml"), "--output-dir", str(out), cwd=work)
    assert loud.returncode == 2 and "Traceback" not in loud.stderr
    assert line in loud.stderr and len(loud.stderr.strip().splitlines()) >= 2, loud.stderr
    assert not out.exists()
