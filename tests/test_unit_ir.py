"""Planning on hand-built IR (no Keras model is built): cuts and frontiers, blocks and
motifs in the factored style, structural renaming, and the adapter rules."""

from __future__ import annotations

import ast

import pytest
from test_rendering_property import PLAIN, files_for, hand_built

from codegen.errors import StitchgenError
from codegen.ir.graph import Call, Graph, Op, TensorInfo, TensorRef
from codegen.planning.adapter import design_adapter
from codegen.planning.cuts import CutAnalysis

pytestmark = pytest.mark.unit
INFO = TensorInfo((None, 8, 8, 4), "float32")


def residual() -> Graph:
    """x -> a -> b -> add(a, b) -> relu: inside the block the frontier holds two tensors."""
    ops, calls = {}, []
    for index, (name, callee, args) in enumerate(
        [("x", "keras.Input", ()), ("a", "layers.Conv2D", ("x",)), ("b", "layers.Conv2D", ("a",)),
         ("add", "layers.Add", (["a", "b"],)), ("relu", "layers.ReLU", ("add",))]
    ):  # fmt: skip
        kind = "input" if callee == "keras.Input" else "layer"
        ops[name] = Op(name, kind, callee, {"name": name}, class_name=callee.split(".")[-1], layer_index=index)
        refs = tuple([TensorRef(n) for n in a] if isinstance(a, list) else TensorRef(a) for a in args)
        calls.append(Call(name, name, refs, {}, (INFO,)))
    return Graph("res", "functional", ops, calls, TensorRef("x"), TensorRef("relu"))


def test_the_frontier_inside_a_residual_block_holds_both_branches():
    analysis = CutAnalysis(residual())
    assert analysis.frontier_sizes() == [1, 1, 2, 1, 1]
    assert [c.producer for c in analysis.frontier(2)] == ["a", "b"]
    assert analysis.single_tensor_cuts() == [0, 1, 3, 4]
    assert analysis.resolve("add") == 3
    with pytest.raises(ValueError):
        analysis.resolve("nope")


def test_repeated_blocks_become_one_helper_called_in_a_loop(tmp_path):
    text = files_for(PLAIN, "factored", tmp_path)["net.py"]
    tree = ast.parse(text)
    helpers = [f.name for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("build_")]
    assert helpers == ["plain_stem"], helpers
    assert "for i in range(1, 4):" in text and 'x = plain_stem(x, name=f"plain_stem_{i}")' in text


def test_flat_style_writes_every_layer(tmp_path):
    text = files_for(PLAIN, "flat", tmp_path)["net.py"]
    for i in (1, 2, 3):
        for role in ("conv", "bn", "relu"):
            assert f'name="plain_stem_{i}_{role}"' in text


def test_the_port_table_keeps_source_positions_and_names(tmp_path):
    port = files_for(PLAIN, "factored", tmp_path)["net_port_weights.py"]
    table = next(n for n in ast.parse(port).body if isinstance(n, ast.Assign) and n.targets[0].id == "LAYER_MAP")
    rows = ast.literal_eval(table.value)
    assert [row[2] for row in rows] == [f"plain_stem_{i}_{r}" for i in (1, 2, 3) for r in ("conv", "bn")] + [
        "plain_output"
    ]
    assert rows[0][1] == (1,) and rows[0][4] == ((3, 3, 4, 4), (4,))


@pytest.mark.parametrize(
    ("head", "target", "expected"),
    [
        ((None, 8, 8, 4), (None, 8, 8, 16), {"layers.Conv2D"}),
        ((None, 16, 16, 4), (None, 8, 8, 16), {"layers.Conv2D"}),
        ((None, 8, 8, 4), (None, 16, 16, 16), {"layers.UpSampling2D", "layers.Conv2D"}),
    ],
)
def test_the_adapter_fixes_channels_and_space(head, target, expected):
    graph = design_adapter(TensorInfo(head, "float32"), [TensorInfo(target, "float32")], "auto", [False])
    callees = {op.callee for op in graph.ops.values()}
    assert expected <= callees, callees
    (out,) = [graph.call_by_id()[r.call].outputs[r.index] for r in [graph.outputs] if isinstance(r, TensorRef)] or [
        graph.call_by_id()[graph.outputs[0].call].outputs[0]
    ]
    assert tuple(out.shape) == target


