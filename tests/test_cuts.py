"""Frontier of every position agrees with a brute-force reachability check."""

from __future__ import annotations

import pytest

from codegen.frontend.introspect import introspect
from codegen.frontend.load import load_model
from codegen.frontend.spec import parse_source
from codegen.ir.graph import TensorRef, tensor_refs
from codegen.planning.cuts import CutAnalysis


@pytest.fixture(scope="module")
def graphs():
    built = {}
    for name, shape in (("MobileNet", [224, 224, 3]), ("InceptionResNetV2", [299, 299, 3])):
        source = parse_source(f"keras.applications.{name}", kwargs={"input_shape": shape})
        built[name] = introspect(load_model(source)).graph
    return built


def brute_force_frontier(graph, position: int) -> set[TensorRef]:
    """Head = layers up to `position` plus every op from which a head layer is reachable through ops."""
    ops = graph.ops
    consumers: dict[str, set[str]] = {c.id: set() for c in graph.calls}
    for call in graph.calls:
        for ref in tensor_refs((call.args, call.kwargs)):
            consumers[ref.call].add(call.id)
    calls = graph.call_by_id()

    def in_head(call_id: str, seen=()) -> bool:
        op = ops[calls[call_id].op]
        if op.layer_index is not None:
            return op.layer_index <= position
        return any(in_head(user) for user in consumers[call_id])  # an op goes with its first user

    head = {c.id for c in graph.calls if in_head(c.id)}
    outputs = set(tensor_refs(graph.outputs))
    crossing = set()
    for call in graph.calls:
        if call.id in head:
            continue
        for ref in tensor_refs((call.args, call.kwargs)):
            if ref.call in head:
                crossing.add(ref)
    crossing |= {ref for ref in outputs if ref.call in head}
    return crossing


@pytest.mark.parametrize("name", ["MobileNet", "InceptionResNetV2"])
def test_every_frontier_matches_brute_force(graphs, name):
    graph = graphs[name]
    analysis = CutAnalysis(graph)
    singles = []
    for position in range(analysis.size):
        expected = brute_force_frontier(graph, position)
        got = {c.ref for c in analysis.frontier(position)}
        assert got == expected, f"{name} position {position}"
        if len(expected) == 1:
            singles.append(position)
    assert analysis.single_tensor_cuts() == singles
    assert analysis.frontier_sizes() == [len(brute_force_frontier(graph, p)) for p in range(analysis.size)]


def test_seed_cut_frontiers(graphs):
    mobilenet = CutAnalysis(graphs["MobileNet"])
    assert mobilenet.resolve("conv_pad_6") == 36
    (only,) = mobilenet.frontier(36)
    assert only.producer == "conv_pad_6" and only.info.shape == (None, 29, 29, 256)

    irv2 = CutAnalysis(graphs["InceptionResNetV2"])
    assert irv2.layers[610].name == "batch_normalization_157"
    crossing = {c.producer: c.info.shape[1:] for c in irv2.frontier(609)}  # a tail starting at 610
    assert crossing == {
        "block17_20_ac": (17, 17, 1088),
        "conv2d_157": (8, 8, 384),
        "conv2d_159": (8, 8, 288),
        "conv2d_162": (8, 8, 320),
    }


def test_resolve_errors(graphs):
    analysis = CutAnalysis(graphs["MobileNet"])
    with pytest.raises(ValueError, match="did you mean 'conv_pad_6'"):
        analysis.resolve("conv_pad6")
    with pytest.raises(ValueError, match="out of range"):
        analysis.resolve(10_000)
