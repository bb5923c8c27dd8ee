"""The back end every generated set goes through: module parts, template, black, stamps.

`ModelProject` (one model) and `StitchProject` (a hybrid) decide *what* their files
say; this module decides *how* a file is put together, once for both:

- `module_parts`: the imports a module's code uses and the custom classes it carries;
- `assemble_set`: drafts the model module with the set placeholder, formats it with
  black, derives the set token from it, then renders each script with that token,
  formats it, and stamps every file with its content hash.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codegen import __version__
from codegen.backend.format import format_source
from codegen.backend.header import PLACEHOLDER, SET_PLACEHOLDER, SET_PREFIX, fill_set_token, stamp, token_of
from codegen.backend.literals import Expr, doc_text, render
from codegen.frontend.custom import class_source
from codegen.ir.graph import Graph


def sort_imports(lines: Iterable[str]) -> list[Expr]:
    """Imports as isort writes them: `import x` lines, then merged `from x import a, b`."""
    lines = set(lines)
    plain = sorted(line for line in lines if line.startswith("import "))
    merged: dict[str, set[str]] = {}
    for line in lines:
        if line.startswith("from "):
            module, names = line[len("from ") :].split(" import ")
            merged.setdefault(module, set()).add(names)
    froms = [f"from {module} import {', '.join(sorted(merged[module]))}" for module in sorted(merged)]
    return [Expr(line) for line in plain + froms]


def uses_layers(graph: Graph) -> bool:
    """True when the graph (or a nested one) calls a `keras.layers` class."""
    for op in graph.ops.values():
        if op.kind == "layer" and op.callee.startswith("layers."):
            return True
        if op.subgraph is not None and uses_layers(op.subgraph):
            return True
    return False


@dataclass
class ModuleParts:
    """What the top of a generated model module holds besides its functions."""

    imports: list[Expr] = field(default_factory=list)
    classes: list[Expr] = field(default_factory=list)
    custom_names: list[tuple[str, Expr]] = field(default_factory=list)  # (name literal, class name)


def module_parts(graphs: Iterable[Graph], uses_ops: bool, customs: dict[type, str], package: str) -> ModuleParts:
    """Imports fed by what the code uses, and the custom classes' source (with their imports)."""
    graphs = list(graphs)
    imports = {"import keras"}
    classes = []
    for cls, cls_name in customs.items():
        source = class_source(cls, cls_name, package=package, emitted=set(customs))
        classes.append(Expr(source.source))
        imports.update(source.imports)
    if any(uses_layers(graph) for graph in graphs):
        imports.add("from keras import layers")
    if uses_ops:
        imports.add("from keras import ops")
    names = [(render(name), Expr(name)) for name in customs.values()]
    return ModuleParts(sort_imports(imports), classes, names)


def project_root(path: Path) -> Path:
    for parent in [path.resolve().parent, *path.resolve().parents]:
        if (parent / "pyproject.toml").exists() or (parent / ".git").exists():
            return parent
    return path.resolve().parent


def regenerate_command(spec: Any) -> str:
    """The command that regenerates these bytes in the same place, run from the project root.

    Paths are relative to the project root (machine independent); `--output-dir` and
    `--style` appear when they overrode the spec's own keys.
    """
    root = project_root(spec.spec_path)
    command = f"stitchgen generate {Path(os.path.relpath(spec.spec_path.resolve(), root)).as_posix()}"
    if spec.output_dir_given:
        command += f" --output-dir {Path(os.path.relpath(spec.output_dir.resolve(), root)).as_posix()}"
    return command if spec.style == spec.declared_style else f"{command} --style {spec.style}"


def header_context(spec: Any, token: str | None) -> dict[str, Any]:
    """What every template's header and set check need; `token` is None while drafting the module."""
    command = regenerate_command(spec)
    return {
        "version": doc_text(__version__),
        "regenerate_doc": doc_text(command),
        "regenerate_literal": render(command),
        "hash_line": Expr(PLACEHOLDER),
        "set_line": Expr(SET_PLACEHOLDER if token is None else SET_PREFIX + token),
        "set_literal": render(token),
    }


Draft = Callable[[str | None], str]  # set token (None for the module itself) -> template output


def assemble_set(module_file: str, module: Draft, scripts: dict[str, Draft]) -> dict[str, str]:
    """File name -> final text for a model module and the scripts that import it."""
    draft = format_source(module(None))
    token = token_of(draft)
    files = {module_file: stamp(fill_set_token(draft, token))}
    for name, script in scripts.items():
        files[name] = stamp(format_source(script(token)))
    return files
