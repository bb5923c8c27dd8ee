"""Design the trainable adaptation module from shapes alone.

Rules (see the README's table): per frontier tensor, first fix the spatial size
(identity when equal; average pooling for an integer downsampling factor;
bilinear upsampling for an integer upsampling factor; bilinear resizing
otherwise; global pooling when the tail takes a vector), then the channels with
a 1x1 convolution (a Dense layer for vectors). `auto` wraps that in batch
normalisation (BN -> 1x1 conv -> BN, as in Bansal et al. 2021), `linear` is the
bare stitching layer, `conv` adds a 3x3 conv block. A ReLU ends a branch only
when the tail expects post-activation input.
"""

from __future__ import annotations

from codegen.errors import StitchgenError
from codegen.frontend.spec import ADAPTER_KINDS
from codegen.ir.graph import Call, Graph, Op, TensorInfo, TensorRef

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


def design_adapter(
    head: TensorInfo,
    targets: list[TensorInfo],
    kind: str,
    post_activation: list[bool],
    name: str = "adapter",
) -> Graph:
    """The adapter as an IR graph: one input (the head's output), one output per target."""
    if kind not in KINDS:
        raise StitchgenError(f"adapter kind {kind!r} does not exist; choose one of {', '.join(KINDS)}")
    b = _Builder()
    x = b.add("adapter_input", "keras.Input", {"shape": tuple(head.shape[1:])}, None, head)
    head_rank = len(head.shape) - 1
    if kind == "auto":
        x = b.add("adapter_bn_in", "layers.BatchNormalization", {}, x, head)
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
        if kind == "auto":
            y = b.add(f"{prefix}_bn_out", "layers.BatchNormalization", {}, y, target)
        if relu:
            y = b.add(f"{prefix}_relu", "layers.ReLU", {}, y, target)
        outputs.append(y)
    return Graph(name, "functional", b.ops, b.calls, TensorRef("adapter_input", 0), outputs)
