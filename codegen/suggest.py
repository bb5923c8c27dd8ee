"""`stitchgen suggest`: rank (head cut, tail start) pairs before any training.

Candidates are single-tensor cuts of the head network with a spatial (H x W x C)
output, and tail starts whose frontier is one such tensor. Without images the
ranking is by shape compatibility first (equal spatial size best, then an
integer factor, then any other ratio; a small penalty for the channel ratio),
then by bytes at the cut plus head MACs (each relative to the largest candidate).
With a calibration set of images and the networks' weights, the normalised
least-squares residual of a linear adapter (spatial fix as the adapter rules,
then a 1x1 linear map with bias) ranks first: 1 - R^2 of the tail network's own
activations, which predicts how well a pair will stitch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codegen.costs import tensor_bytes
from codegen.cuts import CutAnalysis
from codegen.ir import TensorInfo


@dataclass
class Candidate:
    head_cut: int
    head_layer: str
    head_tensor: str
    head_shape: list[int]
    tail_start: int
    tail_layer: str
    tail_shape: list[int]
    tail_tensor: str
    shape_penalty: float
    bytes_float32: int
    head_macs: int
    residual: float | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _spatial(info: TensorInfo) -> tuple[int, int, int] | None:
    shape = info.shape[1:]
    if len(shape) != 3 or None in shape:
        return None
    return shape  # type: ignore[return-value]


def shape_penalty(head: tuple[int, int, int], tail: tuple[int, int, int]) -> float:
    (H, W, C), (h, w, c) = head, tail
    if (H, W) == (h, w):
        spatial = 0.0
    elif H % h == 0 and W % w == 0 and H // h == W // w:
        spatial = 0.5 * math.log2(H // h)
    elif h % H == 0 and w % W == 0 and h // H == w // W:
        spatial = 0.5 * math.log2(h // H)
    else:
        spatial = 2.0 + abs(math.log2((H * W) / (h * w)))
    return round(spatial + 0.1 * abs(math.log2(C / c)), 6)


def _prefix_macs(analysis: CutAnalysis) -> list[int]:
    """MACs of layers 0..p for every position p (model order)."""
    from codegen.costs import call_macs

    graph = analysis.graph
    calls = graph.call_by_id()
    per_position = [0] * analysis.size
    for call in graph.calls:
        position = analysis.position[call.id]
        if position < analysis.size:
            per_position[position] += call_macs(graph, call, calls)
    total, out = 0, []
    for value in per_position:
        total += value
        out.append(total)
    return out


def candidates(head: CutAnalysis, tail: CutAnalysis) -> list[Candidate]:
    head_macs = _prefix_macs(head)
    heads = []
    for p in head.single_tensor_cuts():
        (crossing,) = head.frontier(p)
        shape = _spatial(crossing.info)
        if shape is not None and head.layers[p].kind != "input":
            heads.append((p, crossing, shape))
    tails = []
    for s in range(1, tail.size):
        frontier = tail.frontier(s - 1)
        if len(frontier) == 1 and tail.layers[s].kind != "input":
            shape = _spatial(frontier[0].info)
            if shape is not None:
                tails.append((s, frontier[0], shape))
    found = []
    for p, crossing, hshape in heads:
        for s, target, tshape in tails:
            found.append(
                Candidate(
                    p, head.layers[p].name, crossing.producer, list(hshape), s, tail.layers[s].name, list(tshape), target.producer,
                    shape_penalty(hshape, tshape), tensor_bytes(crossing.info, 4), head_macs[p],
                )
            )  # fmt: skip
    return found


def rank(found: list[Candidate]) -> list[Candidate]:
    if not found:
        return []
    max_bytes = max(c.bytes_float32 for c in found) or 1
    max_macs = max(c.head_macs for c in found) or 1

    def key(c: Candidate):
        cost = c.bytes_float32 / max_bytes + c.head_macs / max_macs
        residual = c.residual if c.residual is not None else math.inf
        return (residual, c.shape_penalty, cost, c.head_cut, c.tail_start)

    return sorted(found, key=key)


def _spatial_fix(x, size: tuple[int, int]):
    import keras

    H, W = x.shape[1:3]
    h, w = size
    if (H, W) == (h, w):
        return x
    if H % h == 0 and W % w == 0 and H // h == W // w:
        return keras.ops.average_pool(x, H // h, H // h, padding="valid")
    return keras.ops.image.resize(x, (h, w), interpolation="bilinear")


def residuals(chosen: list[Candidate], head_model, tail_model, head_images, tail_images, batch_size: int = 32) -> None:
    """Fill in the normalised least-squares residual (1 - R^2) of each chosen pair."""
    import keras
    import numpy as np

    def activations(model, names: list[str], images):
        tensors = [next(op for op in model.operations if op.name == n).output for n in names]
        probe = keras.Model(model.inputs, tensors)
        parts = [probe.predict(images[i : i + batch_size], verbose=0) for i in range(0, len(images), batch_size)]
        parts = [p if isinstance(p, list) else [p] for p in parts]
        return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}

    heads = activations(head_model, sorted({c.head_tensor for c in chosen}), head_images)
    tails = activations(tail_model, sorted({c.tail_tensor for c in chosen}), tail_images)
    for c in chosen:
        target = tails[c.tail_tensor].astype("float64")
        z = keras.ops.convert_to_numpy(_spatial_fix(heads[c.head_tensor], tuple(target.shape[1:3]))).astype("float64")
        z = z.reshape(-1, z.shape[-1])
        t = target.reshape(-1, target.shape[-1])
        z = np.concatenate([z, np.ones((len(z), 1))], axis=1)
        solution, *_ = np.linalg.lstsq(z, t, rcond=None)
        sse = float(np.sum((z @ solution - t) ** 2))
        total = float(np.sum((t - t.mean(axis=0)) ** 2)) or 1.0
        c.residual = round(sse / total, 6)


def load_images(path: Path, size: tuple[int, int], limit: int = 512):
    """Up to `limit` images from a directory (any sub-folders) or a .npz `x`, resized, float32 0-255."""
    import keras
    import numpy as np

    from codegen.errors import StitchgenError

    if path.suffix == ".npz":
        x = np.load(path)["x"][:limit].astype("float32")
    elif path.is_dir():
        try:
            dataset = keras.utils.image_dataset_from_directory(
                path, labels=None, image_size=size, batch_size=64, shuffle=False
            )
        except ValueError as exc:
            raise StitchgenError(f"--images {str(path)!r}: {exc}") from None
        x = np.concatenate([np.asarray(b, "float32") for b in dataset])[:limit]
    else:
        raise StitchgenError(f"--images {str(path)!r} is neither an image directory nor a .npz file")
    if len(x) == 0:
        raise StitchgenError(f"--images {str(path)!r} holds no images")
    return keras.ops.convert_to_numpy(keras.ops.image.resize(x, size))
