"""Cut an IR graph into a head and a tail at a position, and rename ops.

The head keeps every call at or before the cut and outputs the (single) frontier
tensor; the tail keeps every call after it and gets one new input per frontier
tensor. Source layer indices are kept, so port scripts still find each layer.
"""

from __future__ import annotations

import dataclasses

from codegen.ir.graph import Call, Graph, Op, TensorRef, map_refs
from codegen.ir.naming import to_identifier
from codegen.planning.cuts import Crossing, CutAnalysis


def slice_head(analysis: CutAnalysis, position: int, name: str) -> Graph:
    graph = analysis.graph
    (crossing,) = analysis.frontier(position)
    calls = [c for c in graph.calls if analysis.position[c.id] <= position]
    used = {c.op for c in calls}
    ops = {k: op for k, op in graph.ops.items() if k in used}
    return Graph(name, "functional", ops, calls, graph.inputs, crossing.ref)


def tail_input_names(crossings: list[Crossing], taken: set[str]) -> list[str]:
    names = []
    for crossing in crossings:
        base = to_identifier(crossing.producer) + "_input"
        candidate, n = base, 1
        while candidate in taken or candidate in names:
            candidate, n = f"{base}_{n}", n + 1
        names.append(candidate)
    return names


def slice_tail(analysis: CutAnalysis, start: int, name: str) -> tuple[Graph, list[Crossing]]:
    graph = analysis.graph
    crossings = analysis.frontier(start - 1)
    calls = [c for c in graph.calls if analysis.position[c.id] >= start]
    used = {c.op for c in calls}
    ops = {k: op for k, op in graph.ops.items() if k in used}
    input_names = tail_input_names(crossings, set(graph.ops))
    replacement: dict[TensorRef, TensorRef] = {}
    new_calls: list[Call] = []
    new_ops: dict[str, Op] = {}
    for crossing, input_name in zip(crossings, input_names):
        call_id = f"{input_name}:input"
        new_ops[input_name] = Op(
            input_name,
            "input",
            "keras.Input",
            {"shape": tuple(crossing.info.shape[1:]), "name": input_name},
            class_name="InputLayer",
        )
        new_calls.append(Call(call_id, input_name, (), {}, (crossing.info,)))
        replacement[crossing.ref] = TensorRef(call_id, 0)

    def swap(ref: TensorRef) -> TensorRef:
        return replacement.get(ref, ref)

    for call in calls:
        new_calls.append(dataclasses.replace(call, args=map_refs(call.args, swap), kwargs=map_refs(call.kwargs, swap)))
    new_ops.update(ops)
    inputs = [replacement[c.ref] for c in crossings]
    return Graph(name, "functional", new_ops, new_calls, inputs, map_refs(graph.outputs, swap)), crossings


def rename_ops(graph: Graph, mapping: dict[str, str]) -> Graph:
    """The same graph with ops renamed (their `name=` argument too); call ids are kept."""
    if not mapping:
        return graph
    ops = {}
    for key, op in graph.ops.items():
        new = mapping.get(key, key)
        args = dict(op.args)
        if "name" in args and key in mapping:
            args["name"] = new
        source_name = (op.source_name or key) if key in mapping else op.source_name
        ops[new] = dataclasses.replace(op, name=new, args=args, source_name=source_name)
    calls = [dataclasses.replace(c, op=mapping.get(c.op, c.op)) for c in graph.calls]
    return dataclasses.replace(graph, ops=ops, calls=calls)
