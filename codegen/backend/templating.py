"""The Jinja environment: strict, whitespace-controlled, and closed to raw text.

Templates only lay out what `codegen.backend.literals` rendered. The `finalize` hook sees
every `{{ ... }}` value and refuses a string that is not a `Literal`, `DocText` or
`Expr` (or a bare identifier, which can neither close a string nor start a line):
a layer name passed to a template without rendering fails the generation instead
of reaching the file.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from codegen.backend.literals import DocText, Expr, Literal


class UnrenderedText(TypeError):
    """A template was given text that did not go through the rendering layer."""


def templates_dir() -> Path:
    """`codegen/templates` in an installed wheel, `templates/` beside the package in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("stitchgen's templates are missing from this installation")


def only_rendered(value: Any) -> Any:
    """Jinja's finalize: what a `{{ ... }}` may print."""
    if isinstance(value, (Literal, DocText, Expr)):
        return value
    if isinstance(value, str):
        if value.isidentifier() and value.isascii():
            return value
        raise UnrenderedText(f"template value {value[:60]!r} was not rendered by codegen.backend.literals")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise UnrenderedText(f"template value of type {type(value).__name__} was not rendered by codegen.backend.literals")


def _build_source(fn: str, kind: str, source_var: str, kwargs_var: str, builder_dir_literal: Literal) -> Expr:
    """The `build_*_source(weights)` function of a port or training script, for one source kind."""
    return render_template(
        "_build_source.py.jinja",
        fn=fn,
        kind=kind,
        source_var=source_var,
        kwargs_var=kwargs_var,
        builder_dir_literal=builder_dir_literal,
    )


@functools.cache
def environment() -> jinja2.Environment:
    from codegen.runtime import inline

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=only_rendered,
    )
    env.globals["runtime"] = lambda name: Expr(inline(name))  # a runtime module's code, inlined
    env.globals["build_source"] = _build_source
    return env


def render_template(name: str, **context: object) -> Expr:
    """A template's output: generator-written code, made only of rendered values."""
    return Expr(environment().get_template(name).render(**context))
