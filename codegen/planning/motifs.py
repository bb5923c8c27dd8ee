"""Motif discovery: subgraphs that repeat with the same structure, and what varies.

Two levels, as in hand-written Keras: whole blocks between single-tensor cuts
(`block35`, ResNet's residual blocks) and short chains inside them or between
them (conv -> batch norm -> activation). Instances of a motif have the same
layer classes and the same wiring; their configs may differ in literal values
only. Values that never vary are written inline in the helper; values that vary
become its parameters, with the layer class's own default where Keras has one.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any

from codegen.backend.literals import Expr, render, render_fstring
from codegen.frontend.publicapi import to_snake_case
from codegen.ir.graph import Call, Op, TensorRef
from codegen.ir.naming import SHORT_CLASS_NAMES

MISSING = object()
FOLLOWERS = {"BatchNormalization", "Activation", "ReLU", "LayerNormalization", "ELU", "LeakyReLU", "Softmax"}


@dataclass(frozen=True)
class Name:
    """A layer name as code: a literal (`param` None) or `param + suffix`."""

    param: str | None
    suffix: str

    def code(self) -> Expr:
        if self.param is None:
            return Expr(render(self.suffix))
        return Expr(self.param if not self.suffix else f"{self.param} + {render(self.suffix)}")

    def text(self) -> str:
        return self.suffix if self.param is None else f"{self.param}{self.suffix}"


@dataclass
class Step:
    """One call ready to render: its constructor values may be parameter expressions."""

    call: Call
    op: Op
    slots: dict[str, Any]  # constructor (layers) or keyword (ops) arguments, without the name
    name: Name | None


def step_of(call: Call, op: Op) -> Step:
    slots = {k: v for k, v in op.args.items() if k != "name"}
    name = Name(None, op.args["name"]) if op.kind == "layer" and isinstance(op.args.get("name"), str) else None
    return Step(call, op, slots, name)


@dataclass(frozen=True)
class Param:
    name: str
    default: Any = MISSING


@dataclass
class Instance:
    steps: list[Step]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    args: dict[str, Any]  # parameter -> value (literal, Expr or Name)
    stem: str | None = None  # the stem the names extend, for comments


@dataclass
class Motif:
    kind: str  # "block" or "chain"
    helper: str
    body: list[Step]  # the first instance, values replaced by parameters
    inputs: list[TensorRef]  # the body's input refs (of the first instance)
    outputs: list[TensorRef]
    params: list[Param]
    instances: list[Instance] = field(default_factory=list)
    # the parameter that guards the body's last step (`activation=None` leaves it out), or None
    guard: str | None = None
    # the body as the back end lays it out (after chain helpers are found inside it); empty: `body`
    body_items: list[Any] = field(default_factory=list)

    @property
    def required(self) -> list[Param]:
        return [p for p in self.params if p.default is MISSING and p.name != "name"]

    @property
    def optional(self) -> list[Param]:
        return [p for p in self.params if p.default is not MISSING]

    @property
    def named(self) -> bool:
        return any(p.name == "name" for p in self.params)


# ---------------------------------------------------------------- defaults


@functools.cache
def _signature(callee: str) -> inspect.Signature | None:
    module_alias = {"layers": "keras.layers", "ops": "keras.ops"}
    head, _, rest = callee.partition(".")
    path = module_alias.get(head, head) + "." + rest if rest else callee
    module_path, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_path), attr)
        return inspect.signature(obj)
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


def class_default(op: Op, key: str) -> Any:
    """The default Keras gives `key` when the argument is left out, or MISSING."""
    if op.custom_class is not None:
        return MISSING
    sig = _signature(op.callee)
    if sig is None or key not in sig.parameters:
        return MISSING
    default = sig.parameters[key].default
    if default is inspect.Parameter.empty or not _plain(default):
        return MISSING
    return default


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, tuple) and all(_plain(v) for v in value)


# ---------------------------------------------------------------- structure


def _wiring(value: Any, local: dict[TensorRef, Any]) -> Any:
    if isinstance(value, TensorRef):
        return local.get(value, ("outside",))
    if isinstance(value, dict):
        return tuple((k, _wiring(v, local)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_wiring(v, local) for v in value))
    return ("literal", render(value) if not isinstance(value, Name) else value.code())


def signature(steps: list[Step], inputs: list[TensorRef], base: Name | None) -> tuple:
    """What must be equal for two instances to share a helper: classes, wiring, name suffixes."""
    local: dict[TensorRef, Any] = {ref: ("in", i) for i, ref in enumerate(inputs)}
    parts = []
    for j, step in enumerate(steps):
        op = step.op
        required = tuple(sorted(k for k in step.slots if class_default(op, k) is MISSING))
        name_shape: Any = step.name is not None
        if step.name is not None and base is not None and fits(step.name, base):
            name_shape = step.name.suffix[len(base.suffix) :]
        parts.append(
            (
                op.kind,
                op.callee,
                op.class_name,
                op.positional,
                required,
                len(step.call.outputs),
                _wiring((step.call.args, step.call.kwargs), local),
                name_shape,
            )
        )
        for i in range(len(step.call.outputs)):
            local[TensorRef(step.call.id, i)] = ("local", j, i)
    return tuple(parts)


def fits(name: Name, base: Name) -> bool:
    """True when `name` is `base` plus a suffix."""
    return name.param == base.param and name.suffix.startswith(base.suffix)


# ---------------------------------------------------------------- parameters


def _same(values: list[Any]) -> bool:
    first = _key(values[0])
    return all(_key(v) == first for v in values[1:])


def _key(value: Any) -> str:
    return value.code() if isinstance(value, Name) else render(value)


def parameterize(kind: str, instances: list[Instance], stems: list[Name | None], names) -> Motif:
    """One helper for `instances` (same signature): constants inline, the rest parameters.

    `stems[i]` is what instance i's layer names extend (None: names become
    parameters of their own). `names` hands out parameter identifiers.
    """
    length = max(len(inst.steps) for inst in instances)
    index = next(i for i, inst in enumerate(instances) if len(inst.steps) == length)
    first, base = instances[index], stems[index]  # the template and its own stem: suffixes are cut from its names
    optional = None
    body: list[Step] = []
    params: list[Param] = []
    slot_params: list[tuple[int, str, str]] = []  # (step, key, parameter)
    use_stem = names_fit(instances, stems)
    duplicate_keys = _varying_key_counts([inst for inst in instances if len(inst.steps) == length])
    for j, template in enumerate(first.steps):
        op = template.op
        members = [inst for inst in instances if j < len(inst.steps)]
        if len(members) < len(instances):  # an optional trailing activation (see optional_tail)
            values = [inst.steps[j].slots.get("activation") if j < len(inst.steps) else None for inst in instances]
            optional = names("activation")
            params.append(Param(optional, _most_common(values)))
            slot_params.append((j, "activation", optional))
            name = Name("name", template.name.suffix[len(base.suffix) :]) if template.name is not None else None
            body.append(Step(template.call, op, {"activation": Expr(optional)}, name))
            continue
        keys = list(template.slots)
        for inst in members[1:]:
            keys += [k for k in inst.steps[j].slots if k not in keys]
        slots: dict[str, Any] = {}
        for key in keys:
            default = class_default(op, key)
            values = [inst.steps[j].slots.get(key, default) for inst in members]
            if _same(values) and not _scoped(values[0]):
                if not (default is not MISSING and _key(values[0]) == render(default)):
                    slots[key] = values[0]
                continue
            hint = key if duplicate_keys.get(key, 0) <= 1 else f"{_role(template, base)}_{key}"
            pname = names(hint)
            params.append(Param(pname, common_default(values, default)))
            slot_params.append((j, key, pname))
            slots[key] = Expr(pname)
        name = template.name
        if name is not None:
            if use_stem:
                name = Name("name", name.suffix[len(base.suffix) :])
            else:
                values = [inst.steps[j].name for inst in members]
                if _same(values) and not _scoped(values[0]):
                    name = values[0]
                else:
                    pname = names(f"{_role(template, base)}_name")
                    params.append(Param(pname))
                    slot_params.append((j, "name", pname))
                    name = Name(pname, "")
        body.append(Step(template.call, op, slots, name))
    if use_stem:
        params.append(Param("name"))
    for inst, stem in zip(instances, stems):
        args: dict[str, Any] = {}
        for j, key, pname in slot_params:
            if j >= len(inst.steps):  # the optional step is absent
                args[pname] = None
                continue
            step = inst.steps[j]
            args[pname] = step.name if key == "name" else step.slots.get(key, class_default(step.op, key))
        if use_stem:
            args["name"] = stem
        inst.args = args
    motif = Motif(kind, "", body, list(first.inputs), list(first.outputs), params, list(instances))
    motif.guard = optional
    return motif


def names_fit(instances: list[Instance], stems: list[Name | None]) -> bool:
    """True when every layer name of every instance extends its instance's stem (names become `name + suffix`)."""
    return all(s is not None for s in stems) and all(
        step.name is None or fits(step.name, s) for inst, s in zip(instances, stems) for step in inst.steps
    )


