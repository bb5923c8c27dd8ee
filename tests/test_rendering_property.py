"""Hostile names on a hand-built IR (no Keras model is built): every place a name can reach.

Property-based (hypothesis, derandomized, 200 examples): each example gives every
position its own hostile name, renders the module and its port script in both styles,
and checks that

- every file parses, and its syntax tree has the same shape as the same IR's output
  under plain names (nothing opened or closed a string, started a line or a statement);
- every name comes back unchanged as a string constant (the `name=` arguments and the
  port table), and the payload appears only inside string and comment tokens;
- a custom layer's config key that cannot be a keyword argument is refused with one line.

The end-to-end half (import, build and port the hybrid; no canary file appears) is
`tests/test_hostile_names.py`.
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from codegen.errors import StitchgenError
from codegen.frontend.introspect import Introspection
from codegen.frontend.spec import ModelSource, ModelSpec
from codegen.ir.graph import Call, Graph, Op, TensorInfo, TensorRef
from codegen.products.model import ModelProject

pytestmark = pytest.mark.unit

PAYLOAD = '__import__("pathlib").Path("PWNED").touch()'
PIECES = [
    "a", "Z", "_", "0", " ", "'", '"', '"""', "'''", "\\", "\n", "\r", "\t", "\x0c", "\x0b", "\u2028", "\u2029",
    "\x85", "\x00", "#", ":", ";", "(", ")", "{{ x }}", "{% if 1 %}", "{#", "é", "\\N", "\\x", "*/",
    f'""";{PAYLOAD};"""', f"');{PAYLOAD};('", f"\n{PAYLOAD}\n", "a" * 300,
    # the generated module's own names and imports, and keywords
    "keras", "layers", "ops", "np", "build_model", "_name_op", "SOURCE", "INPUT_SHAPE", "LAYER_MAP", "model",
    "inputs", "x", "lambda", "class", "None", "__init__", "self",
]  # fmt: skip
NAME = st.lists(st.sampled_from(PIECES), min_size=1, max_size=5).map("".join)
# digits in a block stem are block counters (`conv_dw_3`): they change how blocks group, by design
STEM = NAME.filter(lambda s: not any(c.isdigit() for c in s))
POSITIONS = ("model", "input", "stem", "nested", "nested_input", "output", "value", "file", "folder")
PLAIN = {p: f"plain_{p}" for p in POSITIONS} | {"key": "key"}


def hand_built(names: dict[str, str]) -> Graph:
    """input -> three conv/bn/relu blocks named after one stem -> a nested model -> a custom layer -> Dense."""
    info = (TensorInfo((None, 8, 8, 4), "float32"),)
    ops = {names["input"]: Op(names["input"], "input", "keras.Input", {"shape": (8, 8, 4), "name": names["input"]},
                               class_name="InputLayer", layer_index=0)}  # fmt: skip
    calls = [Call(names["input"], names["input"], (), {}, info)]
    previous = names["input"]

    def add(name, callee, args, positional=(), shapes=(), custom=None):
        nonlocal previous
        ops[name] = Op(name, "layer", callee, {**args, "name": name}, tuple(positional), callee.split(".")[-1],
                       len(ops), tuple(shapes), custom_class=custom)  # fmt: skip
        calls.append(Call(name, name, (TensorRef(previous),), {}, info))
        previous = name

    for i in (1, 2, 3):
        stem = f"{names['stem']}_{i}"
        add(f"{stem}_conv", "layers.Conv2D", {"filters": 4, "kernel_size": (3, 3), "padding": "same"},
            ("filters", "kernel_size"), ((3, 3, 4, 4), (4,)))  # fmt: skip
        add(f"{stem}_bn", "layers.BatchNormalization", {}, (), ((4,),) * 4)
        add(f"{stem}_relu", "layers.ReLU", {})
    inner_in, inner_relu = names["nested_input"], names["nested"] + "_relu"
    inner = Graph(
        names["nested"], "functional",
        {inner_in: Op(inner_in, "input", "keras.Input", {"shape": (8, 8, 4), "name": inner_in}, class_name="InputLayer",
                      layer_index=0),
         inner_relu: Op(inner_relu, "layer", "layers.ReLU", {"name": inner_relu}, class_name="ReLU", layer_index=1)},
        [Call(inner_in, inner_in, (), {}, info), Call(inner_relu, inner_relu, (TensorRef(inner_in),), {}, info)],
        TensorRef(inner_in), TensorRef(inner_relu),
    )  # fmt: skip
    ops[names["nested"]] = Op(names["nested"], "model", "", {}, class_name="Functional", layer_index=len(ops),
                              subgraph=inner)  # fmt: skip
    calls.append(Call(names["nested"], names["nested"], (TensorRef(previous),), {}, info))
    previous = names["nested"]
    add(names["output"] + "_custom", "Odd", {names["key"]: names["value"]}, custom="Odd")
    add(names["output"], "layers.Dense", {"units": 2}, ("units",), ((4, 2), (2,)))
    return Graph(names["model"], "functional", ops, calls, TensorRef(names["input"]), TensorRef(names["output"]))


