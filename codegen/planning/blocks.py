"""Split a graph into blocks: the units a reader (and the factored style) thinks in.

A block is a run of calls between two single-tensor cuts, so exactly one
tensor flows in and one flows out: a residual block, an inception block, a
depthwise-separable block. Cuts alone over-split linear stretches (every layer
of MobileNet is a cut), so adjacent pieces are merged when their layer names
share a systematic stem (`conv_dw_3`, `conv2_block1`, `block35_7`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from codegen.ir.graph import Call, Graph, TensorRef, consumer_counts, tensor_refs


def keras_snake_case(class_name: str) -> str:
    """The prefix Keras gives automatic names: `Conv2D` -> `conv2d`, `MaxPooling2D` -> `max_pooling2d`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def is_auto_name(name: str, class_name: str) -> bool:
    """True for names Keras made up from a counter (`conv2d_157`, `add_3`)."""
    prefix = keras_snake_case(class_name)
    return bool(prefix) and re.fullmatch(re.escape(prefix) + r"(_\d+)?", name) is not None


def dfs_order(graph: Graph) -> list[Call]:
    """Calls in depth-first post-order from the outputs: each branch reads top to bottom.

    Keras orders calls breadth-first by depth, interleaving parallel branches;
    any topological order builds the same model, and this one reads like the
    hand-written source.
    """
    calls = graph.call_by_id()
    order: list[Call] = []
    seen: set[str] = set()
    roots = [r.call for r in tensor_refs(graph.inputs)] + [r.call for r in tensor_refs(graph.outputs)]
    stack = [(cid, False) for cid in reversed(roots)]
    while stack:
        cid, expanded = stack.pop()
        if expanded:
            order.append(calls[cid])
            continue
        if cid in seen:
            continue
        seen.add(cid)
        stack.append((cid, True))
        call = calls[cid]
        for ref in reversed(tensor_refs((call.args, call.kwargs))):
            if ref.call not in seen:
                stack.append((ref.call, False))
    order += [c for c in graph.calls if c.id not in seen]
    return order


@dataclass
class Block:
    calls: list[Call]
    stem: str | None  # the common name stem, e.g. "block35_7"; None when names give none
    inputs: list[TensorRef]  # produced before the block, consumed inside
    outputs: list[TensorRef]  # produced inside, needed after it


def common_stem(names: list[str]) -> str | None:
    """The tokens (split at "_") that all `names` start with, joined: `conv2d_1` for conv2d_1, conv2d_1_bn."""
    tokens = [n.split("_") for n in names]
    common: list[str] = []
    for parts in zip(*tokens):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "_".join(common) or None


def _single_stem(name: str) -> str:
    """`conv_dw_3_bn` -> `conv_dw_3`: the name up to its first numbered token."""
    tokens = name.split("_")
    for i, token in enumerate(tokens):
        if any(ch.isdigit() for ch in token):
            return "_".join(tokens[: i + 1])
    return name


def split_blocks(graph: Graph, order: list[Call]) -> list[Block]:
    """Consecutive blocks covering `order` (which must be topological)."""
    consumers = consumer_counts(order)
    outputs = set(tensor_refs(graph.outputs))
    remaining = dict(consumers)
    live: set[TensorRef] = set()
    pieces: list[list[Call]] = [[]]
    for call in order:
        for ref in tensor_refs((call.args, call.kwargs)):
            remaining[ref] -= 1
            if remaining[ref] == 0 and ref not in outputs:
                live.discard(ref)
        for i in range(len(call.outputs)):
            ref = TensorRef(call.id, i)
            if remaining.get(ref, 0) > 0 or ref in outputs:
                live.add(ref)
        pieces[-1].append(call)
        if len(live) <= 1:
            pieces.append([])
    pieces = [p for p in pieces if p]

    def systematic(calls: list[Call]) -> list[str]:
        return [
            graph.ops[c.op].name
            for c in calls
            if graph.ops[c.op].kind in ("layer", "model") and not is_auto_name(c.op, graph.ops[c.op].class_name)
        ]

    keyed: list[tuple[list[Call], str | None, bool]] = []  # (calls, key, is a multi-call piece)
    for piece in pieces:
        names = systematic(piece)
        if len(piece) > 1:
            keyed.append((piece, common_stem(names) if names else None, True))
        else:
            keyed.append((piece, _single_stem(names[0]) if names else None, False))

    merged: list[tuple[list[Call], str | None, bool]] = []
    for piece, key, multi in keyed:
        if merged and key is not None:
            prev_calls, prev_key, prev_multi = merged[-1]
            names = systematic(piece)
            if prev_key is None:
                merged.append((piece, key, multi))
                continue
            # the previous piece opens this block (`conv2_block1_preact_bn` then `conv2_block1`)
            if len(key) > len(prev_key) and all(n.startswith(key + "_") for n in systematic(prev_calls)):
                merged[-1] = (prev_calls + piece, key, prev_multi or multi)
                continue
            # same stem; a sub-part (`block2a` then `block2a_se`); or a residual block's
            # trailing activation (`conv2_block1` then `conv2_block1_out`)
            joins = (
                key == prev_key
                or key.startswith(prev_key + "_")
                or (prev_multi and not multi and all(n == prev_key or n.startswith(prev_key + "_") for n in names))
            )
            if joins:
                merged[-1] = (prev_calls + piece, prev_key, prev_multi or multi)
                continue
        merged.append((piece, key, multi))
    return [_block(graph, calls, stem, consumers, outputs) for calls, stem, _ in merged]


def _block(graph: Graph, calls: list[Call], stem: str | None, consumers, outputs) -> Block:
    inside = {c.id for c in calls}
    ins: list[TensorRef] = []
    used_inside: dict[TensorRef, int] = {}
    for call in calls:
        for ref in tensor_refs((call.args, call.kwargs)):
            if ref.call not in inside and ref not in ins:
                ins.append(ref)
            used_inside[ref] = used_inside.get(ref, 0) + 1
    outs = [
        TensorRef(c.id, i)
        for c in calls
        for i in range(len(c.outputs))
        if TensorRef(c.id, i) in outputs
        or consumers.get(TensorRef(c.id, i), 0) > used_inside.get(TensorRef(c.id, i), 0)
    ]
    return Block(calls, stem, ins, outs)
