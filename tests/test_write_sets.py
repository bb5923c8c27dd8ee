"""Generated sets are written whole: nothing replaced when one target cannot be, and two
concurrent runs into one folder leave one run's complete set, never a mix."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO, subprocess_env

BUILDER = """
import keras


def small(units=2):
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, keras.layers.Dense(units, name="d")(inputs))
"""


def spec(folder, name, units):
    (folder / f"{name}.toml").write_text(
        f'name = "net"\n[model]\nsource = "builders:small"\nkwargs = {{ units = {units} }}\n'
    )
    return folder / f"{name}.toml"


def generate(spec_path, out, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "codegen", "generate", str(spec_path), "--output-dir", str(out)],
        cwd=cwd, env=subprocess_env(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_directory_in_the_way_replaces_nothing(tmp_path):
    (tmp_path / "builders.py").write_text(BUILDER)
    out = tmp_path / "out"
    first = generate(spec(tmp_path, "a", 2), out, tmp_path)
    assert first.wait() == 0, first.stderr.read()
    before = (out / "net.py").read_bytes()
    (out / "net_port_weights.py").unlink()
    (out / "net_port_weights.py").mkdir()
    second = generate(spec(tmp_path, "b", 3), out, tmp_path)
    _, err = second.communicate()
    assert second.returncode == 2 and "is not a regular file" in err and "Traceback" not in err, err
    assert (out / "net.py").read_bytes() == before  # the first file was not replaced
    assert sorted(p.name for p in out.iterdir()) == ["net.py", "net_port_weights.py"]  # no .tmp left


def test_concurrent_runs_leave_one_complete_set(tmp_path):
    (tmp_path / "builders.py").write_text(BUILDER)
    out = tmp_path / "out"
    runs = [generate(spec(tmp_path, f"s{units}", units), out, tmp_path) for units in (2, 3, 5)]
    for run in runs:
        _, err = run.communicate()
        assert run.returncode == 0, err
    model = (out / "net.py").read_text()
    port = (out / "net_port_weights.py").read_text()
    (chosen,) = [u for u in (2, 3, 5) if f'SOURCE_KWARGS = {{"units": {u}}}' in port]
    assert f"layers.Dense({chosen}, " in model, (chosen, model)  # both files from the same run
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