def files_for(names: dict[str, str], style: str, root: Path) -> dict[str, str]:
    folder = root / names["folder"].replace("\x00", "_").replace("/", "_")[:100]
    source = ModelSource(names["file"].replace("\x00", "_").replace("/", "_")[:100] + ".keras", "file", base_dir=folder)
    spec = ModelSpec("net", source, folder / "net.toml", root / "out", style, style, False)
    return ModelProject(spec, Introspection(hand_built(names))).files()


def shape(tree: ast.AST) -> list[str]:
    """The tree's node types in order: what a hostile name must not change."""
    return [type(node).__name__ for node in ast.walk(tree)]


def strings(tree: ast.AST) -> set[str]:
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def payload_only_in_strings(source: str) -> None:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if "PWNED" in token.string:
            assert token.type in (tokenize.STRING, tokenize.COMMENT), token


@pytest.fixture(scope="module", autouse=True)
def without_black():
    """Black only re-lays out lines (the syntax tree is the same); it would take 0.2 s a file here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("codegen.backend.assemble.format_source", lambda text: text)
        yield


@pytest.fixture(scope="module")
def plain_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    return {style: {n: shape(ast.parse(t)) for n, t in files_for(PLAIN, style, root).items()}
            for style in ("flat", "factored")}  # fmt: skip


SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def test_every_position_keeps_hostile_names_as_data(plain_shapes, tmp_path_factory):
    checked = []

    @SETTINGS
    @given(names=st.fixed_dictionaries({p: STEM if p == "stem" else NAME for p in POSITIONS}),
           style=st.sampled_from(["flat", "factored"]))  # fmt: skip
    def prop(names, style):
        names = {**names, "key": "key"}
        layer_names = {names["input"], names["nested"], names["nested_input"], names["output"]}
        assume(len(layer_names | {names["model"], names["output"] + "_custom"}) == 6)  # Keras refuses duplicates
        files = files_for(names, style, tmp_path_factory.getbasetemp())
        for file_name, text in files.items():
            tree = ast.parse(text)
            assert shape(tree) == plain_shapes[style][file_name], file_name
            payload_only_in_strings(text)
        assert layer_names | {names["model"], names["value"]} <= strings(ast.parse(files["net.py"]))
        assert names["stem"] + "_1_conv" in strings(ast.parse(files["net_port_weights.py"]))
        checked.append(style)

    prop()
    assert len(checked) >= 150 and {"flat", "factored"} <= set(checked), len(
        checked
    )  # most examples reached the checks


@SETTINGS
@given(key=NAME, style=st.sampled_from(["flat", "factored"]))
def test_a_config_key_is_a_keyword_argument_or_refused_in_one_line(tmp_path_factory, key, style):
    names = {**PLAIN, "key": key}
    try:
        files = files_for(names, style, tmp_path_factory.getbasetemp())
    except StitchgenError as exc:
        assert not key.isidentifier() or keyword.iskeyword(key), key
        assert "\n" not in str(exc) and "is not a Python identifier" in str(exc), str(exc)
        return
    assert key.isidentifier() and not keyword.iskeyword(key)
    call = next(n for n in ast.walk(ast.parse(files["net.py"])) if isinstance(n, ast.Call) and
                any(k.arg == key for k in n.keywords))  # fmt: skip
    assert call is not None