def test_an_unknown_adapter_kind_is_one_line():
    with pytest.raises(StitchgenError, match="adapter kind 'wide' does not exist"):
        design_adapter(INFO, [INFO], "wide", [False])


def test_hand_built_graph_is_what_the_property_uses():
    graph = hand_built(PLAIN)
    assert len(graph.layers()) == 13 and graph.name == "plain_model"


def chains() -> Graph:
    """Conv -> BN (-> Activation) chains, as in Keras's `conv2d_bn(..., activation=None)` uses.

    The first two have no activation and longer stems than the rest, so a helper's
    template (a chain with its activation) is not its first instance.
    """
    info = (TensorInfo((None, 8, 8, 4), "float32"),)
    ops = {"image": Op("image", "input", "keras.Input", {"shape": (8, 8, 4), "name": "image"}, layer_index=0)}
    calls = [Call("image", "image", (), {}, info)]
    previous = "image"

    def add(name, callee, args, positional=(), shapes=()):
        nonlocal previous
        ops[name] = Op(name, "layer", callee, {**args, "name": name}, tuple(positional), callee.split(".")[-1],
                       len(ops), tuple(shapes))  # fmt: skip
        calls.append(Call(name, name, (TensorRef(previous),), {}, info))
        previous = name

    plan = [("projection_a", "same", False), ("projection_b", "valid", False), ("c1", "same", True),
            ("c2", "same", True), ("c3", "valid", True), ("c4", "same", True)]  # fmt: skip
    for k, (stem, padding, activation) in enumerate(plan):
        add(stem, "layers.Conv2D", {"filters": 4, "kernel_size": (1 + 2 * (k % 2), 1 + 2 * (k % 2)), "padding": padding},
            ("filters", "kernel_size"), ((3, 3, 4, 4), (4,)))  # fmt: skip
        add(f"{stem}_bn", "layers.BatchNormalization", {}, (), ((4,),) * 4)
        if activation:
            add(f"{stem}_ac", "layers.Activation", {"activation": "relu"}, ("activation",))
    return Graph("chains", "functional", ops, calls, TensorRef("image"), TensorRef(previous))


def test_a_trailing_activation_is_a_parameter_and_defaults_are_the_common_call(tmp_path):
    from codegen.frontend.introspect import Introspection
    from codegen.frontend.spec import ModelSource, ModelSpec
    from codegen.products.model import ModelProject

    source = ModelSource("net.keras", "file", base_dir=tmp_path)
    spec = ModelSpec("net", source, tmp_path / "net.toml", tmp_path / "out", "factored", "factored", False)
    text = ModelProject(spec, Introspection(chains())).files()["net.py"]
    tree = ast.parse(text)
    helpers = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("build_")}
    assert len(helpers) == 1, sorted(helpers)  # with and without the activation: one helper
    (helper,) = helpers.values()
    defaults = dict(zip([a.arg for a in helper.args.args][-len(helper.args.defaults) :], helper.args.defaults))
    assert ast.literal_eval(defaults["padding"]) == "same"  # 4 of 6 calls, not Conv2D's "valid"
    assert ast.literal_eval(defaults["activation"]) == "relu"  # 4 of 6 calls
    assert "if activation is not None:" in ast.unparse(helper)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == helper.name]
    passed = {ast.literal_eval(k.value) for c in calls for k in c.keywords if k.arg == "name"}
    assert passed == {"projection_a", "projection_b", "c1", "c2", "c3", "c4"}
    without = {ast.literal_eval(k.value) for c in calls for k in c.keywords if k.arg == "name"
               if any(j.arg == "activation" and ast.literal_eval(j.value) is None for j in c.keywords)}  # fmt: skip
    assert without == {"projection_a", "projection_b"}
    # the suffixes are cut from the template's own stem: every layer keeps its source name
    suffixes = {ast.literal_eval(n.right) for n in ast.walk(helper) if isinstance(n, ast.BinOp)}
    assert suffixes == {"_bn", "_ac"}, suffixes
