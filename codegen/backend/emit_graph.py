"""Turn an IR graph into straight-line Keras statements (the `flat` style).

Like torch.fx's code generator: calls are walked in topological order, every
output gets a unique variable named after its layer, and every value from the
model is rendered through `codegen.backend.literals`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from codegen.backend.literals import DocText, Expr, doc_text, render, render_call, render_subscript
from codegen.frontend.publicapi import to_snake_case
from codegen.ir.graph import Call, Graph, Op, TensorRef, call_counts, map_refs, tensor_refs
from codegen.ir.naming import Namespace, to_identifier

NAME_OP_HELPER = '''
def _name_op(tensor, name):
    """Give the keras.ops operation that made `tensor` its source name.

    keras.ops functions take no `name`, and the automatic one could collide
    with a layer of this model that is explicitly named like it.
    """
    tensor._keras_history.operation.name = name
    return tensor
'''


@dataclass
class Function:
    """One `build_*` function of the generated module."""

    name: str
    doc: str
    body: list[str]
    params: list[str] = field(default_factory=list)

    @property
    def signature(self) -> Expr:
        """The parameter list as written in `def name(...)`: identifiers, some with rendered defaults."""
        for param in self.params:
            if param != "*" and not param.partition("=")[0].isidentifier():
                raise ValueError(f"parameter {param!r} of {self.name} is not an identifier")
        return Expr(", ".join(self.params))

    @property
    def docstring(self) -> DocText:
        return doc_text(self.doc)

    @property
    def lines(self) -> list[Expr]:
        """The body's statements: the emitters build them from rendered values only."""
        return [Expr(statement) for statement in self.body]


@dataclass
class EmittedGraph:
    functions: list[Function] = field(default_factory=list)  # nested builders first
    needs_name_op: bool = False
    uses_ops: bool = False


class GraphEmitter:
    """Emit one builder function per (sub)graph; nested models get builders of their own."""

    def __init__(self, module_names: Namespace) -> None:
        self.module_names = module_names
        self.result = EmittedGraph()
        self._call_counts: dict[int, Counter[str]] = {}

    def emit(self, graph: Graph, function_name: str, doc: str) -> str:
        body = self._body(graph)
        self.result.functions.append(Function(function_name, doc, body))
        return function_name

    def emit_part(self, graph: Graph, function_name: str, doc: str, params: list[str]) -> str:
        """A function taking the graph's input tensors as `params` and returning its outputs.

        Stitched models call these parts to build one flat functional model.
        """
        body = self._body(graph, params)
        self.result.functions.append(Function(f"{function_name}", doc, body, params))
        return function_name

    def _body(self, graph: Graph, params: list[str] | None = None) -> list[str]:
        for op in graph.ops.values():  # builder names first, so no local variable shadows one
            if op.kind == "model":
                self.module_names.name("build_" + op.name, key=(id(graph), op.name))
        names = Namespace(
            reserved={"keras", "layers", "ops", "model"} | set(self.module_names.used()) | set(params or ()),
            parent=self.module_names,
        )
        variables: dict[TensorRef, str] = {}
        if params is not None:
            for param, input_ref in zip(params, tensor_refs(graph.inputs)):
                variables[input_ref] = param
        objects: dict[str, str] = {}
        body: list[str] = []
        collide = op_name_collisions(graph)

        def ref(r: TensorRef) -> str:
            return variables[r]

        if graph.kind == "sequential":
            return self._sequential_body(graph)

        for call in graph.calls:
            op = graph.ops[call.op]
            if op.kind == "input" and params is not None:
                continue
            outputs = [names.name(_var_hint(call, i)) for i in range(len(call.outputs))]
            target = ", ".join(outputs)
            if op.kind == "input":
                body.append(f"{target} = {render_call(op.callee, (), op.args)}")
            elif op.kind == "op":
                body.append(f"{target} = {render_op(op, call, op.args, ref, collide, self.result)}")
            else:
                callee = self._layer_object(graph, op, names, objects, body)
                body.append(f"{target} = {render_call(callee, call.args, call.kwargs, ref)}")
            for i, var in enumerate(outputs):
                variables[TensorRef(call.id, i)] = var

        return body + function_end(graph, variables, params is not None)

    def _calls_of(self, graph: Graph) -> Counter[str]:
        """Calls per op of `graph`, counted once per graph (not once per layer)."""
        if id(graph) not in self._call_counts:
            self._call_counts[id(graph)] = call_counts(graph.calls)
        return self._call_counts[id(graph)]

    def _layer_object(self, graph: Graph, op: Op, names: Namespace, objects: dict[str, str], body: list[str]) -> str:
        """The expression to call: inline constructor, or a variable for shared layers and models."""
        if op.name in objects:
            return objects[op.name]
        constructor = self.constructor(op, graph)
        shared = self._calls_of(graph)[op.name] > 1
        if not shared and op.kind != "model":
            return constructor
        var = names.name(op.name + "_layer" if op.kind == "layer" else op.name)
        body.append(f"{var} = {constructor}")
        objects[op.name] = var
        return var

    def constructor(self, op: Op, graph: Graph) -> str:
        if op.kind == "model":
            assert op.subgraph is not None
            builder = self.module_names.name("build_" + op.name, key=(id(graph), op.name))
            self.emit(op.subgraph, builder, f"The nested model {doc_text(op.name)}.")
            return f"{builder}()"
        positional = [op.args[k] for k in op.positional]
        keywords = {k: v for k, v in op.args.items() if k not in op.positional}
        return render_call(op.callee, positional, keywords)

    def _sequential_body(self, graph: Graph) -> list[str]:
        items = []
        for call in graph.calls:
            op = graph.ops[call.op]
            items.append(render_call(op.callee, (), op.args) if op.kind == "input" else self.constructor(op, graph))
        listing = "[" + ", ".join(items) + ",]"
        model = f"keras.Sequential({listing}, name={render(graph.name)})"
        if graph.trainable:
            return [f"return {model}"]
        return [f"model = {model}", "model.trainable = False", "return model"]


