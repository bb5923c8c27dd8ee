"""Design the trainable adaptation module from shapes alone.

Rules (see the README's table): per frontier tensor, first fix the spatial size
(identity when equal; average pooling for an integer downsampling factor;
bilinear upsampling for an integer upsampling factor; bilinear resizing
otherwise; global pooling when the tail takes a vector), then the channels with
a 1x1 convolution (a Dense layer for vectors). `auto` wraps that in batch
normalisation (BN -> 1x1 conv -> BN, as in Bansal et al. 2021), `linear` is the
bare stitching layer, `conv` adds a 3x3 conv block. A ReLU ends a branch only
when the tail expects post-activation input.

`bottleneck` is `auto` with a narrow waist for split computing: batch norm, an
encoder convolution down to `channels` (its kernel and stride `stride`, so a
stride of 2 sends a quarter of the positions), the `Transmission` of the code at
the transmitted precision, then the branches as above, fed from the code. The
phone runs everything before the transmission, the server everything after
(`split_bottleneck`).
"""

from __future__ import annotations

import math

from codegen.errors import StitchgenError
from codegen.frontend.spec import ADAPTER_KINDS, Bottleneck
from codegen.ir.graph import Call, Graph, Op, TensorInfo, TensorRef, tensor_refs

KINDS = ADAPTER_KINDS


class _Builder:
    def __init__(self) -> None:
        self.ops: dict[str, Op] = {}
        self.calls: list[Call] = []

    def add(self, name: str, callee: str, args: dict, inputs, out: TensorInfo, positional=()) -> TensorRef:
        self.ops[name] = Op(
            name,
            "input" if callee == "keras.Input" else "layer",
            callee,
            {**args, "name": name},
            positional=positional,
            class_name=callee.rsplit(".", 1)[-1],
        )
        self.calls.append(Call(name, name, () if inputs is None else (inputs,), {}, (out,)))
        return TensorRef(name, 0)


def _spatial_fix(b: _Builder, prefix: str, x: TensorRef, src: tuple, dst: tuple, channels: int) -> TensorRef:
    (H, W), (h, w) = src, dst
    if (H, W) == (h, w):
        return x
    info = TensorInfo((None, h, w, channels), "float32")
    if H % h == 0 and W % w == 0 and H // h == W // w:
        factor = H // h
        return b.add(f"{prefix}_pool", "layers.AveragePooling2D", {"pool_size": factor}, x, info, ("pool_size",))
    if h % H == 0 and w % W == 0 and h // H == w // W:
        factor = h // H
        return b.add(
            f"{prefix}_upsample",
            "layers.UpSampling2D",
            {"size": factor, "interpolation": "bilinear"},
            x,
            info,
            ("size",),
        )
    return b.add(
        f"{prefix}_resize",
        "layers.Resizing",
        {"height": h, "width": w, "interpolation": "bilinear"},
        x,
        info,
        ("height", "width"),
    )


ENCODER = "adapter_encode"  # the bottleneck's encoder convolution (or Dense, for a vector head)
TRANSMISSION = "adapter_transmit"  # the bottleneck's link: phone side before it, server side after
TRANSMISSION_CLASSES = ("Quantize", "Dequantize", "Transmission")  # codegen/runtime/transmission.py
# everything codegen/runtime/transmission.py defines at module level in a bottleneck hybrid
TRANSMISSION_NAMES = (*TRANSMISSION_CLASSES, "quantization_parameters", "quantize_int8", "transmitted_inputs")


def code_info(head: TensorInfo, bottleneck: Bottleneck) -> TensorInfo:
    """The shape of what a bottleneck sends: `channels` wide, each spatial side divided by `stride` (rounded up)."""
    if bottleneck.channels > head.shape[-1]:
        raise StitchgenError(
            f"[adapter] channels = {bottleneck.channels} is more than the head's output has "
            f"({head.shape[-1]}, shape {tuple(head.shape[1:])}); a bottleneck must narrow it: "
            f"pick 1 to {head.shape[-1]}"
        )
    if len(head.shape) == 2:
        if bottleneck.stride != 1:
            raise StitchgenError("[adapter] stride applies to an image-shaped head output, not to a vector; remove it")
        return TensorInfo((None, bottleneck.channels), "float32")
    if len(head.shape) != 4:
        raise StitchgenError(f"a bottleneck needs an image or a vector at the cut, not shape {tuple(head.shape[1:])}")
    if None in head.shape[1:3]:
        raise StitchgenError(
            f"a bottleneck sends a fixed number of bytes, but the head's output {tuple(head.shape[1:])} has no fixed "
            "size; give the head a fixed input_shape in its kwargs"
        )
    h, w = (math.ceil(d / bottleneck.stride) for d in head.shape[1:3])
    return TensorInfo((None, h, w, bottleneck.channels), "float32")


def transmitted_bytes(code: TensorInfo, precision: str) -> int:
    """Bytes per image on the link: the code at `precision`, plus (int8) a float32 scale and zero point."""
    values = math.prod(d for d in code.shape[1:] if d is not None)
    return values * {"float32": 4, "float16": 2, "int8": 1}[precision] + (8 if precision == "int8" else 0)