def optional_tail(steps: list[Step], base: Name | None) -> bool:
    """True when `steps` may share a helper with the same steps minus the last: a trailing activation.

    Keras's `conv2d_bn(..., activation=None)`: the helper takes `activation` and skips
    the layer for None. Only a plain `Activation` layer named after the stem qualifies.
    """
    if len(steps) < 2 or base is None:
        return False
    last = steps[-1]
    return (
        last.op.kind == "layer"
        and last.op.class_name == "Activation"
        and set(last.slots) <= {"activation"}
        and isinstance(last.slots.get("activation"), str)
        and last.name is not None
        and fits(last.name, base)
        and len(last.call.outputs) == 1
    )


def _most_common(values: list[Any]) -> Any:
    """The value most instances pass; a tie goes to the earliest."""
    counts: dict[str, int] = {}
    first: dict[str, Any] = {}
    for value in values:
        key = _key(value)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, value)
    return first[max(counts, key=lambda k: counts[k])]


def common_default(values: list[Any], default: Any) -> Any:
    """A helper parameter's default: the value most of its calls pass, as Keras's own helpers choose.

    `conv2d_bn(..., padding="same")` when most calls pad, whatever the layer class's
    default is. A value passed once is no default; a tie keeps the class default.
    Only plain literals qualify (no tensors, objects or names), and only for arguments
    Keras itself makes optional: `filters` stays required even when most calls agree.
    """
    if default is MISSING:
        return MISSING
    counts: dict[str, int] = {}
    first: dict[str, Any] = {}
    for value in values:
        if not _plain(value):
            return default
        key = _key(value)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, value)
    best = max(counts.values())
    leaders = [key for key, count in counts.items() if count == best]
    if best < 2 or len(leaders) > 1:
        return default
    return first[leaders[0]]


