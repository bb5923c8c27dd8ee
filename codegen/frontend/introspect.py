"""Read a live Keras functional model into the IR.

This walks the model's own call nodes (not `get_config()`, whose JSON form loses
tuples and whose in-memory form is not what the constructors take), so shared
layers, nested models, `keras.ops` operations and call keyword arguments are
all seen exactly as Keras executes them.
"""

from __future__ import annotations

import heapq
import inspect
from dataclasses import dataclass, field
from typing import Any

from codegen.errors import StitchgenError
from codegen.frontend.arguments import constructor_args
from codegen.frontend.publicapi import public_class_path, public_op_function
from codegen.ir.graph import Call, Graph, Op, TensorInfo, TensorRef


@dataclass
class Introspection:
    graph: Graph
    custom_classes: dict[type, str] = field(default_factory=dict)  # class -> emitted name


class _Context:
    def __init__(self, custom_objects: dict[str, type]) -> None:
        self.custom_classes: dict[type, str] = {}
        for cls in custom_objects.values():
            self.custom_class(cls)

    def custom_class(self, cls: type) -> str:
        if cls not in self.custom_classes:
            same_name = [c for c, n in self.custom_classes.items() if n == cls.__name__]
            # a copy of the same class (e.g. re-registered by a generated module) is the same class
            if same_name and same_name[0].__module__ == cls.__module__:
                raise StitchgenError(f"two different custom classes are both named {cls.__name__!r}; rename one")
            if not same_name:
                self.custom_classes[cls] = cls.__name__
            return cls.__name__
        return self.custom_classes[cls]


def _source(cls: type) -> str | None:
    """The class statement without its decorators (copies differ only in those)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return None
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("class ")), 0)
    return "\n".join(line.strip() for line in lines[start:])


def introspect(model: Any, custom_objects: dict[str, type] | None = None) -> Introspection:
    """The IR of `model`, raising StitchgenError for models stitchgen cannot emit."""
    ctx = _Context(custom_objects or {})
    graph = _graph(model, ctx)
    return Introspection(graph, dict(ctx.custom_classes))


def _is_functional(model: Any) -> bool:
    return hasattr(model, "_nodes") and hasattr(model, "_operations") and hasattr(model, "_inputs_struct")


def _graph(model: Any, ctx: _Context) -> Graph:
    import keras

    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise StitchgenError(
                f"Sequential model {model.name!r} has no input shape; "
                "start it with keras.Input(shape=...) or build it before generating"
            )
        return _walk(functional, list(model.layers), ctx, model.name, "sequential", model.trainable)
    if not _is_functional(model):
        raise StitchgenError(
            f"{type(model).__name__} is a subclassed model with no functional graph; "
            "rebuild it with the functional API (keras.Model(inputs, outputs)) to generate source"
        )
    return _walk(model, list(model.layers), ctx, model.name, "functional", model.trainable)


def _node_key(op: Any, index: int) -> str:
    return f"{id(op)}_ib-{index}"


def _walk(model: Any, layer_list: list[Any], ctx: _Context, name: str, kind: str, trainable: bool) -> Graph:
    from keras import KerasTensor

    own = model._nodes
    operations = list(model.operations)
    position = {id(op): i for i, op in enumerate(operations)}
    layer_index = {id(layer): i for i, layer in enumerate(layer_list)}

    nodes: dict[tuple[int, int], Any] = {}
    call_counts: dict[int, int] = {}
    for op in operations:
        for ni, node in enumerate(op._inbound_nodes):
            if _node_key(op, ni) in own:
                nodes[(id(op), ni)] = node
                call_counts[id(op)] = call_counts.get(id(op), 0) + 1

    def producer(tensor: Any) -> tuple[int, int]:
        hist = tensor._keras_history
        return (id(hist.operation), hist.node_index)

    # Kahn's algorithm; ties broken by Keras's own operation order, so the
    # emitted statement order is deterministic and close to the source's.
    deps: dict[tuple[int, int], set[tuple[int, int]]] = {}
    users: dict[tuple[int, int], list[tuple[int, int]]] = {k: [] for k in nodes}
    for key, node in nodes.items():
        parents = {producer(t) for t in node.arguments.keras_tensors} & nodes.keys()
        deps[key] = parents
        for parent in parents:
            users[parent].append(key)
    ready = [(position[k[0]], k[1], k) for k, d in deps.items() if not d]
    heapq.heapify(ready)
    order: list[tuple[int, int]] = []
    remaining = {k: len(d) for k, d in deps.items()}
    while ready:
        _, _, key = heapq.heappop(ready)
        order.append(key)
        for user in users[key]:
            remaining[user] -= 1
            if remaining[user] == 0:
                heapq.heappush(ready, (position[user[0]], user[1], user))

    ops: dict[str, Op] = {}
    op_objects = {id(op): op for op in operations}
    call_ids: dict[tuple[int, int], str] = {}
    seen_calls: dict[int, int] = {}
    calls: list[Call] = []

    def ref(tensor: Any) -> TensorRef:
        key = producer(tensor)
        if key not in call_ids:
            raise StitchgenError(f"tensor {tensor.name!r} is not produced inside model {name!r}")
        return TensorRef(call_ids[key], tensor._keras_history.tensor_index)

    def to_refs(value: Any) -> Any:
        if isinstance(value, KerasTensor):
            return ref(value)
        if isinstance(value, dict):
            return {k: to_refs(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_refs(v) for v in value]
        if isinstance(value, tuple):
            return tuple(to_refs(v) for v in value)
        return value

    for key in order:
        op = op_objects[key[0]]
        node = nodes[key]
        if op.name not in ops:
            ops[op.name] = _op(op, ctx, layer_index.get(id(op)))
        count = seen_calls.get(id(op), 0)
        seen_calls[id(op)] = count + 1
        call_id = op.name if call_counts[id(op)] == 1 else f"{op.name}:{count}"
        call_ids[key] = call_id
        args = to_refs(tuple(node.arguments.args))
        kwargs = _clean_kwargs(op, to_refs(dict(node.arguments.kwargs)))
        outputs = tuple(TensorInfo(tuple(t.shape), str(t.dtype)) for t in node.outputs)
        calls.append(Call(call_id, op.name, args, kwargs, outputs))

    # layers that are never called inside this graph still belong to `model.layers`
    return Graph(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        ops=ops,
        calls=calls,
        inputs=to_refs(model._inputs_struct),
        outputs=to_refs(model._outputs_struct),
        trainable=trainable,
    )


def _clean_kwargs(op: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop call keywords that only restate a default: `mask=None`, and a recorded `training=False`.

    Where a layer's `call` defaults `training` to False (Dropout), Keras records that
    default at every call, written or not; a functional model replaces it with its own
    `training` whenever that is given, and left to its default it means inference
    either way. Writing it out would claim the source froze the layer, which it did
    not. Where the default is None (BatchNormalization), Keras records `training` only
    when the source wrote it, so it is kept.
    """
    try:
        params = inspect.signature(op.call).parameters
    except (TypeError, ValueError, AttributeError):
        params = {}
    cleaned = {}
    for key, value in kwargs.items():
        default = params[key].default if key in params else None
        if value is None and default in (None, inspect.Parameter.empty):
            continue
        if key == "training" and value is False and default is False:
            continue
        cleaned[key] = value
    return cleaned