def _encoder(b: _Builder, x: TensorRef, head: TensorInfo, bottleneck: Bottleneck) -> tuple[TensorRef, TensorInfo]:
    """Batch norm, the encoder down to the code, and the transmission: (received code, its info)."""
    code = code_info(head, bottleneck)
    x = b.add("adapter_bn_in", "layers.BatchNormalization", {}, x, head)
    if len(head.shape) == 2:
        x = b.add(ENCODER, "layers.Dense", {"units": bottleneck.channels}, x, code, ("units",))
    elif bottleneck.stride == 1:
        args = {"filters": bottleneck.channels, "kernel_size": 1}
        x = b.add(ENCODER, "layers.Conv2D", args, x, code, ("filters", "kernel_size"))
    else:
        args = {
            "filters": bottleneck.channels,
            "kernel_size": bottleneck.stride,
            "strides": bottleneck.stride,
            "padding": "same",
        }
        x = b.add(ENCODER, "layers.Conv2D", args, x, code, ("filters", "kernel_size"))
    x = b.add(TRANSMISSION, "Transmission", {"precision": bottleneck.transmit}, x, code, ("precision",))
    return x, code


def design_adapter(
    head: TensorInfo,
    targets: list[TensorInfo],
    kind: str,
    post_activation: list[bool],
    name: str = "adapter",
    bottleneck: Bottleneck | None = None,
) -> Graph:
    """The adapter as an IR graph: one input (the head's output), one output per target."""
    if kind not in KINDS:
        raise StitchgenError(f"adapter kind {kind!r} does not exist; choose one of {', '.join(KINDS)}")
    if (kind == "bottleneck") != (bottleneck is not None):
        raise ValueError("a bottleneck adapter needs its settings, and only it takes them")
    b = _Builder()
    x = b.add("adapter_input", "keras.Input", {"shape": tuple(head.shape[1:])}, None, head)
    if kind == "auto":
        x = b.add("adapter_bn_in", "layers.BatchNormalization", {}, x, head)
    if bottleneck is not None:
        x, head = _encoder(b, x, head, bottleneck)  # the branches start from the received code
    head_rank = len(head.shape) - 1
    outputs = []
    for i, (target, relu) in enumerate(zip(targets, post_activation)):
        prefix = f"adapter_{i}" if len(targets) > 1 else "adapter"
        t_rank = len(target.shape) - 1
        channels = target.shape[-1]
        y = x
        if head_rank == 3 and t_rank == 3:
            y = _spatial_fix(b, prefix, y, head.shape[1:3], target.shape[1:3], head.shape[-1])
            if kind == "conv":
                mid = TensorInfo(target.shape[:-1] + (channels,), "float32")
                y = b.add(
                    f"{prefix}_conv3x3",
                    "layers.Conv2D",
                    {"filters": channels, "kernel_size": 3, "padding": "same", "use_bias": False},
                    y,
                    mid,
                    ("filters", "kernel_size"),
                )
                y = b.add(f"{prefix}_conv_bn", "layers.BatchNormalization", {}, y, mid)
                y = b.add(f"{prefix}_conv_relu", "layers.ReLU", {}, y, mid)
            y = b.add(
                f"{prefix}_conv",
                "layers.Conv2D",
                {"filters": channels, "kernel_size": 1},
                y,
                target,
                ("filters", "kernel_size"),
            )
        elif head_rank == 3 and t_rank == 1:
            pooled = TensorInfo((None, head.shape[-1]), "float32")
            y = b.add(f"{prefix}_pool", "layers.GlobalAveragePooling2D", {}, y, pooled)
            if kind == "conv":
                y = b.add(
                    f"{prefix}_hidden", "layers.Dense", {"units": channels, "activation": "relu"}, y, target, ("units",)
                )
            y = b.add(f"{prefix}_dense", "layers.Dense", {"units": channels}, y, target, ("units",))
        elif head_rank == 1 and t_rank == 1:
            if kind == "conv":
                y = b.add(
                    f"{prefix}_hidden", "layers.Dense", {"units": channels, "activation": "relu"}, y, target, ("units",)
                )
            y = b.add(f"{prefix}_dense", "layers.Dense", {"units": channels}, y, target, ("units",))
        else:
            raise StitchgenError(
                f"no adapter rule maps a rank-{head_rank} head output {head.shape[1:]} "
                f"to a rank-{t_rank} tail input {target.shape[1:]}"
            )
        if kind in ("auto", "bottleneck"):
            y = b.add(f"{prefix}_bn_out", "layers.BatchNormalization", {}, y, target)
        if relu:
            y = b.add(f"{prefix}_relu", "layers.ReLU", {}, y, target)
        outputs.append(y)
    return Graph(name, "functional", b.ops, b.calls, TensorRef("adapter_input", 0), outputs)


def split_bottleneck(adapter: Graph) -> tuple[Graph, Graph]:
    """(encoder, decoder): a bottleneck adapter cut at its transmission, which neither holds.

    The encoder maps the head's output to the code; the decoder takes the received
    code (its input `adapter_code`) to one output per tail input.
    """
    calls = adapter.calls
    where = next(i for i, call in enumerate(calls) if call.op == TRANSMISSION)
    sent = calls[where].args[0]
    encoder_ops = {c.op: adapter.ops[c.op] for c in calls[:where]}
    encoder = Graph("encoder", "functional", encoder_ops, calls[:where], adapter.inputs, sent)

    shape = tuple(calls[where].outputs[0].shape[1:])
    code = Op("adapter_code", "input", "keras.Input", {"shape": shape, "name": "adapter_code"}, class_name="Input")
    received = TensorRef(code.name, 0)

    def rewire(ref):
        return received if ref == TensorRef(calls[where].id, 0) else ref

    decoder_calls = [Call(code.name, code.name, (), {}, calls[where].outputs)]
    for call in calls[where + 1 :]:
        decoder_calls.append(Call(call.id, call.op, tuple(rewire(a) for a in call.args), call.kwargs, call.outputs))
    decoder_ops = {code.name: code} | {c.op: adapter.ops[c.op] for c in calls[where + 1 :]}
    outputs = [rewire(ref) for ref in tensor_refs(adapter.outputs)]
    return encoder, Graph("decoder", "functional", decoder_ops, decoder_calls, received, outputs)
