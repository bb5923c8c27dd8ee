"""One generation run: load -> introspect -> render -> format, one method per output file.

Nothing here touches the disk except reading the source; `codegen.write`
decides what happens to the returned texts.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codegen import __version__
from codegen.custom import class_source
from codegen.emit import emit_functions
from codegen.emit_graph import NAME_OP_HELPER
from codegen.format import format_source
from codegen.header import PLACEHOLDER, stamp
from codegen.introspect import Introspection, introspect
from codegen.ir import Graph, map_refs
from codegen.literals import doc_text, render
from codegen.load import custom_objects, load_model
from codegen.naming import Namespace
from codegen.renaming import rename_structurally
from codegen.spec import ModelSource, ModelSpec
from codegen.templating import render_template


def sort_imports(lines: set[str]) -> list[str]:
    """Imports as isort writes them: `import x` lines, then merged `from x import a, b`."""
    plain = sorted(line for line in lines if line.startswith("import "))
    merged: dict[str, set[str]] = {}
    for line in lines:
        if line.startswith("from "):
            module, names = line[len("from ") :].split(" import ")
            merged.setdefault(module, set()).add(names)
    froms = [f"from {module} import {', '.join(sorted(merged[module]))}" for module in sorted(merged)]
    return plain + froms


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


def relative_to(path: Path, out_dir: Path) -> str:
    """`path` as the emitted scripts record it: relative to their own folder, POSIX separators.

    A checked-in set of files keeps working when the repository moves, and the
    scripts open the path relative to `__file__`, not to the working directory.
    """
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def source_paths(source: ModelSource, out_dir: Path) -> dict[str, str]:
    """What a port or training script records of a source: the source, its default weights, the builder folder.

    Spec paths are resolved relative to the spec (ModelSource.base_dir), then recorded
    relative to `out_dir`, where the scripts will live.
    """
    return {
        "source": relative_to(source.path, out_dir) if source.kind == "file" else source.source,
        "weights": relative_to(source.weights_path, out_dir) if source.weights_is_file else source.weights,
        "builder_dir": relative_to(source.base_dir, out_dir),
    }


def verify_inputs(graph: Graph) -> Any:
    """(shape without batch, dtype) per model input, structured like the model's inputs."""
    calls = graph.call_by_id()

    def spec(ref):
        info = calls[ref.call].outputs[ref.index]
        shape = tuple(32 if d is None else d for d in info.shape[1:])
        return (shape, info.dtype)

    structure = map_refs(graph.inputs, spec)
    return list(structure) if isinstance(structure, tuple) and not _is_leaf(structure) else structure


def _is_leaf(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str)


def layer_map(graph: Graph, target_prefix="", source_prefix=(), names_prefix="") -> list[tuple]:
    """Rows (target path, source index path, source name path, class, shapes) of weighted layers.

    Paths into nested models join names with "/", which Keras 3 forbids in layer names.
    """
    rows: list[tuple] = []
    for op in graph.layers():
        target = target_prefix + op.name
        source = source_prefix + (op.layer_index,)
        names = names_prefix + (op.source_name or op.name)
        if op.kind == "model" and op.subgraph is not None:
            rows += layer_map(op.subgraph, target + "/", source, names + "/")
        elif op.weight_shapes and not op.fresh:
            rows.append((target, source, names, op.class_name, op.weight_shapes))
    return rows


@dataclass
class ModelProject:
    """Everything generated for one single-model spec."""

    spec: ModelSpec
    introspection: Introspection

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelProject:
        model = load_model(spec.model)
        return cls(spec, introspect(model, custom_objects(spec.model)))

    @property
    def graph(self) -> Graph:
        return self.introspection.graph

    @functools.cached_property
    def emit_graph(self) -> Graph:
        """The graph as emitted: in the factored style, counter-made names become structural."""
        if self.spec.style == "factored":
            return rename_structurally(self.graph)
        return self.graph

    def files(self) -> dict[str, str]:
        name = self.spec.name
        return {f"{name}.py": self._build_model_module(), f"{name}_port_weights.py": self._build_port_script()}

    def _common(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "source_doc": doc_text(self.spec.model.describe()),
            "regenerate_doc": doc_text(regenerate_command(self.spec)),
            "hash_line": PLACEHOLDER,
        }

    def _build_model_module(self) -> str:
        module_names = Namespace(reserved={"keras", "layers", "ops", "SOURCE", "INPUT_SHAPE", "_name_op"})
        module_names.reserve("build_model")
        doc = "The model with fresh weights; load ported ones with model.load_weights(...)."
        emitted, helpers = emit_functions(module_names, [(self.emit_graph, "build_model", doc, None)], self.spec.style)
        functions = helpers + emitted.functions

        classes = []
        imports = {"import keras"}
        known = set(self.introspection.custom_classes)
        for cls, cls_name in self.introspection.custom_classes.items():
            src = class_source(cls, cls_name, package=self.spec.name, emitted=known)
            classes.append(src.source)
            imports.update(src.imports)
        if _uses_layers(self.graph):
            imports.add("from keras import layers")
        if emitted.uses_ops:
            imports.add("from keras import ops")

        constants = [("SOURCE", render(self.spec.model.source))]
        shapes = verify_inputs(self.graph)
        if _is_leaf(shapes):
            constants.append(("INPUT_SHAPE", render(tuple(self._input_shape()))))
        text = render_template(
            "model.py.jinja",
            title=f"Standalone Keras source for {self.spec.name}.",
            weights_doc=doc_text(f"python {self.spec.name}_port_weights.py --output {self.spec.name}.weights.h5"),
            imports=sort_imports(imports),
            constants=constants,
            custom_classes=classes,
            custom_names=[(render(n), n) for n in self.introspection.custom_classes.values()],
            helpers=[NAME_OP_HELPER.strip()] if emitted.needs_name_op else [],
            functions=functions,
            **self._common(),
        )
        return stamp(format_source(text))

    def _input_shape(self) -> tuple:
        ref = map_refs(self.graph.inputs, lambda r: r)
        ref = ref[0] if isinstance(ref, (list, tuple)) else ref
        return self.graph.call_by_id()[ref.call].outputs[0].shape[1:]

    def _build_port_script(self) -> str:
        source: ModelSource = self.spec.model
        paths = source_paths(source, self.spec.output_dir)
        weights_help = {
            "application": '"imagenet", a weights file, or "none"',
            "file": '"saved" (the weights in the model file), a weights file, or "none"',
            "builder": 'a weights file, or "none"',
        }[source.kind]
        text = render_template(
            "port_weights.py.jinja",
            module=self.spec.name,
            module_literal=render(self.spec.name),
            kind=source.kind,
            source_literal=render(paths["source"]),
            kwargs_literal=render(source.kwargs),
            default_weights_literal=render(paths["weights"]),
            layer_map_rows=[render(row) for row in layer_map(self.emit_graph)],
            builder_dir_literal=render(paths["builder_dir"]),
            weights_help_doc=weights_help.replace('"', ""),
            **self._common(),
        )
        return stamp(format_source(text))


def _uses_layers(graph: Graph) -> bool:
    for op in graph.ops.values():
        if op.kind == "layer" and op.callee.startswith("layers."):
            return True
        if op.subgraph is not None and _uses_layers(op.subgraph):
            return True
    return False
