"""The Jinja environment: strict, whitespace-controlled, templates shipped in the wheel."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2


def templates_dir() -> Path:
    """`codegen/templates` in an installed wheel, `templates/` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("stitchgen's templates are missing from this installation")


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
    )
    env.globals["runtime"] = inline  # {{ runtime("porting") }}: a runtime module's code, inlined
    return env


def render_template(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
