"""Names are data: whatever text a model's layers, inputs or nested models carry, the
generated files parse, import without running any of it, and rebuild the same names.

Property-based (hypothesis, derandomized so CI is reproducible): names drawn from
quotes, triple quotes, backslashes, newlines and other line breaks, comment signs,
`__SHAPE__`, and a payload that creates a file if it ever runs as code. The payload
may appear only inside string and comment tokens of the generated source.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tokenize
from pathlib import Path

import keras
import pytest
from helpers import import_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen.frontend.spec import load_spec
from codegen.products.hybrid import StitchProject
from codegen.write import write_files

TESTS = Path(__file__).resolve().parent
PAYLOAD = '__import__("pathlib").Path("PWNED").touch()'
PIECES = [
    "a", "Z", "_", "0", " ", "'", '"', '"""', "'''", "\\", "\n", "\r", "\t", "\x0c", "\u2028", "\x00", "#", ":",
    ";", "(", ")", "{", "}", "{{", "%}", "__SHAPE__", "é", "\\N", f'""";{PAYLOAD};"""', f"');{PAYLOAD};('",
    f"\n{PAYLOAD}\n",
]  # fmt: skip
NAME = st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("".join).filter(lambda s: s.strip())
SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def toml_string(value: str) -> str:
    return json.dumps(value)  # JSON's escapes are TOML basic-string escapes


def payload_only_in_strings(source: str) -> None:
    """PWNED may appear in string and comment tokens, never as code."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if "PWNED" in token.string:
            assert token.type in (tokenize.STRING, tokenize.COMMENT), token


@pytest.fixture
def workdir(tmp_path):
    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # where the payload would land
    yield tmp_path
    os.chdir(cwd)


@SETTINGS
@given(head=st.lists(NAME, min_size=4, max_size=4, unique=True), tail=st.lists(NAME, min_size=7, max_size=7, unique=True),
       style=st.sampled_from(["factored", "flat"]))  # fmt: skip
def test_hostile_names_stay_data(workdir, head, tail, style):
    spec = workdir / "hostile.toml"
    spec.write_text(
        f'name = "hostile"\nstyle = "{style}"\n'
        f'[head]\nsource = "models_for_tests:hostile_head"\ncut = 2\npreprocess = "none"\n'
        f"kwargs = {{ names = [{', '.join(map(toml_string, head))}] }}\n"
        f'[tail]\nsource = "models_for_tests:hostile_tail"\nstart = 3\npreprocess = "none"\n'
        f"kwargs = {{ names = [{', '.join(map(toml_string, tail))}] }}\n"
    )
    keras.backend.clear_session()
    files = StitchProject.from_spec(load_spec(spec)).files()
    for text in files.values():
        compile(text, "generated", "exec")
        payload_only_in_strings(text)
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    write_files(files, out)
    module = import_path(out / "hostile.py")
    model = module.build_model()
    names = {layer.name for layer in model.layers}
    assert set(head[1:]) - {head[1]} <= names | {head[2]}  # the nested model keeps its own name
    assert {head[3], tail[1 + 2], tail[4], tail[5], tail[6]} <= names, (names, tail)
    assert model.input.name == head[0] or head[0] in {t.name for t in model.inputs}
    for script in ("hostile_port_weights.py", "hostile_train_adapter.py"):
        compile((out / script).read_text(), script, "exec")
    assert not (workdir / "PWNED").exists()
