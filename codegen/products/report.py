"""`stitchgen report`: cost per part, bytes at the cut, and measured latency.

Parameters and MACs come from the IR (`codegen.products.costs`); latency from the
generated module itself, built in a temporary folder and timed on this machine
(median of repeated runs after warm-up), so the numbers describe the code the
user checks in.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from codegen.frontend.introspect import introspect
from codegen.generate import import_generated
from codegen.ir.graph import TensorInfo
from codegen.products.costs import graph_cost, tensor_bytes
from codegen.products.link import hybrid_link

WIDTHS = {"float32": 4, "float16": 2, "int8": 1}


def _shape(info: TensorInfo) -> list[int | None]:
    return list(info.shape[1:])


def bytes_rows(label: str, infos: list[tuple[str, TensorInfo]]) -> list[dict[str, Any]]:
    """Per tensor and, for several, their sum: bytes per image at each width."""
    rows = [{"tensor": f"{label}: {name}", "shape": _shape(info), **{w: tensor_bytes(info, b) for w, b in WIDTHS.items()}}
            for name, info in infos]  # fmt: skip
    if len(rows) > 1:
        rows.append({"tensor": f"{label}: all {len(rows)} tensors", "shape": None,
                     **{w: sum(r[w] for r in rows) for w in WIDTHS}})  # fmt: skip
    return rows


def _latency(model, batch: int, repeats: int) -> float:
    """Median milliseconds per call on random inputs, after two warm-up calls."""
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((batch,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    x = inputs if len(inputs) > 1 else inputs[0]
    for _ in range(2):
        model(x, training=False)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x, training=False)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _part_row(name: str, model, graph, output_shape, batch: int, repeats: int) -> dict[str, Any]:
    import numpy as np

    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {
        "part": name,
        "params_trainable": trainable,
        "params_frozen": frozen,
        "macs_per_image": graph_cost(graph).macs,
        "output_shape": output_shape,
        "latency_ms_batch_1": round(_latency(model, 1, repeats), 3) if repeats else None,
        f"latency_ms_batch_{batch}": round(_latency(model, batch, repeats), 3) if repeats else None,
    }


def stitch_report(project, repeats: int = 10, batch: int = 8, images: Path | None = None) -> dict[str, Any]:
    """The report of a stitched hybrid (a `StitchProject`); `images` measure the input as JPEG."""
    module = import_generated(project, "_report_")
    head, adapter, tail = module.build_head(), module.build_adapter(), module.build_tail()
    tail_out = [list(t.shape[1:]) for t in tail.outputs]
    parts = [
        _part_row("head", head, project.head_graph, list(module.HEAD_OUTPUT_SHAPE), batch, repeats),
        # the adapter's IR is designed from shapes, without weights: cost the built model instead
        _part_row(
            "adapter", adapter, introspect(adapter).graph, [list(s) for s in module.TAIL_INPUT_SHAPES], batch, repeats
        ),
        _part_row("tail", tail, project.tail_graph, tail_out[0] if len(tail_out) == 1 else tail_out, batch, repeats),
    ]
    crossing = project.head_crossing
    return {
        "name": project.spec.name,
        "kind": "stitch",
        "parts": parts,
        "bytes_at_cut": bytes_rows("head output (adapter on the server)", [(crossing.producer, crossing.info)])
        + bytes_rows("tail frontier (adapter on the phone)", [(c.producer, c.info) for c in project.tail_crossings]),
        "sent": hybrid_link(project, images).as_dict(),
        "machine": _machine(),
        "repeats": repeats,
        "batch": batch,
    }


def model_report(project, repeats: int = 10, batch: int = 8) -> dict[str, Any]:
    """The report of one generated model (a `ModelProject`)."""
    model = import_generated(project, "_report_").build_model()
    outputs = [list(t.shape[1:]) for t in model.outputs]
    parts = [_part_row("model", model, project.graph, outputs[0] if len(outputs) == 1 else outputs, batch, repeats)]
    return {"name": project.spec.name, "kind": "model", "parts": parts, "bytes_at_cut": [], "machine": _machine(),
            "repeats": repeats, "batch": batch}  # fmt: skip


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}"


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return ", ".join(_n(v) for v in value)
    return "(" + ", ".join(str(v) for v in value) + ")" if isinstance(value, list) else str(value)


def _times(sent: int, other: int) -> str:
    """'12.5x fewer than' or '2x more than', comparing `sent` bytes with `other`."""
    if sent <= other:
        return f"{other / sent:.3g}x fewer than"
    return f"{sent / other:.3g}x more than"


def render_markdown(report: dict[str, Any]) -> str:
    batch = report["batch"]
    lines = [f"# stitchgen report: {report['name']}", ""]
    lines += [
        f"| part | params (trainable) | params (frozen) | MACs per image | output shape | latency batch 1 (ms) | latency batch {batch} (ms) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in report["parts"]:
        lines.append(
            f"| {row['part']} | {_n(row['params_trainable'])} | {_n(row['params_frozen'])} | {_n(row['macs_per_image'])} "
            f"| {_n(row['output_shape'])} | {_n(row['latency_ms_batch_1'])} | {_n(row[f'latency_ms_batch_{batch}'])} |"
        )
    if report["bytes_at_cut"]:
        lines += [
            "",
            "Bytes per image crossing the cut:",
            "",
            "| tensor | shape | float32 | float16 | int8 |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for row in report["bytes_at_cut"]:
            lines.append(
                f"| {row['tensor']} | {_n(row['shape'])} | {_n(row['float32'])} | {_n(row['float16'])} | {_n(row['int8'])} |"
            )
    sent = report.get("sent")
    if sent:
        lines += [
            "",
            (
                f"Sent per image ({sent['sent']}): {sent['bytes']:,} bytes, "
                f"{_times(sent['bytes'], sent['float32_cut'])} the float32 cut ({sent['float32_cut']:,} bytes) "
                f"and {_times(sent['bytes'], sent['jpeg']['bytes'])} the input image as JPEG "
                f"({sent['jpeg']['bytes']:,} bytes, {sent['jpeg']['how']})."
            ),
        ]
    lines += [
        "",
        (
            "MACs: multiply-accumulates per image from layer shapes (convolutions of every kind and dense layers: "
            "output positions x kernel size; pooling: one per window element; other layers 0)."
        ),
        (
            f"Latency: median of {report['repeats']} runs after 2 warm-up runs, random inputs, on {report['machine']}."
            if report["repeats"]
            else "Latency: not measured (--repeats 0)."
        ),
    ]
    return "\n".join(lines) + "\n"
