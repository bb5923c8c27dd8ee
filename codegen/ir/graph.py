"""A small typed intermediate representation of a Keras functional graph.

Introspection fills it from a live model; planning slices it; rendering reads it.
Nothing here imports Keras, so the IR can be built by hand in tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

OpKind = Literal["input", "layer", "op", "model"]


@dataclass(frozen=True)
class TensorRef:
    """One output tensor of one call: the edges of the graph."""

    call: str
    index: int = 0


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int | None, ...]
    dtype: str


@dataclass(frozen=True)
class ObjectSpec:
    """A Keras object written as a constructor call, e.g. an initializer.

    `callee` is already the public expression that names the class
    (`keras.initializers.GlorotUniform`), `args` the non-default arguments.
    """

    callee: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Op:
    """An operation: a layer, a `keras.ops` operation, an input or a nested model.

    One Op may be called several times (shared layers): each call is a `Call`.
    """

    name: str
    kind: OpKind
    callee: str  # public expression of the constructor or ops function
    args: dict[str, Any]  # non-default constructor arguments, already reduced
    positional: tuple[str, ...] = ()  # which of `args` read best positionally
    class_name: str = ""
    layer_index: int | None = None  # position in `model.layers`
    weight_shapes: tuple[tuple[int, ...], ...] = ()
    params: int = 0
    subgraph: Graph | None = None
    custom_class: str | None = None  # name of an emitted custom class
    source_name: str | None = None  # the name in the source model, when renamed
    fresh: bool = False  # not in the source (a new classifier): initialised, never ported


@dataclass
class Call:
    """One call event of an op: a node of the graph."""

    id: str
    op: str  # name of the Op
    args: tuple[Any, ...]  # TensorRef leaves inside arbitrary structures
    kwargs: dict[str, Any]
    outputs: tuple[TensorInfo, ...]


@dataclass
class Graph:
    """A functional (or sequential) model: ops, calls in topological order, i/o."""

    name: str
    kind: Literal["functional", "sequential"]
    ops: dict[str, Op]
    calls: list[Call]
    inputs: Any  # structure of TensorRef
    outputs: Any  # structure of TensorRef
    trainable: bool = True

    def call_by_id(self) -> dict[str, Call]:
        return {c.id: c for c in self.calls}

    def layers(self) -> list[Op]:
        """Ops in `model.layers` order (everything but bare `keras.ops` operations)."""
        indexed = [op for op in self.ops.values() if op.layer_index is not None]
        return sorted(indexed, key=lambda op: op.layer_index)


def consumer_counts(calls: Iterable[Call]) -> Counter[TensorRef]:
    """How many times each tensor is an argument of `calls` (a tensor used twice by one call counts twice)."""
    return Counter(ref for call in calls for ref in tensor_refs((call.args, call.kwargs)))


def call_counts(calls: Iterable[Call]) -> Counter[str]:
    """How many times each op is called: more than once means a shared layer."""
    return Counter(call.op for call in calls)


def tensor_refs(structure: Any) -> list[TensorRef]:
    """All TensorRef leaves of a nested structure, in a stable order."""
    found: list[TensorRef] = []

    def walk(value: Any) -> None:
        if isinstance(value, TensorRef):
            found.append(value)
        elif isinstance(value, dict):
            for key in value:
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(structure)
    return found


def map_refs(structure: Any, fn) -> Any:
    """Rebuild a nested structure with every TensorRef replaced by fn(ref)."""
    if isinstance(structure, TensorRef):
        return fn(structure)
    if isinstance(structure, dict):
        return {k: map_refs(v, fn) for k, v in structure.items()}
    if isinstance(structure, list):
        return [map_refs(v, fn) for v in structure]
    if isinstance(structure, tuple):
        return tuple(map_refs(v, fn) for v in structure)
    return structure
