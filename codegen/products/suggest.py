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

from codegen.ir.graph import TensorInfo
from codegen.planning.cuts import CutAnalysis
from codegen.products.costs import tensor_bytes


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
    from codegen.products.costs import call_macs

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


def spread(ranked: list[Candidate], top: int) -> list[Candidate]:
    """The best `top` pairs with distinct head cuts first, then the rest in rank order.

    Without it, the best-shaped head cut fills the whole list with tail starts that
    differ only by a layer (ten variants of one choice); a user choosing a split needs
    the alternatives side by side.
    """
    picked: list[Candidate] = []
    heads: set[int] = set()
    for c in ranked:
        if c.head_cut not in heads:
            picked.append(c)
            heads.add(c.head_cut)
        if len(picked) == top:
            return picked
    rest = [c for c in ranked if c not in picked]
    return picked + rest[: top - len(picked)]


def _probe(model, names: list[str]):
    import keras

    tensors = [next(op for op in model.operations if op.name == n).output for n in names]
    return keras.Model(model.inputs, tensors)


def residuals(chosen: list[Candidate], head_model, tail_model, batches, progress=None) -> None:
    """Fill in the normalised least-squares residual (1 - R^2) of each chosen pair.

    `batches` yields (head inputs, tail inputs) for the same images. The normal
    equations are accumulated in float64 batch by batch, so memory holds one batch of
    activations and a (C+1) x (C+1) matrix per pair, whatever the number of images.
    """
    import keras
    import numpy as np

    head_names = sorted({c.head_tensor for c in chosen})
    tail_names = sorted({c.tail_tensor for c in chosen})
    head_probe, tail_probe = _probe(head_model, head_names), _probe(tail_model, tail_names)
    sums: dict[int, list] = {}
    for head_x, tail_x in batches:
        heads = dict(zip(head_names, _as_list(head_probe(head_x, training=False))))
        tails = dict(zip(tail_names, _as_list(tail_probe(tail_x, training=False))))
        for k, c in enumerate(chosen):
            target = keras.ops.convert_to_numpy(tails[c.tail_tensor]).astype("float64")
            z = keras.ops.convert_to_numpy(_spatial_fix(heads[c.head_tensor], tuple(target.shape[1:3]))).astype(
                "float64"
            )
            z = np.concatenate([z.reshape(-1, z.shape[-1]), np.ones((z.shape[0] * z.shape[1] * z.shape[2], 1))], axis=1)
            t = target.reshape(-1, target.shape[-1])
            if k not in sums:
                sums[k] = [
                    np.zeros((z.shape[1], z.shape[1])),
                    np.zeros((z.shape[1], t.shape[1])),
                    0.0,
                    np.zeros(t.shape[1]),
                    0,
                ]
            acc = sums[k]
            acc[0] += z.T @ z
            acc[1] += z.T @ t
            acc[2] += float(np.sum(t * t))
            acc[3] += t.sum(axis=0)
            acc[4] += len(t)
        if progress is not None:
            progress(len(head_x))
    for k, c in enumerate(chosen):
        ztz, ztt, tt, t_sum, n = sums[k]
        ridge = 1e-9 * (np.trace(ztz) / len(ztz) + 1e-12)
        solution = np.linalg.solve(ztz + ridge * np.eye(len(ztz)), ztt)
        sse = max(tt - float(np.sum(solution * ztt)), 0.0)
        total = tt - float(np.sum(t_sum**2) / n)
        c.residual = round(sse / total, 6) if total > 0 else 1.0


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def count_images(path: Path, limit: int) -> int:
    """How many images `image_batches` will yield."""
    import numpy as np

    if path.suffix == ".npz":
        from codegen.errors import StitchgenError

        try:
            with np.load(path, mmap_mode="r") as data:
                if "x" not in data:
                    raise StitchgenError(f"--images {str(path)!r} has no array named 'x' (N x H x W x C pixels, 0-255)")
                return min(len(data["x"]), limit)
        except (OSError, ValueError) as exc:
            raise StitchgenError(f"--images {str(path)!r} is not a readable .npz file ({exc})") from None
    exts = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
    return min(sum(1 for p in path.rglob("*") if p.suffix.lower() in exts), limit)


def image_batches(path: Path, sizes: list[tuple[int, int]], limit: int = 512, batch_size: int = 16):
    """Batches of up to `limit` images from a directory or a .npz `x`, float32 0-255, once per size.

    Yields a tuple with one array per size: the same images, resized for each network.
    Images are read batch by batch, never all at once.
    """
    import keras
    import numpy as np

    from codegen.errors import StitchgenError

    if path.suffix == ".npz":
        try:
            data = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StitchgenError(f"--images {str(path)!r} is not a readable .npz file ({exc})") from None
        if "x" not in data:
            raise StitchgenError(f"--images {str(path)!r} has no array named 'x' (N x H x W x C pixels, 0-255)")
        x = data["x"]
        if x.ndim != 4 or len(x) == 0:
            raise StitchgenError(f"--images {str(path)!r}: x has shape {x.shape}; expected N x H x W x C, N > 0")
        for start in range(0, min(len(x), limit), batch_size):
            chunk = np.asarray(x[start : min(start + batch_size, limit)], dtype="float32")
            yield tuple(keras.ops.convert_to_numpy(keras.ops.image.resize(chunk, size)) for size in sizes)
        return
    if not path.is_dir():
        raise StitchgenError(f"--images {str(path)!r} is neither an image directory nor a .npz file")
    if count_images(path, limit) == 0:
        raise StitchgenError(f"--images {str(path)!r} holds no images")
    try:
        dataset = keras.utils.image_dataset_from_directory(
            path, labels=None, image_size=sizes[0], batch_size=batch_size, shuffle=False, verbose=False
        )
    except ValueError as exc:
        raise StitchgenError(f"--images {str(path)!r}: {exc}") from None
    seen = 0
    for batch in dataset:
        batch = np.asarray(batch, "float32")[: limit - seen]
        seen += len(batch)
        yield (batch,) + tuple(keras.ops.convert_to_numpy(keras.ops.image.resize(batch, size)) for size in sizes[1:])
        if seen >= limit:
            return
