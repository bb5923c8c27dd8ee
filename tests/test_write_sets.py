"""Generated sets are written whole: nothing replaced when one target cannot be, an error or
Ctrl-C at any move rolls back, a hard kill is rolled forward by the next run, two concurrent
runs leave one run's complete set, and a set mixed by hand is refused by its own scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO, subprocess_env

import codegen.write as writer
from codegen.errors import StitchgenError

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


# ---- fault injection on the writer itself (no Keras): every way a write can stop ----

NAMES = ("m.py", "m_port_weights.py", "m_train_adapter.py")


def a_set(token: str) -> dict[str, str]:
    return {name: f'"""{name}\n\nstitchgen-set: {token}\n"""\n' for name in NAMES}


OLD, NEW = a_set("a" * 16), a_set("b" * 16)


def on_disk(out) -> dict[str, str]:
    return {p.name: p.read_text() for p in out.iterdir() if p.is_file()}


def failing_replace(n: int, exc: BaseException):
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n:
            raise exc
        os.replace(src, dst)

    return replace


@pytest.mark.unit
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize(
    "exc", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"]
)
def test_an_error_at_the_nth_move_restores_the_previous_set(tmp_path, monkeypatch, n, exc):
    writer.write_files(OLD, tmp_path)
    monkeypatch.setattr(writer, "_replace", failing_replace(n, exc))
    expected = StitchgenError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        writer.write_files(NEW, tmp_path)
    assert on_disk(tmp_path) == OLD  # rolled back, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)  # no staging left


@pytest.mark.unit
def test_an_error_on_a_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_replace", failing_replace(2, OSError(28, "No space left on device")))
    with pytest.raises(StitchgenError, match="No space left"):
        writer.write_files(NEW, tmp_path / "fresh")
    assert list((tmp_path / "fresh").iterdir()) == []


@pytest.mark.unit
@pytest.mark.parametrize("k", [0, 1, 2])
def test_a_directory_where_the_kth_output_goes_replaces_nothing(tmp_path, k):
    writer.write_files(OLD, tmp_path)
    (tmp_path / NAMES[k]).unlink()
    (tmp_path / NAMES[k]).mkdir()
    with pytest.raises(StitchgenError, match="is not a regular file"):
        writer.write_files(NEW, tmp_path)
    assert on_disk(tmp_path) == {name: text for name, text in OLD.items() if name != NAMES[k]}
    assert not (tmp_path / writer.STAGING).exists()


KILLER = textwrap.dedent("""
    import os, signal, sys
    import codegen.write as writer

    n, when, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    files = {name: f'\"\"\"{name}\\n\\nstitchgen-set: {"b" * 16}\\n\"\"\"\\n' for name in sys.argv[4:]}
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if when == "before" and len(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(src, dst)
        if when == "after" and len(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)

    writer._replace = replace
    writer.write_files(files, __import__("pathlib").Path(out))
    """)


@pytest.mark.unit
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_hard_kill_around_the_nth_move_is_finished_by_the_next_run(tmp_path, n, when):
    out = tmp_path / "out"
    writer.write_files(OLD, out)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(n), when, str(out), *NAMES], cwd=tmp_path, env=subprocess_env(REPO)
    )
    assert killed.returncode == -signal.SIGKILL
    assert (out / writer.STAGING / writer.JOURNAL).is_file()  # killed after the commit point
    assert any(p.reason.startswith("an interrupted write") for p in writer.check_files(NEW, out))
    assert writer.recover(out)  # what the next run does first
    assert on_disk(out) == NEW  # rolled forward: the killed run's set, whole
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)


@pytest.mark.unit
def test_a_kill_before_the_commit_point_leaves_the_previous_set(tmp_path):
    writer.write_files(OLD, tmp_path)
    staging = tmp_path / writer.STAGING / "new"
    staging.mkdir(parents=True)  # what a run killed while staging leaves: files, no journal
    (staging / NAMES[0]).write_text(NEW[NAMES[0]])
    writer.write_files(OLD | {NAMES[1]: NEW[NAMES[1]]}, tmp_path)
    assert on_disk(tmp_path) == OLD | {NAMES[1]: NEW[NAMES[1]]}  # the abandoned staging was not installed
    assert not (tmp_path / writer.STAGING).exists()


@pytest.mark.unit
def test_check_reports_a_set_mixed_by_hand(tmp_path):
    writer.write_files(OLD, tmp_path)
    (tmp_path / NAMES[1]).write_text(NEW[NAMES[1]])
    reasons = [p.reason for p in writer.check_files(OLD, tmp_path)]
    assert any(r.startswith("a mixed set: files from different generations") for r in reasons), reasons


def test_an_emitted_script_refuses_a_module_of_another_generation(tmp_path):
    """A merge that takes the module from one branch and the port script from another."""
    (tmp_path / "builders.py").write_text(BUILDER)
    first, second = tmp_path / "first", tmp_path / "second"
    for out, units in ((first, 2), (second, 3)):
        run = generate(spec(tmp_path, f"s{units}", units), out, tmp_path)
        assert run.wait() == 0, run.stderr.read()
    (first / "net.py").write_bytes((second / "net.py").read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    port = subprocess.run(
        [sys.executable, str(first / "net_port_weights.py"), "--weights", "none", "--output", "w.weights.h5"],
        cwd=work, env=subprocess_env(REPO), capture_output=True, text=True,
    )  # fmt: skip
    assert port.returncode == 2, port.stderr
    (line,) = port.stderr.strip().splitlines()
    assert "net.py is from another generation than this script" in line and "stitchgen generate" in line
    assert not (work / "w.weights.h5").exists()
    check = subprocess.run(
        [sys.executable, "-m", "codegen", "generate", str(tmp_path / "s2.toml"), "--output-dir", str(first), "--check"],
        cwd=work, env=subprocess_env(REPO), capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 1 and "a mixed set" in check.stderr, check.stderr
