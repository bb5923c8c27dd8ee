"""A stitched hybrid: head of one network -> adapter -> tail of another.

Validates the cut and start against the frontier analysis, slices both IRs,
renames colliding tail layers, designs the adapter, and renders the hybrid
module and its port script.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from codegen.backend.assemble import assemble_set, header_context, module_parts
from codegen.backend.emit import emit_functions
from codegen.backend.emit_graph import NAME_OP_HELPER
from codegen.backend.literals import Expr, doc_text, render, render_call
from codegen.backend.templating import render_template
from codegen.errors import StitchgenError
from codegen.frontend.introspect import introspect
from codegen.frontend.load import custom_objects, load_model
from codegen.frontend.preprocess import check_preprocess, default_preprocess
from codegen.frontend.spec import ModelSource, StitchSpec
from codegen.ir.graph import Graph, TensorInfo, tensor_refs
from codegen.ir.naming import Namespace
from codegen.planning.adapter import (
    ENCODER,
    TRANSMISSION,
    TRANSMISSION_CLASSES,
    TRANSMISSION_NAMES,
    code_info,
    design_adapter,
    split_bottleneck,
    transmitted_bytes,
)
from codegen.planning.blocks import dfs_order, split_blocks
from codegen.planning.classifier import NewClassifier, replace_classifier
from codegen.planning.cuts import Crossing, CutAnalysis
from codegen.planning.renaming import structural_names
from codegen.planning.slicing import rename_ops, slice_head, slice_tail, tail_input_names
from codegen.products.model import layer_map, source_paths
from codegen.runtime import inline

_POST_ACTIVATION = {"ReLU", "ELU", "LeakyReLU", "PReLU"}


def _shape(info: TensorInfo) -> str:
    return "(" + ", ".join(str(d) for d in info.shape[1:]) + ")"


def _resolve(analysis: CutAnalysis, value: int | str, where: str) -> int:
    try:
        return analysis.resolve(value)
    except ValueError as exc:
        raise StitchgenError(f"{where}: {exc}") from None


def _describe(analysis: CutAnalysis, position: int | None) -> str:
    if position is None:
        return "none"
    (c,) = analysis.frontier(position)
    return f"{position} ({analysis.layers[position].name}, {_shape(c.info)})"


def is_post_activation(graph: Graph, crossing: Crossing) -> bool:
    op = graph.ops[crossing.producer]
    if op.class_name in _POST_ACTIVATION:
        return True
    activation = op.args.get("activation")
    return op.class_name == "Activation" and activation in ("relu", "relu6", "swish", "silu", "gelu", "elu")


def _structural(full: Graph, part: Graph) -> tuple[Graph, dict[str, str]]:
    """`part` with the structural names computed on the whole source, so they do not depend on the cut.

    Also returns the whole map (source name -> structural name), so that headers and
    docstrings can speak of any source layer, inside the part or not, as the code does.
    """
    mapping = structural_names(full, split_blocks(full, dfs_order(full)))
    return rename_ops(part, {old: new for old, new in mapping.items() if old in part.ops}), mapping


def _inputs_named_as_code(graph: Graph, crossings: list[Crossing], code_name) -> Graph:
    """The tail's inputs named after their producers as the code names them (`<producer>_input`)."""
    old = [graph.ops[graph.call_by_id()[ref.call].op].name for ref in tensor_refs(graph.inputs)]
    others = set(graph.ops) - set(old)
    new = tail_input_names([dataclasses.replace(c, producer=code_name(c.producer)) for c in crossings], others)
    return rename_ops(graph, {a: b for a, b in zip(old, new) if a != b})


@dataclass
class Part:
    source: ModelSource
    graph: Graph  # the full source graph
    analysis: CutAnalysis
    custom: dict[type, str]


def _load_part(source: ModelSource) -> Part:
    intro = introspect(load_model(source), custom_objects(source))
    return Part(source, intro.graph, CutAnalysis(intro.graph), intro.custom_classes)