def render_op(op: Op, call: Call, arguments: dict, ref, collide: set[str], result: EmittedGraph) -> str:
    """A `keras.ops` call (or a subscript) as an expression, named through `_name_op` where its name could collide."""
    result.uses_ops = True
    if op.callee == "[]":
        expr = f"{render(call.args[0], ref)}[{render_subscript(call.args[1], ref)}]"
    else:
        expr = render_call(op.callee, call.args, {**call.kwargs, **arguments}, ref)
    if op.name in collide:
        result.needs_name_op = True
        expr = f"_name_op({expr}, {render(op.name)})"
    return expr


def function_end(graph: Graph, variables: dict[TensorRef, str], part: bool) -> list[str]:
    """The last statements of a builder: the outputs of a part, or the `keras.Model` (frozen when the source was)."""
    inputs = render(map_refs(graph.inputs, lambda r: Expr(variables[r])))
    outputs = render(map_refs(graph.outputs, lambda r: Expr(variables[r])))
    if part:
        return [f"return {outputs}"]
    model = f"keras.Model(inputs={inputs}, outputs={outputs}, name={render(graph.name)})"
    if graph.trainable:
        return [f"return {model}"]
    return [f"model = {model}", "model.trainable = False", "return model"]


def _var_hint(call: Call, index: int) -> str:
    base = call.op if index == 0 else f"{call.op}_{index}"
    return to_identifier(base)


def op_name_collisions(graph: Graph) -> set[str]:
    """Ops whose automatic name could equal an explicit layer name of this graph."""
    layer_names = {op.name for op in graph.ops.values() if op.kind != "op"}
    risky = set()
    for op in graph.ops.values():
        if op.kind != "op":
            continue
        prefix = to_snake_case(op.class_name)
        pattern = re.compile(re.escape(prefix) + r"(_\d+)?")
        if any(pattern.fullmatch(name) for name in layer_names):
            risky.add(op.name)
    return risky
