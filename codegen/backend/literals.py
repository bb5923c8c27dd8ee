"""The one rendering layer: every text that reaches a generated file is made here.

It has one mode per context, and a type per mode:

- `Literal` (`render`, `render_call`): a Python literal or call; `repr` is the only
  escaping used for strings, so no layer name or config string can leave its quotes;
- `DocText` (`doc_text`): text inside a docstring or comment; everything but a small
  safe alphabet becomes `?`, so it can neither close the string nor start a line;
- `Expr`: code the generator wrote itself (statements, imports, inlined runtime).

The Jinja environment (`codegen.backend.templating`) refuses any other string, except a bare
identifier, so a raw name cannot reach a template by mistake.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable
from typing import Any

from codegen.errors import StitchgenError
from codegen.ir.graph import ObjectSpec, TensorRef


class Expr(str):
    """A piece of code written by the generator itself, rendered verbatim."""


class Literal(str):
    """A value rendered as Python source by `render`: safe wherever an expression goes."""


class DocText(str):
    """Text made safe for a docstring or comment by `doc_text`."""


def render(value: Any, ref: Callable[[TensorRef], str] | None = None) -> Literal:
    """Render `value` as Python source. `ref` names the variable for a TensorRef."""
    return Literal(_render(value, ref))


def _render(value: Any, ref: Callable[[TensorRef], str] | None = None) -> str:
    if isinstance(value, (Expr, Literal)):  # already code
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
) -> Literal:
    """`callee(a, b, key=value)` with every argument rendered as a literal."""
    parts = [render(v, ref) for v in positional]
    for key, value in keywords.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise StitchgenError(
                f"{callee}: config key {key!r} is not a Python identifier, so it cannot be written as a "
                "keyword argument; rename it in the layer's get_config()"
            )
        parts.append(f"{key}={render(value, ref)}")
    return Literal(f"{callee}(" + ", ".join(parts) + ")")


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


def render_fstring(prefix: str, index: Expr, suffix: str) -> Literal:
    """`f"<prefix>{index}<suffix>"`: model text around a counter the generator wrote.

    Braces in the text are doubled (literal braces in an f-string) and `repr` escapes
    the rest, so only `index` is evaluated.
    """
    text = (
        prefix.replace("{", "{{").replace("}", "}}") + "{" + index + "}" + suffix.replace("{", "{{").replace("}", "}}")
    )
    return Literal("f" + repr(text))


_UNSAFE_IN_DOC = re.compile(r"[^A-Za-z0-9_.,:;=()\[\]{}/ +<>'`!?#*%&@$^|~-]")


def doc_text(text: str) -> DocText:
    """Text safe inside a generated docstring or comment: anything unusual becomes '?'.

    Printable ASCII only, without the double quote and the backslash: no character
    left can end a docstring, start a line, or begin an escape.
    """
    return DocText(_UNSAFE_IN_DOC.sub("?", text))
