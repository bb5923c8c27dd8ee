"""Every value taken from a model reaches generated code through `render`.

`repr` is the only escaping used for strings, so no layer name or config string
can break out of its literal. Anything that is not a plain value must be wrapped
in `Expr` (code the generator wrote itself) or `ObjectSpec` (a constructor call).
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable
from typing import Any

from codegen.errors import StitchgenError
from codegen.ir import ObjectSpec, TensorRef


class Expr(str):
    """A piece of code written by the generator itself, rendered verbatim."""


def render(value: Any, ref: Callable[[TensorRef], str] | None = None) -> str:
    """Render `value` as Python source. `ref` names the variable for a TensorRef."""
    if isinstance(value, Expr):
        return str(value)
    if isinstance(value, TensorRef):
        if ref is None:
            raise TypeError("a tensor reference needs a variable name")
        return ref(value)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(float(value))
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, bytes):
        return repr(bytes(value))
    if isinstance(value, ObjectSpec):
        return render_call(value.callee, (), value.args, ref)
    if isinstance(value, slice):
        return _render_slice(value, ref)
    if value is Ellipsis:
        return "..."
    if isinstance(value, tuple):
        items = [render(v, ref) for v in value]
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(render(v, ref) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        items = sorted(render(v, ref) for v in value)
        return "{" + ", ".join(items) + "}" if items else "set()"
    if isinstance(value, dict):
        pairs = (f"{render(k, ref)}: {render(v, ref)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return render(item(), ref)
    raise TypeError(f"cannot render a {type(value).__name__} as a Python literal")


def render_call(
    callee: str,
    positional: tuple[Any, ...] | list[Any],
    keywords: dict[str, Any],
    ref: Callable[[TensorRef], str] | None = None,
) -> str:
    """`callee(a, b, key=value)` with every argument rendered as a literal."""
    parts = [render(v, ref) for v in positional]
    for key, value in keywords.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise StitchgenError(
                f"{callee}: config key {key!r} is not a Python identifier, so it cannot be written as a "
                "keyword argument; rename it in the layer's get_config()"
            )
        parts.append(f"{key}={render(value, ref)}")
    return f"{callee}(" + ", ".join(parts) + ")"


def render_subscript(key: Any, ref: Callable[[TensorRef], str] | None = None) -> str:
    """The inside of `x[...]`, as Python writes it: `:, 1:3` rather than slice objects."""
    items = key if isinstance(key, tuple) else (key,)
    rendered = [_render_slice(k, ref, bare=True) if isinstance(k, slice) else render(k, ref) for k in items]
    if isinstance(key, tuple) and len(items) == 1:
        return rendered[0] + ","
    return ", ".join(rendered) if rendered else "()"


def _render_slice(value: slice, ref, bare: bool = False) -> str:
    if not bare:
        return render_call("slice", (value.start, value.stop, value.step), {}, ref)
    start = "" if value.start is None else render(value.start, ref)
    stop = "" if value.stop is None else render(value.stop, ref)
    text = f"{start}:{stop}"
    if value.step is not None:
        text += ":" + render(value.step, ref)
    return text


def doc_text(text: str) -> str:
    """Text safe inside a generated docstring or comment: anything unusual becomes '?'."""
    return re.sub(r"[^A-Za-z0-9_.,:=()\[\]{}/ +<>-]", "?", text)
