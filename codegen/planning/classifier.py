"""`[tail] classes = N`: the tail's own classifier replaced by a new N-way one.

This follows keras.applications' `include_top`/`classes` convention: the top
keeps its layers and names (MobileNet's `conv_preds` 1x1 convolution and the
`Reshape` after it, ResNet's `predictions` Dense), only sized for N classes.
A tail without a top (it ends in features) gets one the way Keras builds it:
global average pooling when the features are a map, then a softmax Dense.
The new layer is marked `fresh`: the port script leaves it initialised and the
training script trains it with the adapter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from codegen.errors import StitchgenError
from codegen.ir.graph import Call, Graph, Op, TensorInfo, TensorRef, tensor_refs

# Layers between a classifier and the model's output that do not change what it computes
_PASS_THROUGH = {"Activation", "Softmax", "Reshape", "Dropout", "Flatten", "Identity"}


@dataclass(frozen=True)
class NewClassifier:
    """Where the new classifier sits, for the port script's check and the training script."""

    layer: str  # the new layer's name in the hybrid
    source_input: tuple[str, int]  # (producer in the tail source, output index) of the tensor it reads
    appended: bool  # True when the tail had no classifier and one was added
    top: str  # the first layer of the new top (the classifier, or the pooling added before it)


def _count(shapes: tuple[tuple[int, ...], ...]) -> int:
    return sum(math.prod(shape) for shape in shapes)


def _resized(info: TensorInfo, classes: int) -> TensorInfo:
    return TensorInfo(info.shape[:-1] + (classes,), info.dtype)


def _is_classifier(op: Op) -> bool:
    if op.class_name == "Dense":
        return True
    return op.class_name == "Conv2D" and tuple(op.args.get("kernel_size", ())) in (
        (1, 1),
        (1,),
        1,
    )


def _single_input(call: Call) -> TensorRef | None:
    refs = tensor_refs((call.args, call.kwargs))
    return refs[0] if len(refs) == 1 else None


def _source_tensor(graph: Graph, ref: TensorRef) -> tuple[str, int]:
    op = graph.ops[graph.call_by_id()[ref.call].op]
    if op.kind == "input":
        raise StitchgenError(
            "[tail] classes: the tail starts at its classifier, so only the new classifier would remain; "
            "start the tail earlier"
        )
    return (op.source_name or op.name, ref.index)


def replace_classifier(graph: Graph, classes: int, taken: set[str]) -> tuple[Graph, NewClassifier]:
    """`graph` (a tail) with an N-way classifier in place of its own, or one appended."""
    outputs = tensor_refs(graph.outputs)
    if len(outputs) != 1:
        raise StitchgenError(f"[tail] classes needs a tail with one output; this one has {len(outputs)}")
    calls = graph.call_by_id()
    chain: list[Call] = []  # output back to the classifier
    ref: TensorRef | None = outputs[0]
    classifier: Call | None = None
    while ref is not None:
        call = calls[ref.call]
        op = graph.ops[call.op]
        if op.kind == "layer" and _is_classifier(op):
            classifier = call
            break
        if op.kind != "layer" or op.class_name not in _PASS_THROUGH:
            break
        chain.append(call)
        ref = _single_input(call)
    if classifier is None:
        return _append(graph, classes, outputs[0], taken)
    return _resize(graph, classes, classifier, chain)


def _resize(graph: Graph, classes: int, classifier: Call, chain: list[Call]) -> tuple[Graph, NewClassifier]:
    op = graph.ops[classifier.op]
    key = "units" if op.class_name == "Dense" else "filters"
    old = op.args[key]
    ops = dict(graph.ops)
    shapes = tuple(shape[:-1] + (classes,) for shape in op.weight_shapes)
    ops[op.name] = dataclasses.replace(
        op,
        args={**op.args, key: classes},
        weight_shapes=shapes,
        fresh=True,
        params=_count(shapes),
    )
    changed = {classifier.id: dataclasses.replace(classifier, outputs=(_resized(classifier.outputs[0], classes),))}
    for call in chain:
        reshape = ops[call.op]
        target = reshape.args.get("target_shape")
        if reshape.class_name == "Reshape" and target and target[-1] == old:
            ops[reshape.name] = dataclasses.replace(
                reshape, args={**reshape.args, "target_shape": (*target[:-1], classes)}
            )
        changed[call.id] = dataclasses.replace(call, outputs=tuple(_resized(o, classes) for o in call.outputs))
    calls = [changed.get(call.id, call) for call in graph.calls]
    source_input = _single_input(classifier)
    if source_input is None:
        raise StitchgenError(f"[tail] classes: the classifier {op.name!r} has several inputs")
    new = NewClassifier(op.name, _source_tensor(graph, source_input), appended=False, top=op.name)
    return dataclasses.replace(graph, ops=ops, calls=calls), new


def _free(name: str, graph: Graph, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in graph.ops or candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _append(graph: Graph, classes: int, features: TensorRef, taken: set[str]) -> tuple[Graph, NewClassifier]:
    info = graph.call_by_id()[features.call].outputs[features.index]
    source_input = _source_tensor(graph, features)
    ops, calls, ref = dict(graph.ops), list(graph.calls), features
    top = None
    if len(info.shape) == 4:
        pool = _free("avg_pool", graph, taken)
        ops[pool] = Op(
            pool,
            "layer",
            "layers.GlobalAveragePooling2D",
            {"name": pool},
            class_name="GlobalAveragePooling2D",
        )
        calls.append(
            Call(
                pool,
                pool,
                (ref,),
                {},
                (TensorInfo((None, info.shape[-1]), info.dtype),),
            )
        )
        ref, info, top = TensorRef(pool, 0), TensorInfo((None, info.shape[-1]), info.dtype), pool
    elif len(info.shape) != 2:
        raise StitchgenError(f"[tail] classes: the tail ends in shape {info.shape[1:]}, neither features nor a map")
    dense = _free("predictions", graph, taken)
    ops[dense] = Op(
        dense,
        "layer",
        "layers.Dense",
        {"units": classes, "activation": "softmax", "name": dense},
        positional=("units",),
        class_name="Dense",
        weight_shapes=((info.shape[-1], classes), (classes,)),
        params=_count(((info.shape[-1], classes), (classes,))),
        fresh=True,
    )
    calls.append(Call(dense, dense, (ref,), {}, (TensorInfo((None, classes), info.dtype),)))
    graph = dataclasses.replace(graph, ops=ops, calls=calls, outputs=TensorRef(dense, 0))
    return graph, NewClassifier(dense, source_input, appended=True, top=top or dense)
