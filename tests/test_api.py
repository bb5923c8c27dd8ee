"""`import stitchgen`: the documented Python API, on a user's builder in the user's folders."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO, subprocess_env

import stitchgen

BUILDER = """
import keras


def small(units=3):
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    y = keras.layers.Conv2D(4, 1, name="side")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(units, name="dense")(x), name="small")
"""


@pytest.fixture
def places(tmp_path, monkeypatch):
    code, out, work = tmp_path / "code", tmp_path / "out", tmp_path / "work"
    code.mkdir()
    work.mkdir()
    (code / "builders.py").write_text(BUILDER)
    monkeypatch.chdir(work)
    return code, out, work


def spec(units=3):
    return {"name": "small_net", "model": {"source": "builders:small", "kwargs": {"units": units}}}


def test_generate_write_check_from_a_dict(places):
    code, out, work = places
    files = stitchgen.generate(spec(), base_dir=code, output_dir=out)
    assert sorted(p.name for p in files) == ["small_net.py", "small_net_port_weights.py"]
    assert all(p.parent == out for p in files) and not out.exists()  # generate writes nothing
    written = stitchgen.write(spec(), base_dir=code, output_dir=out)
    assert {p: p.read_text() for p in written} == files
    assert stitchgen.check(spec(), base_dir=code, output_dir=out) == []
    stale = stitchgen.check(spec(units=5), base_dir=code, output_dir=out)
    assert {s.reason for s in stale} == {"stale"}
    assert list(work.iterdir()) == []  # nothing landed in the working directory
    port = subprocess.run(
        [sys.executable, str(out / "small_net_port_weights.py"), "--weights", "none", "--output", "w.weights.h5",
         "--verify"], cwd=work, env=subprocess_env(REPO), capture_output=True, text=True,
    )  # fmt: skip
    assert port.returncode == 0 and "verify: max abs diff 0.000e+00" in port.stdout, port.stderr


def test_the_same_bytes_as_the_command(places):
    code, out, work = places
    (code / "net.toml").write_text('name = "small_net"\n[model]\nsource = "builders:small"\nkwargs = { units = 3 }\n')
    command = subprocess.run(
        [sys.executable, "-m", "codegen", "generate", str(code / "net.toml"), "--output-dir", str(out)],
        cwd=work, env=subprocess_env(REPO), capture_output=True, text=True,
    )  # fmt: skip
    assert command.returncode == 0, command.stderr
    assert stitchgen.generate(code / "net.toml", output_dir=out) == {p: p.read_text() for p in out.iterdir()}


def test_inspect_cuts_and_frontier(places):
    code, _, _ = places
    sys.path.insert(0, str(code))
    try:
        rows = stitchgen.inspect("builders:small")
        assert [r["name"] for r in rows] == ["image", "conv", "side", "add", "pool", "dense"]
        assert [r["name"] for r in stitchgen.cuts("builders:small")] == ["image", "conv", "add", "pool", "dense"]
        inside = stitchgen.frontier("builders:small", "side")
        assert inside["layer"] == "side" and [t["tensor"] for t in inside["frontier"]] == ["conv", "side"]
        assert stitchgen.frontier("builders:small", 3)["frontier"][0]["shape"] == [None, 6, 6, 4]
        with pytest.raises(stitchgen.StitchgenError):
            stitchgen.frontier("builders:small", "nope")
    finally:
        sys.path.remove(str(code))


def test_report_and_errors(places):
    code, _, _ = places
    result = stitchgen.report(spec(), repeats=0, base_dir=code)
    (part,) = result["parts"]
    total = sum(r["params"] for r in stitchgen.inspect(stitchgen.load(spec(), base_dir=code).model))
    assert part["params_trainable"] + part["params_frozen"] == total == 4 * 27 + 4 + 4 * 4 + 4 + 4 * 3 + 3
    with pytest.raises(stitchgen.StitchgenError, match="needs a \\[model\\] table"):
        stitchgen.generate({"name": "x"})
    with pytest.raises(stitchgen.StitchgenError, match="would shadow"):
        stitchgen.generate({"name": "os", "model": {"source": "builders:small"}}, base_dir=code)


def test_the_package_is_typed():
    assert os.path.exists(os.path.join(os.path.dirname(stitchgen.__file__), "py.typed"))
    assert stitchgen.__version__