def _op(op: Any, ctx: _Context, layer_index: int | None) -> Op:
    import keras

    cls = type(op)
    if isinstance(op, keras.layers.InputLayer):
        return _input_op(op, layer_index)
    if isinstance(op, keras.Model):
        sub = _graph(op, ctx)
        return Op(
            name=op.name,
            kind="model",
            callee="",
            args={},
            class_name=cls.__name__,
            layer_index=layer_index,
            weight_shapes=tuple(tuple(w.shape) for w in op.weights),
            params=op.count_params() if op.built else 0,
            subgraph=sub,
        )
    if isinstance(op, keras.layers.Lambda):
        raise StitchgenError(
            f"layer {op.name!r} is a Lambda layer: its Python function cannot be recovered "
            "as source; replace it with a custom layer registered with "
            "keras.saving.register_keras_serializable and pass it as a custom object"
        )
    if isinstance(op, keras.layers.Layer):
        callee = public_class_path(cls)
        custom = None
        if callee is None:  # not exported by Keras: its source is copied instead
            custom = ctx.custom_class(cls)
            callee = custom
        args, positional = constructor_args(op, ctx.custom_classes)
        return Op(
            name=op.name,
            kind="layer",
            callee=callee,
            args=args,
            positional=positional,
            class_name=cls.__name__,
            layer_index=layer_index,
            weight_shapes=tuple(tuple(w.shape) for w in op.weights),
            params=op.count_params() if op.built else 0,
            custom_class=custom,
        )
    return _keras_op(op)


def _input_op(op: Any, layer_index: int | None) -> Op:
    config = op.get_config()
    batch_shape = tuple(config["batch_shape"])
    args: dict[str, Any] = {"shape": batch_shape[1:]}
    if batch_shape[0] is not None:
        args["batch_size"] = batch_shape[0]
    if config.get("dtype", "float32") != "float32":
        args["dtype"] = config["dtype"]
    for flag in ("sparse", "ragged", "optional"):
        if config.get(flag):
            args[flag] = True
    args["name"] = op.name
    return Op(op.name, "input", "keras.Input", args, class_name="InputLayer", layer_index=layer_index)


def _keras_op(op: Any) -> Op:
    from keras import ops as kops

    cls = type(op)
    if cls.__name__ == "GetItem":
        return Op(op.name, "op", "[]", {}, class_name=cls.__name__)
    fn_name = public_op_function(cls)
    if fn_name is None:
        raise StitchgenError(
            f"operation {op.name!r} ({cls.__name__}) has no public keras.ops function; "
            "wrap it in a registered custom layer"
        )
    try:
        config = dict(op.get_config())
    except Exception as exc:  # noqa: BLE001 - a user's op may raise anything
        raise StitchgenError(f"operation {op.name!r} ({cls.__name__}) cannot be serialized: {exc}") from None
    config.pop("name", None)
    params = inspect.signature(getattr(kops, fn_name)).parameters
    args = {}
    for key, value in config.items():
        if key in params and params[key].default is not inspect.Parameter.empty and _same(params[key].default, value):
            continue
        args[key] = value
    return Op(op.name, "op", f"ops.{fn_name}", args, class_name=cls.__name__)


def _same(a: Any, b: Any) -> bool:
    from codegen.frontend.arguments import normalize

    return type(a) is type(b) and normalize(a) == normalize(b) or (a is None and b is None)