def _scoped(value: Any) -> bool:
    """True for code that names a parameter of the enclosing helper: never inline it elsewhere."""
    return isinstance(value, Expr) or (isinstance(value, Name) and value.param is not None)


def _varying_key_counts(instances: list[Instance]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for j, template in enumerate(instances[0].steps):
        keys = set(template.slots)
        for inst in instances[1:]:
            keys |= set(inst.steps[j].slots)
        for key in keys:
            default = class_default(template.op, key)
            values = [inst.steps[j].slots.get(key, default) for inst in instances]
            if not _same(values) or _scoped(values[0]):
                counts[key] = counts.get(key, 0) + 1
    return counts


def _role(step: Step, stem: Name | None) -> str:
    if step.name is not None:
        suffix = step.name.suffix
        if stem is not None and suffix.startswith(stem.suffix):
            suffix = suffix[len(stem.suffix) :]
        return role_text(suffix) or SHORT_CLASS_NAMES.get(step.op.class_name) or to_snake_case(step.op.class_name)
    return SHORT_CLASS_NAMES.get(step.op.class_name) or to_snake_case(step.op.class_name)


def role_text(suffix: str) -> str:
    """An identifier for a name suffix: `_0_conv` -> `conv_0`, `_branch_1` -> `branch_1`."""
    tokens = [t for t in re.split(r"\W+|_", suffix) if t]
    numbers = []
    while tokens and tokens[0].isdigit():
        numbers.append(tokens.pop(0))
    return "_".join(tokens + numbers).lower()


def pattern_name(steps: list[Step]) -> str:
    """`conv_bn_relu`: a helper name from the layer classes of a chain."""
    parts = []
    for step in steps:
        short = SHORT_CLASS_NAMES.get(step.op.class_name) or to_snake_case(step.op.class_name)
        activation = step.slots.get("activation")
        if short == "act" and isinstance(activation, str):
            short = activation
        parts.append(short)
    return "_".join(parts)


def stem_name(stems: list[str]) -> str | None:
    """`block35` from block35_1 .. block35_10; `conv_block` from conv2_block2, conv3_block1."""
    tokens = [s.split("_") for s in stems]
    if len({len(t) for t in tokens}) != 1:
        lengths = [len(t) for t in tokens]
        common = max(sorted(set(lengths)), key=lengths.count)
        if 2 * lengths.count(common) < len(tokens):
            return None
        tokens = [t for t in tokens if len(t) == common]
    kept = []
    for column in zip(*tokens):
        if len(set(column)) == 1:
            kept.append(column[0])
            continue
        stripped = sorted({re.sub(r"\d+", "", t) for t in column})
        common = os.path.commonprefix(stripped)
        if len(common) >= 3 and common.isidentifier():
            kept.append(common)
    return "_".join(kept) or None


# ---------------------------------------------------------------- loops


@dataclass
class Loop:
    start: int
    stop: int
    args: dict[str, Any]  # parameter -> literal or Expr in the loop index `i`


def fit_loop(instances: list[Instance], params: list[str]) -> Loop | None:
    """A `for i in range(...)` that reproduces every instance's arguments, if there is one."""
    n = len(instances)
    columns = {p: [inst.args[p] for inst in instances] for p in params}
    counters: dict[str, tuple[str, list[int], str]] = {}
    for p, values in columns.items():
        if _same(values):
            continue
        pattern = _counter(values)
        if pattern is None:
            return None
        counters[p] = pattern
    if not counters:
        return None
    start = next(iter(counters.values()))[1][0]
    args: dict[str, Any] = {}
    for p, values in columns.items():
        if p not in counters:
            args[p] = values[0]
            continue
        prefix, ints, suffix = counters[p]
        offset = ints[0] - start
        if ints != list(range(ints[0], ints[0] + n)):
            return None
        index = "i" if offset == 0 else f"i + {offset}" if offset > 0 else f"i - {-offset}"
        if prefix is None:
            args[p] = Expr(index)
        else:
            args[p] = render_fstring(prefix, index, suffix)
    return Loop(start, start + n, args)


def _counter(values: list[Any]) -> tuple[str | None, list[int], str] | None:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None, list(values), ""
    if all(isinstance(v, Name) and v.param is None for v in values):
        texts = [v.suffix for v in values]
        matches = [re.fullmatch(r"(.*?)(\d+)(\D*)", t, re.DOTALL) for t in texts]
        if not all(matches):
            return None
        prefixes = {m.group(1) for m in matches}
        suffixes = {m.group(3) for m in matches}
        if len(prefixes) != 1 or len(suffixes) != 1:
            return None
        if any(m.group(2) != str(int(m.group(2))) for m in matches):
            return None
        return prefixes.pop(), [int(m.group(2)) for m in matches], suffixes.pop()
    return None