@dataclass
class StitchProject:
    spec: StitchSpec
    head: Part
    tail: Part
    head_graph: Graph
    tail_graph: Graph
    adapter_graph: Graph
    cut: int
    start: int
    head_crossing: Crossing
    tail_crossings: list[Crossing]
    renamed: dict[str, str]
    classifier: NewClassifier | None = None  # [tail] classes: the new classifier
    # per side, source layer name -> the name the generated code uses (structural names, collisions renamed);
    # headers and docstrings use these, the port tables keep the source names
    code_names: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def code_name(self, side: str, source_name: str) -> str:
        return self.code_names.get(side, {}).get(source_name, source_name)

    def trainable_from(self) -> str | None:
        """[tail] trainable_from as the hybrid's layer name: that tail layer and every later one train."""
        value = self.spec.tail_trainable_from
        if value is None:
            return None
        position = _resolve(self.tail.analysis, value, "[tail] trainable_from")
        name = self.code_name("tail", self.tail.analysis.layers[position].name)
        if position < self.start or name not in self.tail_graph.ops:
            raise StitchgenError(
                f"[tail] trainable_from {value!r} is not in the tail, which starts at layer {self.start} "
                f"({self.tail.analysis.layers[self.start].name}); name a layer at or after it"
            )
        return name

    @classmethod
    def from_spec(cls, spec: StitchSpec) -> StitchProject:
        head = _load_part(spec.head)
        tail = _load_part(spec.tail)
        cut = _resolve(head.analysis, spec.cut, "[head] cut")
        start = _resolve(tail.analysis, spec.start, "[tail] start")

        crossing = head.analysis.frontier(cut)
        if len(crossing) != 1:
            before, after = head.analysis.nearest_single_cuts(cut)
            names = ", ".join(f"{c.producer} {_shape(c.info)}" for c in crossing)
            raise StitchgenError(
                f"[head] cut {cut} ({head.analysis.layers[cut].name}) is crossed by {len(crossing)} tensors "
                f"({names}); the head must end in one tensor: nearest valid cuts are "
                f"{_describe(head.analysis, before)} before and {_describe(head.analysis, after)} after"
            )
        first_real = min(
            (op.layer_index for op in tail.analysis.layers if op.kind != "input"), default=tail.analysis.size
        )
        if start < first_real or tail.analysis.layers[start].kind == "input":
            raise StitchgenError(
                f"[tail] start {start} is at or before the input; the tail must start at layer {first_real} or later"
            )
        head_graph = slice_head(head.analysis, cut, "head")
        tail_graph, tail_crossings = slice_tail(tail.analysis, start, "tail")
        head_names: dict[str, str] = {}
        tail_names: dict[str, str] = {}
        if spec.style == "factored":
            head_graph, head_names = _structural(head.graph, head_graph)
            tail_graph, tail_names = _structural(tail.graph, tail_graph)

        taken = set(head_graph.ops)
        renamed: dict[str, str] = {}
        for name in tail_graph.ops:
            if name in taken:
                new, n = f"{name}_tail", 1
                while new in taken or new in tail_graph.ops:
                    new, n = f"{name}_tail_{n}", n + 1
                renamed[name] = new
                taken.add(new)
        tail_graph = rename_ops(tail_graph, renamed)

        def tail_code_name(source_name: str) -> str:
            structural = tail_names.get(source_name, source_name)
            return renamed.get(structural, structural)

        tail_graph = _inputs_named_as_code(tail_graph, tail_crossings, tail_code_name)
        code_names = {
            "head": {n: head_names.get(n, n) for n in (op.name for op in head.analysis.layers)},
            "tail": {n: tail_code_name(n) for n in (op.name for op in tail.analysis.layers)}
            | {c.producer: tail_code_name(c.producer) for c in tail_crossings},
        }
        classifier = None
        if spec.classes is not None:
            tail_graph, classifier = replace_classifier(tail_graph, spec.classes, taken)
        adapter = design_adapter(
            crossing[0].info,
            [c.info for c in tail_crossings],
            spec.adapter_kind,
            [is_post_activation(tail.graph, c) for c in tail_crossings],
            bottleneck=spec.bottleneck,
        )
        clash = (set(adapter.ops) - {"adapter_input"}) & (set(head_graph.ops) | set(tail_graph.ops))
        if clash:
            raise StitchgenError(f"source layers named {sorted(clash)} clash with the adapter's layer names")
        return cls(
            spec,
            head,
            tail,
            head_graph,
            tail_graph,
            adapter,
            cut,
            start,
            crossing[0],
            tail_crossings,
            renamed,
            classifier,
            code_names,
        )

    def files(self) -> dict[str, str]:
        name = self.spec.name
        scripts = {
            f"{name}_port_weights.py": self._build_port_script,
            f"{name}_train_adapter.py": self._build_train_script,
        }
        return assemble_set(f"{name}.py", self._build_hybrid_module, scripts)

    def preprocessing(self) -> tuple[str, str]:
        """(head, tail) preprocessing function paths: the spec's, else each source family's."""
        head = self.spec.head_preprocess or default_preprocess(self.spec.head)
        tail = self.spec.tail_preprocess or default_preprocess(self.spec.tail)
        return check_preprocess(head, "[head]"), check_preprocess(tail, "[tail]")

    def branches(self) -> list[tuple[str, str | None]]:
        """Per frontier tensor: the adapter's final linear layer and its output batch norm (or None)."""
        ops = self.adapter_graph.ops
        rows = []
        for i in range(len(self.tail_crossings)):
            prefix = f"adapter_{i}" if len(self.tail_crossings) > 1 else "adapter"
            linear = f"{prefix}_conv" if f"{prefix}_conv" in ops else f"{prefix}_dense"
            rows.append((linear, f"{prefix}_bn_out" if f"{prefix}_bn_out" in ops else None))
        return rows

    def _build_train_script(self, token: str | None) -> str:
        head_pre, tail_pre = self.preprocessing()
        return render_template(
            "train_adapter.py.jinja",
            module=self.spec.name,
            module_literal=render(self.spec.name),
            head_preprocess_literal=render(head_pre),
            tail_preprocess_literal=render(tail_pre),
            tail_frontier_literal=render(tuple((c.producer, c.ref.index) for c in self.tail_crossings)),
            branches_literal=render(tuple(self.branches())),
            input_bn_literal=render("adapter_bn_in" if "adapter_bn_in" in self.adapter_graph.ops else None),
            encoder_literal=render(ENCODER if self.spec.bottleneck is not None else None),
            **self._source_context(self.spec.tail, "tail"),
            **self._common(token),
        )

    def _common(self, token: str | None) -> dict[str, Any]:
        return {
            "head_doc": doc_text(
                f"{self.spec.head.describe()} layers 0..{self.cut} "
                f"({self.code_name('head', self.head.analysis.layers[self.cut].name)})"
            ),
            "tail_doc": doc_text(
                f"{self.spec.tail.describe()} layers {self.start}.. "
                f"({self.code_name('tail', self.tail.analysis.layers[self.start].name)})"
            ),
            **header_context(self.spec, token),
            **self._classes_context(),
        }

    def _classes_context(self) -> dict[str, Any]:
        """What the three files say about a new classifier ([tail] classes); nothing without one."""
        if self.classifier is None:
            return {"classifier": None}
        return {
            "classifier": self.classifier,
            "classes_literal": render(self.spec.classes),
            "class_names_literal": render(self.spec.class_names),
            "classifier_literal": render(self.classifier.layer),
            "classifier_input_literal": render(self.classifier.source_input),
            "new_top_literal": render(self.classifier.top),
            "classifier_doc": doc_text(
                f"a new {self.spec.classes}-way classifier ({self.classifier.layer}) "
                + ("after the tail features" if self.classifier.appended else "in place of the tail classifier")
            ),
        }

    def frontier_lines(self) -> list[str]:
        return [doc_text(f"{self.code_name('tail', c.producer)}: {_shape(c.info)}") for c in self.tail_crossings]

    def _build_hybrid_module(self, token: str | None) -> str:
        module_names = Namespace(
            reserved={
                "keras",
                "layers",
                "ops",
                "head_layers",
                "adapter_layers",
                "tail_layers",
                "_name_op",
                "_set_trainable",
            }
        )
        for fn in ("build_head", "build_adapter", "build_tail", "build_model"):
            module_names.reserve(fn)
        bottleneck = self.spec.bottleneck
        if bottleneck is not None:
            for fn in ("encoder_layers", "decoder_layers", "build_encoder", "build_decoder", *TRANSMISSION_NAMES):
                module_names.reserve(fn)
        tail_params = [c for c in self.tail_graph.ops if self.tail_graph.ops[c].kind == "input"]
        head_input = tensor_refs(self.head_graph.inputs)
        if len(head_input) != 1:
            raise StitchgenError("a head with several inputs is not supported yet; stitch a single-input network")
        input_op = self.head_graph.ops[self.head_graph.call_by_id()[head_input[0].call].op]
        if bottleneck is None:
            adapter_jobs = [
                (self.adapter_graph, "adapter_layers", "The adapter: one output per tail input.", ["features"])
            ]
        else:
            encoder, decoder = split_bottleneck(self.adapter_graph)
            adapter_jobs = [
                (encoder, "encoder_layers", "The phone side's encoder: the head's output to the code.", ["features"]),
                (decoder, "decoder_layers", "The server side's decoder: one output per tail input.", ["code"]),
            ]
        jobs = [
            (self.head_graph, "head_layers", "The head's layers applied to `inputs`.", ["inputs"]),
            *adapter_jobs,
            (self.tail_graph, "tail_layers", "The tail's layers applied to the frontier tensors.", tail_params),
        ]
        emitted, helpers = emit_functions(module_names, jobs, self.spec.style)
        mains = [job[1] for job in jobs]
        parts = [f for f in emitted.functions if f.name in mains]
        nested = [f for f in emitted.functions if f not in parts]

        customs = {**self.head.custom, **self.tail.custom}
        if bottleneck is not None and set(customs.values()) & set(TRANSMISSION_NAMES):
            clash = sorted(set(customs.values()) & set(TRANSMISSION_NAMES))
            raise StitchgenError(
                f"custom classes named {clash} clash with the bottleneck's transmission code; rename them"
            )
        module = module_parts(
            (self.head_graph, self.tail_graph, self.adapter_graph), emitted.uses_ops, customs, self.spec.name
        )
        tail_inputs = [  # each shape is written once, in TAIL_INPUT_SHAPES
            render_call("keras.Input", (), {"shape": Expr(f"TAIL_INPUT_SHAPES[{k}]"), "name": p})
            for k, p in enumerate(tail_params)
        ]
        return render_template(
            "hybrid.py.jinja",
            title=doc_text(f"Stitched hybrid {self.spec.name}: head -> adapter -> tail."),
            frontier=self.frontier_lines(),
            imports=module.imports,
            constants=[
                ("INPUT_SHAPE", render(tuple(input_op.args["shape"]))),
                ("HEAD_OUTPUT_SHAPE", render(tuple(self.head_crossing.info.shape[1:]))),
                ("TAIL_INPUT_SHAPES", render(tuple(tuple(c.info.shape[1:]) for c in self.tail_crossings))),
                ("HEAD_TRAINABLE", render(self.spec.head_trainable)),
                ("ADAPTER_TRAINABLE", render(self.spec.adapter_trainable)),
                ("TAIL_TRAINABLE", render(self.spec.tail_trainable)),
                ("TAIL_TRAINABLE_FROM", render(self.trainable_from())),
                *self._classes_constants(),
                *self._bottleneck_constants(),
            ],
            transmission=Expr(inline("transmission")) if bottleneck is not None else None,
            transmission_literal=render(TRANSMISSION),
            transmission_names=[(render(n), Expr(n)) for n in TRANSMISSION_CLASSES] if bottleneck is not None else [],
            custom_classes=module.classes,
            custom_names=module.custom_names,
            helpers=[Expr(NAME_OP_HELPER.strip())] if emitted.needs_name_op else [],
            functions=helpers + nested + parts,
            input_call=render_call(
                "keras.Input",
                (),
                {**{k: v for k, v in input_op.args.items() if k != "shape"}, "shape": Expr("INPUT_SHAPE")},
            ),
            tail_inputs=tail_inputs,
            partly_trainable_tail=self.classifier is not None or self.trainable_from() is not None,
            name_literal=render(self.spec.name),
            adapter_kind=doc_text(self.adapter_doc()),
            **self._common(token),
        )

    @property
    def code(self) -> TensorInfo | None:
        """What a bottleneck adapter sends (its code's shape); None for the other kinds."""
        bottleneck = self.spec.bottleneck
        return None if bottleneck is None else code_info(self.head_crossing.info, bottleneck)

    @property
    def sent_bytes(self) -> int | None:
        """Bytes per image a bottleneck adapter sends at its precision; None for the other kinds."""
        code = self.code
        return None if code is None else transmitted_bytes(code, self.spec.bottleneck.transmit)

    def adapter_doc(self) -> str:
        """The adapter line of the hybrid's docstring: the kind, and for a bottleneck what it sends."""
        bottleneck = self.spec.bottleneck
        if bottleneck is None:
            return self.spec.adapter_kind
        return (
            f"bottleneck, {bottleneck.channels} channels at stride {bottleneck.stride}, sent as {bottleneck.transmit} "
            f"({self.sent_bytes:,} bytes per image; the phone runs the head and "
            f"build_encoder(), the server build_decoder() and the tail)"
        )

    def _bottleneck_constants(self) -> list[tuple[str, str]]:
        if self.code is None:
            return []
        return [("TRANSMIT", render(self.spec.bottleneck.transmit)), ("CODE_SHAPE", render(tuple(self.code.shape[1:])))]

    def _classes_constants(self) -> list[tuple[str, str]]:
        if self.classifier is None:
            return []
        return [
            ("CLASSES", render(self.spec.classes)),
            ("CLASS_NAMES", render(self.spec.class_names)),
            ("CLASSIFIER", render(self.classifier.layer)),
        ]

    def _port_rows(self) -> list[str]:
        rows = []
        for side, graph in (("head", self.head_graph), ("tail", self.tail_graph)):
            for target, source, names, cls, shapes in layer_map(graph):
                rows.append(render((side, target, source, names, cls, shapes)))
        return rows

    def _source_context(self, source: ModelSource, prefix: str) -> dict[str, Any]:
        paths = source_paths(source, self.spec.output_dir)
        return {
            f"{prefix}_kind": source.kind,
            f"{prefix}_source_literal": render(paths["source"]),
            f"{prefix}_kwargs_literal": render(source.kwargs),
            f"{prefix}_weights_literal": render(paths["weights"]),
            f"{prefix}_builder_dir_literal": render(paths["builder_dir"]),
        }

    def _build_port_script(self, token: str | None) -> str:
        tail_inputs = self.tail.graph.call_by_id()
        tail_input_ref = tensor_refs(self.tail.graph.inputs)[0]
        tail_input_shape = tuple(32 if d is None else d for d in tail_inputs[tail_input_ref.call].outputs[0].shape[1:])
        return render_template(
            "port_hybrid.py.jinja",
            module=self.spec.name,
            module_literal=render(self.spec.name),
            layer_map_rows=self._port_rows(),
            head_output_literal=render((self.head_crossing.producer, self.head_crossing.ref.index)),
            tail_frontier_literal=render(tuple((c.producer, c.ref.index) for c in self.tail_crossings)),
            renamed_literal=render(dict(sorted(self.renamed.items()))),
            tail_input_shape_literal=render(tail_input_shape),
            **self._source_context(self.spec.head, "head"),
            **self._source_context(self.spec.tail, "tail"),
            **self._common(token),
        )
