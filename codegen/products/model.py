"""One generation run: load -> introspect -> render -> format, one method per output file.

Nothing here touches the disk except reading the source; `codegen.write`
decides what happens to the returned texts.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codegen.backend.assemble import assemble_set, header_context, module_parts
from codegen.backend.emit import emit_functions
from codegen.backend.emit_graph import NAME_OP_HELPER
from codegen.backend.literals import Expr, doc_text, render
from codegen.backend.templating import render_template
from codegen.frontend.introspect import Introspection, introspect
from codegen.frontend.load import custom_objects, load_model
from codegen.frontend.spec import ModelSource, ModelSpec
from codegen.ir.graph import Graph, map_refs, tensor_refs
from codegen.ir.naming import Namespace
from codegen.planning.renaming import rename_structurally


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


# layers whose arguments hold a size that only fits the source's input size
_FIXED_SIZE = {"Flatten", "Reshape", "Resizing", "CenterCrop", "RandomCrop"}


def size_agnostic(graph: Graph) -> bool:
    """True when the model builds at any input size: `build_model(input_shape=...)` can take one.

    Convolutions, pooling, global pooling and a Dense on the pooled features work at
    any size; a Flatten (then Dense) or a Reshape holds the source's size, and nested
    models are not looked into. Custom layers are taken to be size-agnostic, as the
    elementwise ones of keras.applications are.
    """
    if graph.kind != "functional":
        return False
    for op in graph.ops.values():
        if op.kind == "model" or op.class_name in _FIXED_SIZE:
            return False
        if op.kind == "op" and "reshape" in op.callee:
            return False
    return True


def _input_shape_by_name(graph: Graph, shape: tuple, name: Expr) -> Graph:
    """`graph` whose single `keras.Input` says `shape=INPUT_SHAPE` (or `input_shape`): each shape written once."""
    if graph.kind != "functional":
        return graph
    (ref,) = tensor_refs(graph.inputs)
    op = graph.ops[graph.call_by_id()[ref.call].op]
    if op.kind != "input" or tuple(op.args.get("shape") or ()) != shape:
        return graph
    ops = dict(graph.ops)
    ops[op.name] = dataclasses.replace(op, args={**op.args, "shape": name})
    return dataclasses.replace(graph, ops=ops)


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
        return assemble_set(
            f"{name}.py", self._build_model_module, {f"{name}_port_weights.py": self._build_port_script}
        )

    def _common(self, token: str | None) -> dict[str, Any]:
        return {"source_doc": doc_text(self.spec.model.describe()), **header_context(self.spec, token)}

    def _build_model_module(self, token: str | None) -> str:
        module_names = Namespace(reserved={"keras", "layers", "ops", "SOURCE", "INPUT_SHAPE", "_name_op"})
        module_names.reserve("build_model")
        doc = "The model with fresh weights; load ported ones with model.load_weights(...)."
        constants = [("SOURCE", render(self.spec.model.source))]
        graph = self.emit_graph
        resizable = False
        if _is_leaf(verify_inputs(self.graph)):
            constants.append(("INPUT_SHAPE", render(tuple(self._input_shape()))))
            resizable = size_agnostic(graph)
            shape = Expr("input_shape" if resizable else "INPUT_SHAPE")
            graph = _input_shape_by_name(graph, tuple(self._input_shape()), shape)
        if resizable:
            module_names.reserve("input_shape")
            doc = "The model with fresh weights for inputs of `input_shape`; load ported ones with load_weights(...)."
        emitted, helpers = emit_functions(module_names, [(graph, "build_model", doc, None)], self.spec.style)
        if resizable:
            (build,) = [f for f in emitted.functions if f.name == "build_model"]
            build.params = ["input_shape=INPUT_SHAPE"]
        functions = helpers + emitted.functions
        parts = module_parts([self.graph], emitted.uses_ops, self.introspection.custom_classes, self.spec.name)
        return render_template(
            "model.py.jinja",
            title=doc_text(f"Standalone Keras source for {self.spec.name}."),
            weights_doc=doc_text(f"python {self.spec.name}_port_weights.py --output {self.spec.name}.weights.h5"),
            imports=parts.imports,
            constants=constants,
            custom_classes=parts.classes,
            custom_names=parts.custom_names,
            helpers=[Expr(NAME_OP_HELPER.strip())] if emitted.needs_name_op else [],
            functions=functions,
            **self._common(token),
        )

    def _input_shape(self) -> tuple:
        ref = map_refs(self.graph.inputs, lambda r: r)
        ref = ref[0] if isinstance(ref, (list, tuple)) else ref
        return self.graph.call_by_id()[ref.call].outputs[0].shape[1:]

    def _build_port_script(self, token: str | None) -> str:
        source: ModelSource = self.spec.model
        paths = source_paths(source, self.spec.output_dir)
        weights_help = {
            "application": '"imagenet", a weights file, or "none"',
            "file": '"saved" (the weights in the model file), a weights file, or "none"',
            "builder": 'a weights file, or "none"',
        }[source.kind]
        return render_template(
            "port_weights.py.jinja",
            module=self.spec.name,
            module_literal=render(self.spec.name),
            kind=source.kind,
            source_literal=render(paths["source"]),
            kwargs_literal=render(source.kwargs),
            default_weights_literal=render(paths["weights"]),
            layer_map_rows=[render(row) for row in layer_map(self.emit_graph)],
            builder_dir_literal=render(paths["builder_dir"]),
            weights_help_doc=doc_text(weights_help.replace('"', "")),
            weights_help_literal=render(weights_help),
            **self._common(token),
        )
