"""Stable, structural names for layers whose source names came from a counter.

Keras names an unnamed layer `conv2d_157` from a process-wide counter, so the
name says nothing and depends on what else was built first. Inside a block
with a systematic stem we name by structure instead: `block17_20_branch_1_conv_2`,
its batch norm `..._bn`, its activation `..._ac`. The port script keeps the
source names in its table, so porting stays exact.
"""

from __future__ import annotations

import re

from codegen.frontend.publicapi import to_snake_case
from codegen.ir.graph import Graph, call_counts, consumer_counts, tensor_refs
from codegen.ir.naming import SHORT_CLASS_NAMES
from codegen.planning.blocks import Block, dfs_order, is_auto_name, split_blocks

_FOLLOWER_SUFFIX = {"BatchNormalization": "_bn", "Activation": "_ac", "ReLU": "_relu"}


def role(class_name: str) -> str:
    return SHORT_CLASS_NAMES.get(class_name) or re.sub(r"_layer$", "", to_snake_case(class_name))


def _branches(block: Block, graph: Graph) -> dict[str, int]:
    """call id -> branch index, from the widest concatenation of the block."""
    concats = [c for c in block.calls if graph.ops[c.op].class_name == "Concatenate"]
    if not concats:
        return {}
    concat = max(concats, key=lambda c: len(tensor_refs(c.args)))
    calls = {c.id: c for c in block.calls}
    owner: dict[str, int] = {}
    for index, ref in enumerate(tensor_refs(concat.args)):
        stack = [ref.call]
        while stack:
            cid = stack.pop()
            if cid not in calls or cid == concat.id:
                continue
            if owner.setdefault(cid, index) != index:
                owner[cid] = -1  # shared by several branches
                continue
            stack.extend(r.call for r in tensor_refs((calls[cid].args, calls[cid].kwargs)))
    return {cid: b for cid, b in owner.items() if b >= 0}


def structural_names(graph: Graph, blocks: list[Block]) -> dict[str, str]:
    """old name -> new name for counter-named layers; unique against every other name."""
    consumers = consumer_counts(graph.calls)
    calls_of = call_counts(graph.calls)
    taken = set(graph.ops)
    mapping: dict[str, str] = {}
    chain_base: dict[str, str] = {}  # op -> the name its followers extend
    producers = {call.id: call.op for call in graph.calls}

    def take(old: str, new: str) -> None:
        if new not in taken:
            mapping[old] = new
            taken.add(new)

    for block in blocks:
        branches = _branches(block, graph) if block.stem else {}
        counters: dict[tuple[int | None, str], int] = {}
        for call in block.calls:
            op = graph.ops[call.op]
            if op.kind != "layer" or calls_of[op.name] != 1 or not is_auto_name(op.name, op.class_name):
                chain_base[op.name] = op.name
                continue
            refs = tensor_refs((call.args, call.kwargs))
            suffix = _FOLLOWER_SUFFIX.get(op.class_name)
            producer = producers.get(refs[0].call) if len(refs) == 1 else None
            if suffix and producer is not None and consumers.get(refs[0]) == 1:
                base = chain_base.get(producer, mapping.get(producer, producer))
                take(op.name, base + suffix)
                chain_base[op.name] = base
                continue
            if block.stem is None:
                chain_base[op.name] = op.name
                continue
            branch = branches.get(call.id)
            prefix = block.stem if branch is None else f"{block.stem}_branch_{branch}"
            r = role(op.class_name)
            counters[(branch, r)] = counters.get((branch, r), 0) + 1
            take(op.name, f"{prefix}_{r}_{counters[(branch, r)]}")
            chain_base[op.name] = mapping.get(op.name, op.name)
    return mapping


def rename_structurally(graph: Graph, keep: set[str] = frozenset()) -> Graph:
    """`graph` with its counter-named layers renamed by structure (the factored style's names).

    Nested models keep their names: they are emitted as they are.
    """
    from codegen.planning.slicing import rename_ops

    mapping = structural_names(graph, split_blocks(graph, dfs_order(graph)))
    return rename_ops(graph, {old: new for old, new in mapping.items() if old not in keep})
