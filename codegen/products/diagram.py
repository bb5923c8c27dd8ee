"""Graphviz diagrams: a hybrid's head, adapter and tail, or one model with its cut points.

Blocks (as the factored style sees them) become one node each, and a run of
blocks with the same layer sequence becomes one node `block35_1 .. block35_10 (x10)`,
so even InceptionResNetV2 fits on a page. Rendering needs Graphviz's `dot`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from codegen.errors import StitchgenError
from codegen.ir.graph import Graph, TensorInfo, TensorRef, tensor_refs
from codegen.planning.blocks import Block, dfs_order, split_blocks

COLOURS = {"head": "#cfe2ff", "adapter": "#ffd8a8", "tail": "#d3f9d8", "model": "#e9ecef"}


def quote(text: str) -> str:
    """A DOT string literal: nothing in a layer name can break out of it."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape(info: TensorInfo) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in info.shape[1:]) + ")"


class _Builder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0

    def node(self, label: str, **attrs: str) -> str:
        self.count += 1
        name = f"n{self.count}"
        extra = "".join(f", {k}={quote(v)}" for k, v in attrs.items())
        self.lines.append(f"    {name} [label={quote(label)}{extra}];")
        return name

    def edge(self, src: str, dst: str, label: str | None = None, **attrs: str) -> None:
        parts = [f"label={quote(label)}"] if label else []
        parts += [f"{k}={quote(v)}" for k, v in attrs.items()]
        self.lines.append(f"    {src} -> {dst}" + (f" [{', '.join(parts)}]" if parts else "") + ";")


def _part(
    b: _Builder, graph: Graph, cut_producers: set[str] | None = None, collapse: bool = True
) -> tuple[dict[TensorRef, str], dict[str, str]]:
    """Nodes for one graph; returns (producer node of every tensor, node of every input op)."""
    if collapse:
        blocks = split_blocks(graph, dfs_order(graph))
    else:
        blocks = [Block([c], None, [], []) for c in graph.calls]
    groups: list[list] = []
    for block in blocks:
        classes = tuple(graph.ops[c.op].class_name for c in block.calls)
        last = groups[-1] if groups else None
        if last is not None and len(block.calls) > 1 and last[0][1] == classes and block.inputs == last[-1][0].outputs:
            last.append((block, classes))
        else:
            groups.append([(block, classes)])
    node_of_call: dict[str, str] = {}
    inputs: dict[str, str] = {}
    for group in groups:
        first, _ = group[0]
        calls = [c for block, _ in group for c in block.calls]
        op = graph.ops[first.calls[0].op]
        out = calls[-1].outputs[0] if calls[-1].outputs else None
        if len(calls) == 1:
            label = f"{op.name}\n{op.class_name}"
        else:
            stems = [block.stem or graph.ops[block.calls[-1].op].name for block, _ in group]
            label = stems[0] if len(group) == 1 else f"{stems[0]} .. {stems[-1]} (x{len(group)})"
            label += f"\n{len(calls)} layers"
        if out is not None:
            label += f"\n{_shape(out)}"
        attrs = {}
        if cut_producers and graph.ops[calls[-1].op].name in cut_producers:
            label += "\ncut after here"
            attrs = {"color": "#c92a2a", "penwidth": "2"}
        name = b.node(label, **attrs)
        for call in calls:
            node_of_call[call.id] = name
            if graph.ops[call.op].kind == "input":
                inputs[call.op] = name
    seen: set[tuple[str, str]] = set()
    for call in graph.calls:
        for ref in tensor_refs((call.args, call.kwargs)):
            src, dst = node_of_call[ref.call], node_of_call[call.id]
            if src != dst and (src, dst) not in seen:
                seen.add((src, dst))
                b.edge(src, dst)
    producers = {TensorRef(c.id, i): node_of_call[c.id] for c in graph.calls for i in range(len(c.outputs))}
    return producers, inputs


def hybrid_dot(project) -> str:
    """Head, adapter and tail as coloured clusters; the frontier tensors as labelled edges."""
    b = _Builder()
    b.lines += [
        f"digraph {quote(project.spec.name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    parts = {}
    for part, graph in (("head", project.head_graph), ("adapter", project.adapter_graph), ("tail", project.tail_graph)):
        b.lines.append(f"  subgraph cluster_{part} {{")
        b.lines.append(
            f"    label={quote(part)}; style=filled; color={quote(COLOURS[part])}; fillcolor={quote(COLOURS[part])};"
        )
        b.lines.append('    node [fillcolor="white"];')
        parts[part] = _part(b, graph, collapse=part != "adapter")
        b.lines.append("  }")
    head_out = tensor_refs(project.head_graph.outputs)[0]
    adapter_in = next(iter(parts["adapter"][1].values()))
    info = project.head_crossing.info
    b.edge(
        parts["head"][0][head_out],
        adapter_in,
        f"{project.head_crossing.producer} {_shape(info)}",
        color="#1c7ed6",
        penwidth="2",
    )
    adapter_outs = tensor_refs(project.adapter_graph.outputs)
    tail_inputs = [c for c in project.tail_graph.calls if project.tail_graph.ops[c.op].kind == "input"]
    for ref, call, crossing in zip(adapter_outs, tail_inputs, project.tail_crossings):
        src = parts["adapter"][0][ref]
        dst = parts["tail"][1][project.tail_graph.ops[call.op].name]
        b.edge(src, dst, f"{crossing.producer} {_shape(crossing.info)}", color="#e8590c", penwidth="2")
    b.lines.append("}")
    return "\n".join(b.lines) + "\n"


def model_dot(graph: Graph, cut_producers: set[str]) -> str:
    """One model, blocks collapsed, the layers after which a single tensor crosses marked."""
    b = _Builder()
    b.lines += [
        f"digraph {quote(graph.name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fillcolor="white", fontname="Helvetica", fontsize=10];',
    ]
    _part(b, graph, cut_producers)
    b.lines.append("}")
    return "\n".join(b.lines) + "\n"


def render(dot: str, path: Path) -> Path:
    """Write `path` (.svg or .png) with Graphviz; a clear error when `dot` is missing."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png"):
        raise StitchgenError(f"{path.name}: the diagram must be a .svg or .png file")
    exe = shutil.which("dot")
    if exe is None:
        raise StitchgenError("Graphviz's `dot` is not installed: apt-get install graphviz (or brew install graphviz)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StitchgenError(f"cannot write {str(path)!r}: {exc.strerror} ({str(path.parent)!r})") from None
    tmp = path.with_name(f".{path.name}.tmp")
    result = subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=dot.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise StitchgenError(f"Graphviz failed: {result.stderr.decode(errors='replace').strip()[:300]}")
    tmp.replace(path)
    return path
