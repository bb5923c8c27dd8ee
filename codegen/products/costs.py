"""What a graph costs per image, from the IR's shapes alone (no model is run).

Counting rules (multiply-accumulates, MACs, per image):
* a layer with kernels (every weight of rank >= 2: Conv1D/2D/3D, grouped and
  depthwise convolutions, the two kernels of SeparableConv2D, Dense, EinsumDense):
  product of the output's non-batch, non-channel dimensions x product of the kernel's
  shape. The kernel's shape already holds input channels / groups and the depth
  multiplier, so one rule covers plain, grouped and depthwise convolutions, and a
  Dense on a vector gives inputs x units;
* pooling: one operation per window element and output value (global pooling: one
  per input value);
* everything else (batch norm, activations, additions, concatenation, resizing,
  embedding lookups, attention score products) counts 0.
Parameters are the weights' sizes, as `model.count_params()` counts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from codegen.ir.graph import Graph, TensorInfo, tensor_refs

_POOLS = {"MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D"}
_GLOBAL_POOLS = {
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
}
_NO_MACS = {"Embedding"}


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int


def tensor_bytes(info: TensorInfo, bytes_per_value: int) -> int:
    """Bytes of one image's worth of a tensor."""
    return math.prod(d for d in info.shape[1:] if d is not None) * bytes_per_value


def graph_cost(graph: Graph) -> Cost:
    """Parameters and MACs per image of every call in `graph` (nested models included)."""
    calls = graph.call_by_id()
    params = sum(op.params for op in graph.ops.values() if op.kind != "model")
    macs = sum(call_macs(graph, call, calls) for call in graph.calls)
    for op in graph.ops.values():
        if op.kind == "model" and op.subgraph is not None:
            params += graph_cost(op.subgraph).params
    return Cost(params, macs)


def call_macs(graph: Graph, call, calls: dict) -> int:
    """MACs per image of one call (`calls`: the graph's calls by id, for input shapes)."""
    op = graph.ops[call.op]
    if op.kind == "model" and op.subgraph is not None:
        return graph_cost(op.subgraph).macs
    if op.kind != "layer" or not call.outputs:
        return 0
    out = call.outputs[0].shape[1:]
    if op.class_name in _POOLS:
        pool = op.args.get("pool_size", 2)
        window = math.prod(pool) if isinstance(pool, (tuple, list)) else pool ** (len(out) - 1)
        return math.prod(_known(out)) * window
    if op.class_name in _GLOBAL_POOLS:
        refs = tensor_refs(call.args)
        return math.prod(_known(calls[refs[0].call].outputs[refs[0].index].shape[1:])) if refs else 0
    if op.class_name in _NO_MACS:
        return 0
    kernels = [s for s in op.weight_shapes if len(s) >= 2]
    return math.prod(_known(out[:-1])) * sum(math.prod(k) for k in kernels)


def _known(dims) -> list[int]:
    return [d for d in dims if d is not None]
