"""Bytes on the link: what the phone sends per image, against the float32 cut and the photo as JPEG.

Split computing pays only when the phone sends less than the photo it started
from, so every figure here comes with that comparison. The JPEG size is measured
(quality 90, at the network's input resolution) on images the user gives; without
them it is a stated typical size: 2.7 bits per pixel, the median of five
photographs bundled with scikit-image (astronaut, chelsea, coffee,
motorcycle_left, hubble_deep_field), centre-cropped and resized to 224 x 224 and
saved at quality 90 (14,995 to 20,484 bytes; median 16,890 bytes).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from codegen.errors import StitchgenError
from codegen.ir.graph import TensorInfo
from codegen.products.costs import tensor_bytes

JPEG_QUALITY = 90
TYPICAL_JPEG_BITS_PER_PIXEL = 2.7
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class Jpeg:
    bytes: int
    how: str  # "measured: median of N images" or the typical estimate's source


@dataclass(frozen=True)
class Link:
    """Bytes per image as the configured hybrid sends them, and what they compare with."""

    sent: str  # what crosses, in words
    bytes: int
    float32_cut: int  # the head's output in float32: what an uncompressed split sends
    jpeg: Jpeg

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "times_fewer_than_float32_cut": round(self.float32_cut / self.bytes, 2),
            "times_fewer_than_jpeg": round(self.jpeg.bytes / self.bytes, 3),
        }


def image_files(folder: Path, option: str) -> list[Path]:
    if not folder.is_dir():
        raise StitchgenError(f"{option} {str(folder)!r} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise StitchgenError(f"{option} {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: Path, size: tuple[int, int], channels: int, option: str):
    """One image as float32 pixels (0-255), resized to `size`."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(path.read_bytes(), channels=channels, expand_animations=False)
    except (tf.errors.OpError, ValueError):
        raise StitchgenError(f"{option}: {str(path)!r} is not a readable image") from None
    return tf.image.resize(tf.cast(image, "float32"), size).numpy()


def jpeg_size(input_shape: tuple, images: Path | None = None, option: str = "--images") -> Jpeg:
    """The input image as JPEG (quality 90) at the network's resolution: measured on `images`, else typical."""
    height, width, channels = input_shape[-3:]
    if images is None:
        estimate = round(height * width * TYPICAL_JPEG_BITS_PER_PIXEL / 8)
        return Jpeg(estimate, f"typical: {TYPICAL_JPEG_BITS_PER_PIXEL} bits per pixel at quality {JPEG_QUALITY}")
    import numpy as np
    import tensorflow as tf

    sizes = []
    for path in image_files(images, option):
        pixels = np.clip(np.round(read_image(path, (height, width), channels, option)), 0, 255).astype("uint8")
        sizes.append(len(tf.io.encode_jpeg(pixels, quality=JPEG_QUALITY).numpy()))
    return Jpeg(round(statistics.median(sizes)), f"measured: median of {len(sizes)} images at quality {JPEG_QUALITY}")


def hybrid_link(project, images: Path | None = None) -> Link:
    """What the stitched hybrid's phone side sends (`stitchgen export`'s split)."""
    head = project.head_crossing.info
    bottleneck = project.spec.bottleneck
    float32_cut = tensor_bytes(head, 4)
    if bottleneck is not None:
        extra = " plus a float32 scale and zero point" if bottleneck.transmit == "int8" else ""
        sent = f"bottleneck code {_shape(project.code)} as {bottleneck.transmit}{extra}"
        size = project.sent_bytes
    elif project.spec.adapter_side == "phone":
        infos = [c.info for c in project.tail_crossings]
        sent = "tail frontier " + ", ".join(_shape(i) for i in infos) + " as float32"
        size = sum(tensor_bytes(i, 4) for i in infos)
    else:
        sent, size = f"head output {_shape(head)} as float32", float32_cut
    input_shape = project.head_graph.ops[_input_name(project.head_graph)].args["shape"]
    return Link(sent, size, float32_cut, jpeg_size(tuple(input_shape), images))


def _input_name(graph) -> str:
    from codegen.ir.graph import tensor_refs

    ref = tensor_refs(graph.inputs)[0]
    return graph.call_by_id()[ref.call].op


def _shape(info: TensorInfo) -> str:
    return " x ".join(str(d) for d in info.shape[1:])
