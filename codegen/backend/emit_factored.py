"""The `factored` style: helper functions for repeated motifs, loops over runs of them.

Pipeline per module: order calls branch by branch -> split into blocks ->
group blocks by structure (helpers) -> find conv/bn/activation chains in
what is left and inside the helpers -> turn consecutive block calls whose
arguments follow the block index into `for` loops -> render with a small
register allocator, so the trunk reads `x = ...(x)` as in keras.applications.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from codegen.backend.emit_graph import Function, GraphEmitter, function_end, op_name_collisions, render_op
from codegen.backend.literals import Expr, doc_text, render, render_call
from codegen.ir.graph import Graph, TensorRef, call_counts, consumer_counts, tensor_refs
from codegen.ir.naming import Namespace, to_identifier
from codegen.planning.blocks import Block, common_stem, dfs_order, split_blocks
from codegen.planning.motifs import (
    FOLLOWERS,
    Instance,
    Loop,
    Motif,
    Name,
    Step,
    fit_loop,
    fits,
    names_fit,
    optional_tail,
    parameterize,
    pattern_name,
    role_text,
    signature,
    stem_name,
    step_of,
)

MIN_LOOP = 3
ADAPTER_BRANCH = re.compile(r"adapter_(\d+)_")  # the adapter's per-branch layer names
MAX_POSITIONAL = 2  # helper arguments passed by position; more go by keyword


@dataclass
class StepItem:
    step: Step
    comment: str | None = None
    guard: str | None = None  # a helper parameter: the step runs only when it is not None


def _merge_optional_tails(groups: dict[tuple, list], instance_of, base_of, order) -> None:
    """Fold each group whose instances are another's minus a trailing activation into that group.

    `block8_10` is `block8_1` without its final Activation: one helper with
    `activation="relu"` (None skips the layer) instead of an unrolled copy.
    """
    for key in list(groups):
        members = groups.get(key)
        short = key[:-1]
        if not members or short not in groups or short == key:
            continue
        first = instance_of(members[0])
        if not optional_tail(first.steps, base_of(members[0])):
            continue
        merged = sorted(members + groups[short], key=order)
        if not names_fit([instance_of(m) for m in merged], [base_of(m) for m in merged]):
            continue
        groups[key] = merged
        del groups[short]


@dataclass
class CallItem:
    motif: Motif
    instance: Instance
    comment: str | None = None


@dataclass
class LoopItem:
    motif: Motif
    instances: list[Instance]
    loop: Loop
    comment: str | None = None


Item = StepItem | CallItem | LoopItem


@dataclass
class _Job:
    graph: Graph
    function: str
    doc: str
    params: list[str] | None
    items: list[Item] = field(default_factory=list)


def _value(value: Any) -> Any:
    return value.code() if isinstance(value, Name) else value


def _stage_name(block: Block) -> str:
    """What a stage comment calls a block: its layers' common name (`conv2d_1`), else its stem."""
    prefix = common_stem([call.op for call in block.calls]) or ""
    return prefix if prefix and prefix.startswith(block.stem or "") else (block.stem or prefix)


def _shape_text(graph: Graph, ref: TensorRef) -> str:
    info = graph.call_by_id()[ref.call].outputs[ref.index]
    return " x ".join("?" if d is None else str(d) for d in info.shape[1:])


class FactoredEmitter(GraphEmitter):
    """Emit several graphs (a model, or a hybrid's parts) sharing one set of helpers."""

    def __init__(self, module_names: Namespace) -> None:
        super().__init__(module_names)
        self.helpers: list[Function] = []
        self._jobs: list[_Job] = []

    def add(self, graph: Graph, function_name: str, doc: str, params: list[str] | None = None) -> None:
        self._jobs.append(_Job(graph, function_name, doc, params))

    def run(self) -> None:
        functional = [j for j in self._jobs if j.graph.kind == "functional"]
        block_motifs = self._block_motifs(functional)
        # chain helpers are called inside block helpers: their names must not be shadowed
        self._block_params = {p.name for motif in block_motifs for p in motif.params}
        chain_motifs = self._chain_motifs(functional, block_motifs)
        for job in functional:
            job.items = _with_loops(job.items)
        for motif in chain_motifs + block_motifs:
            self.helpers.append(self._helper(motif))
        for job in self._jobs:
            if job.graph.kind != "functional":
                if job.params is None:
                    self.emit(job.graph, job.function, job.doc)
                else:
                    self.emit_part(job.graph, job.function, job.doc, job.params)
                continue
            body = self._main_body(job)
            self.result.functions.append(Function(job.function, job.doc, body, job.params or []))

    # ------------------------------------------------------------ discovery

    def _block_motifs(self, jobs: list[_Job]) -> list[Motif]:
        groups: dict[tuple, list[tuple[int, _Job, Block, Instance]]] = {}
        order: list[Instance] = []  # every eligible block, in source order
        per_job: dict[int, list[tuple[Block, Instance | None]]] = {}
        for job in jobs:
            graph = job.graph
            blocks = split_blocks(graph, dfs_order(graph))
            collide = op_name_collisions(graph)
            uses = call_counts(graph.calls)
            entries: list[tuple[Block, Instance | None]] = []
            for block in blocks:
                instance = None
                if _eligible(block, graph, collide, uses):
                    steps = [step_of(c, graph.ops[c.op]) for c in block.calls]
                    instance = Instance(steps, block.inputs, block.outputs, {}, block.stem)
                    key = signature(steps, block.inputs, Name(None, block.stem))
                    groups.setdefault(key, []).append((len(order), job, block, instance))
                    order.append(instance)
                entries.append((block, instance))
            per_job[id(job)] = entries

        _merge_optional_tails(groups, lambda m: m[3], lambda m: Name(None, m[3].stem), lambda m: m[0])
        motifs: list[Motif] = []
        chosen: dict[int, Motif] = {}
        for members in groups.values():
            if len(members) < 2:
                continue
            instances = [m[3] for m in members]
            hint = stem_name([i.stem for i in instances]) or pattern_name(instances[0].steps[:3]) + "_block"
            helper = self.module_names.name(hint)
            names = _param_names(self.module_names)
            motif = parameterize("block", instances, [Name(None, i.stem) for i in instances], names)
            motif.helper = helper
            motifs.append(motif)
            for inst in instances:
                chosen[id(inst)] = motif

        for job in jobs:
            items: list[Item] = []
            last_shape = None
            for block, instance in per_job[id(job)]:
                comment = None
                if block.stem and len(block.calls) > 1 and len(block.outputs) == 1:
                    shape = _shape_text(job.graph, block.outputs[0])
                    if shape != last_shape:
                        comment, last_shape = f"{_stage_name(block)}: {shape}", shape
                if instance is not None and id(instance) in chosen:
                    items.append(CallItem(chosen[id(instance)], instance, comment))
                    continue
                for k, call in enumerate(block.calls):
                    step = step_of(call, job.graph.ops[call.op])
                    items.append(StepItem(step, comment if k == 0 else None))
            job.items = items
        return motifs

    def _chain_motifs(self, jobs: list[_Job], block_motifs: list[Motif]) -> list[Motif]:
        consumers = consumer_counts(c for job in jobs for c in job.graph.calls)
        graph_outputs = {ref for job in jobs for ref in tensor_refs(job.graph.outputs)}
        shared = {op for job in jobs for op, count in call_counts(job.graph.calls).items() if count > 1}

        sequences: list[list[Item]] = [job.items for job in jobs]
        bodies = {id(m): _body_items(m) for m in block_motifs}
        sequences += list(bodies.values())

        groups: dict[tuple, list[tuple[int, int, int, Instance]]] = {}
        for seq_index, items in enumerate(sequences):
            k = 0
            while k < len(items):
                end = _chain_end(items, k, consumers, graph_outputs, shared)
                if end - k >= 2:
                    steps = [items[i].step for i in range(k, end)]
                    inputs = tensor_refs((steps[0].call.args, steps[0].call.kwargs))
                    outputs = [TensorRef(steps[-1].call.id, 0)]
                    inst = Instance(steps, inputs, outputs, {}, steps[0].name.text())
                    groups.setdefault(signature(steps, inputs, steps[0].name), []).append((seq_index, k, end, inst))
                    k = end
                else:
                    k += 1

        _merge_optional_tails(groups, lambda m: m[3], lambda m: m[3].steps[0].name, lambda m: (m[0], m[1]))
        motifs: list[Motif] = []
        replacements: dict[int, list[tuple[int, int, CallItem]]] = {}
        for members in groups.values():
            if len(members) < 2:
                continue
            instances = [m[3] for m in members]
            hint = pattern_name(instances[0].steps)
            helper = self.module_names.name(hint if hint not in self._block_params else hint + "_layers")
            motif = parameterize(
                "chain", instances, [i.steps[0].name for i in instances], _param_names(self.module_names)
            )
            motif.helper = helper
            motifs.append(motif)
            for seq_index, start, end, inst in members:
                # stage comments are placed after factoring: a comment inside the chain moves to its call
                comment = next((c for c in (sequences[seq_index][i].comment for i in range(start, end)) if c), None)
                replacements.setdefault(seq_index, []).append((start, end, CallItem(motif, inst, comment)))

        for seq_index, items in enumerate(sequences):
            spans = sorted(replacements.get(seq_index, []), key=lambda r: r[0])
            if not spans:
                continue
            new: list[Item] = []
            k = 0
            for start, end, call_item in spans:
                new += items[k:start]
                new.append(call_item)
                k = end
            new += items[k:]
            items[:] = new
        for motif in block_motifs:
            motif.body_items = bodies[id(motif)]
        return motifs

    # ------------------------------------------------------------ rendering

    def _helper(self, motif: Motif) -> Function:
        items = motif.body_items or _body_items(motif)
        reserved = {"keras", "layers", "ops"} | self.module_names.used()
        inputs = ["x"] if len(motif.inputs) == 1 else [f"x{i}" for i in range(len(motif.inputs))]
        params = _ordered_params(motif, inputs)
        allocator = _Allocator(reserved | {p.split("=")[0] for p in params}, self)
        body = allocator.emit(
            items, dict(zip(motif.inputs, inputs)), protected=set(), outputs=motif.outputs, trunk_var="x"
        )
        body.append(f"return {allocator.variables[motif.outputs[0]]}")
        first, last = motif.instances[0].stem, motif.instances[-1].stem
        if motif.kind == "block":
            doc = f"One block as in {first} .. {last} ({len(motif.instances)} in the source)."
        else:
            layers = " -> ".join(s.op.class_name for s in motif.body)
            doc = f"{layers}: written once, called from {len(motif.instances)} places in this file."
        return Function(motif.helper, doc_text(doc), body, params)

    def _main_body(self, job: _Job) -> list[str]:
        graph = job.graph
        reserved = {"keras", "layers", "ops", "model", "x"} | self.module_names.used() | set(job.params or ())
        allocator = _Allocator(reserved, self, graph)
        variables: dict[TensorRef, str] = {}
        items = job.items
        if job.params is not None:
            for param, ref in zip(job.params, tensor_refs(graph.inputs)):
                variables[ref] = param
            input_calls = {r.call for r in tensor_refs(graph.inputs)}
            items = [i for i in items if not (isinstance(i, StepItem) and i.step.call.id in input_calls)]
        protected = {r for r in tensor_refs(graph.inputs)}
        body = allocator.emit(items, variables, protected=protected, outputs=tensor_refs(graph.outputs), trunk_var="x")
        return body + function_end(graph, allocator.variables, job.params is not None)


def _body_items(motif: Motif) -> list[Item]:
    """The motif's steps as items; an optional last step is guarded by its parameter."""
    items: list[Item] = [StepItem(s) for s in motif.body]
    if motif.guard is not None:
        items[-1] = StepItem(motif.body[-1], guard=motif.guard)
    return items


def _ordered_params(motif: Motif, inputs: list[str]) -> list[str]:
    params = list(inputs) + [p.name for p in motif.required]
    params += [f"{p.name}={render(p.default)}" for p in motif.optional]
    if motif.named:
        params += ["*", "name"]
    return params


def _param_names(module_names: Namespace):
    local = Namespace(reserved={"x", "name", "keras", "layers", "ops", "i"} | module_names.used(), parent=module_names)

    def names(hint: str) -> str:
        return local.name(hint)

    return names


def _eligible(block: Block, graph: Graph, collide: set[str], uses: dict[str, int]) -> bool:
    if block.stem is None or len(block.inputs) != 1 or len(block.outputs) != 1 or len(block.calls) < 2:
        return False
    for call in block.calls:
        op = graph.ops[call.op]
        if op.kind not in ("layer", "op") or uses[op.name] > 1 or op.name in collide:
            return False
    return True


def _chain_end(items: list[Item], k: int, consumers, graph_outputs, shared) -> int:
    """One past the last step of the chain starting at `items[k]` (k + 1 if none)."""
    first = items[k]
    if not isinstance(first, StepItem) or first.guard or first.step.op.kind != "layer" or first.step.name is None:
        return k + 1
    if first.step.op.name in shared:
        return k + 1
    end = k + 1
    prev = first.step
    while end < len(items):
        item = items[end]
        if not isinstance(item, StepItem) or item.guard:
            break
        step = item.step
        out = TensorRef(prev.call.id, 0)
        refs = tensor_refs((step.call.args, step.call.kwargs))
        if (
            step.op.kind != "layer"
            or step.op.class_name not in FOLLOWERS
            or step.op.name in shared
            or step.name is None
            or not fits(step.name, first.step.name)
            or len(prev.call.outputs) != 1
            or refs != [out]
            or consumers.get(out, 0) != 1
            or out in graph_outputs
        ):
            break
        prev = step
        end += 1
    return end


def _with_loops(items: list[Item]) -> list[Item]:
    """Replace runs of calls to one block helper, chained output to input, by loops."""
    out: list[Item] = []
    k = 0
    while k < len(items):
        item = items[k]
        if not isinstance(item, CallItem) or item.motif.kind != "block":
            out.append(item)
            k += 1
            continue
        run = [item]
        while k + len(run) < len(items):
            nxt = items[k + len(run)]
            if not (
                isinstance(nxt, CallItem)
                and nxt.motif is item.motif
                and nxt.instance.inputs == run[-1].instance.outputs
            ):
                break
            run.append(nxt)
        loop = None
        params = [p.name for p in item.motif.params]
        while loop is None and len(run) >= MIN_LOOP:  # the longest prefix that a loop reproduces
            loop = fit_loop([r.instance for r in run], params)
            if loop is None:
                run.pop()
        if loop is None:
            out.append(item)
            k += 1
            continue
        first, last = run[0].instance.stem, run[-1].instance.stem
        comment = item.comment
        if comment is not None:
            comment = f"{first} .. {last}:" + comment.split(":", 1)[1]
        out.append(LoopItem(item.motif, [r.instance for r in run], loop, comment))
        k += len(run)
    return out


class _Allocator:
    """Names the values of one function body, reusing `x` for the trunk like keras.applications."""

    def __init__(self, reserved: set[str], emitter: FactoredEmitter, graph: Graph | None = None) -> None:
        self.names = Namespace(reserved=reserved, parent=emitter.module_names)
        self.emitter = emitter
        self.graph = graph
        self.variables: dict[TensorRef, str] = {}
        self.objects: dict[str, str] = {}
        self.holders: dict[str, TensorRef] = {}  # variable -> the value it holds now
        # counted once per function body, not once per layer
        self.calls_of = call_counts(graph.calls) if graph is not None else {}
        self.collide = op_name_collisions(graph) if graph is not None else set()

    def emit(
        self,
        items: list[Item],
        variables: dict[TensorRef, str],
        protected: set[TensorRef],
        outputs: list[TensorRef],
        trunk_var: str,
    ) -> list[str]:
        self.variables = dict(variables)
        last_use: dict[TensorRef, int] = {}
        for k, item in enumerate(items):
            for ref in _consumed(item):
                last_use[ref] = k
        for ref in outputs:
            last_use[ref] = len(items)
        live: set[TensorRef] = {r for r in variables if r not in protected}
        lines: list[str] = []
        for k, item in enumerate(items):
            consumed = _consumed(item)
            produced = _produced(item)
            dying = {r for r in consumed if last_use.get(r) == k and r not in protected}
            live -= dying
            kept = [r for r in produced if last_use.get(r, -1) > k and r not in protected]
            live |= set(kept)
            targets = []
            for ref in produced:
                if isinstance(item, StepItem) and item.guard:  # skipped, the input is the result: one variable
                    self.variables[ref] = self.variables[consumed[0]]
                    self.holders[self.variables[ref]] = ref
                    targets.append(self.variables[ref])
                    continue
                targets.append(self._target(ref, item, consumed, dying, live, protected, trunk_var))
            if item.comment:
                lines.append(f"# {doc_text(item.comment)}")
            lines += self._render(item, targets)
        return lines

    def _target(self, ref, item, consumed, dying, live, protected, trunk_var) -> str:
        if ref in protected:
            name = self.names.name(_hint(item, ref))
        elif live == {ref}:
            name = trunk_var
        elif len(consumed) == 1 and consumed[0] in dying and self.variables[consumed[0]] != trunk_var:
            name = self.variables[consumed[0]]
        else:
            hint = to_identifier(_hint(item, ref))
            holder = self.holders.get(hint)
            if holder is not None and holder not in live and holder not in protected and hint != trunk_var:
                name = hint  # the previous value of this name is dead: reuse it, as hand-written code does
            else:
                name = self.names.name(hint)
        self.variables[ref] = name
        self.holders[name] = ref
        return name

    def _ref(self, ref: TensorRef) -> str:
        return self.variables[ref]

    def _render(self, item: Item, targets: list[str]) -> list[str]:
        target = ", ".join(targets)
        if isinstance(item, StepItem):
            before: list[str] = []
            expr = self._step(item.step, before)
            if item.guard:
                return before + [f"if {item.guard} is not None:", f"    {target} = {expr}"]
            return before + [f"{target} = {expr}"]
        if isinstance(item, CallItem):
            args = [self._ref(r) for r in item.instance.inputs]
            return [f"{target} = {self._call(item.motif, item.instance.args, args)}"]
        loop = item.loop
        source = self._ref(item.instances[0].inputs[0])
        lines = [] if source == target else [f"{target} = {source}"]
        lines.append(f"for i in range({loop.start}, {loop.stop}):")
        lines.append(f"    {target} = {self._call(item.motif, loop.args, [target])}")
        return lines

    def _call(self, motif: Motif, args: dict[str, Any], inputs: list[str]) -> str:
        """`helper(x, 64, (3, 3), strides=(2, 2), name=...)`: up to two values by position, more by keyword.

        Seven positional numbers read as magic; keywords make each call a sentence.
        """
        parts = list(inputs)
        keywords = {}
        if len(motif.required) <= MAX_POSITIONAL:
            parts += [render(_value(args[p.name])) for p in motif.required]
        else:
            keywords.update({p.name: _value(args[p.name]) for p in motif.required})
        for p in motif.optional:
            value = _value(args[p.name])
            if render(value) != render(p.default):
                keywords[p.name] = value
        if motif.named:
            keywords["name"] = _value(args["name"])
        return render_call(motif.helper, [Expr(p) for p in parts], keywords)

    def _step(self, step: Step, before: list[str]) -> str:
        op, call = step.op, step.call
        slots = {k: _value(v) for k, v in step.slots.items()}
        if op.kind == "input":
            return render_call(op.callee, (), op.args)
        if op.kind == "op":
            return render_op(op, call, slots, self._ref, self.collide, self.emitter.result)
        callee = self._layer(step, slots, before)
        return render_call(callee, call.args, call.kwargs, self._ref)

    def _layer(self, step: Step, slots: dict[str, Any], before: list[str]) -> str:
        op = step.op
        if op.kind == "model" or (self.graph is not None and self.calls_of[op.name] > 1):
            assert self.graph is not None
            if op.name not in self.objects:
                # shared layers and nested models: defined once, called by variable
                var = self.names.name(op.name + "_layer" if op.kind == "layer" else op.name)
                self.objects[op.name] = var
                before.append(f"{var} = {self.emitter.constructor(op, self.graph)}")
            return self.objects[op.name]
        positional = [slots[k] for k in op.positional if k in slots]
        keywords = {k: v for k, v in slots.items() if k not in op.positional}
        if step.name is not None:
            keywords["name"] = step.name.code()
        return render_call(op.callee, positional, keywords)


def _consumed(item: Item) -> list[TensorRef]:
    if isinstance(item, StepItem):
        return tensor_refs((item.step.call.args, item.step.call.kwargs))
    if isinstance(item, CallItem):
        return list(item.instance.inputs)
    return list(item.instances[0].inputs)


def _produced(item: Item) -> list[TensorRef]:
    if isinstance(item, StepItem):
        return [TensorRef(item.step.call.id, i) for i in range(len(item.step.call.outputs))]
    if isinstance(item, CallItem):
        return list(item.instance.outputs)
    return list(item.instances[-1].outputs)


def _hint(item: Item, ref: TensorRef) -> str:
    if isinstance(item, StepItem):
        step = item.step
        text = step.name.suffix if step.name is not None else step.op.name
        adapter_branch = ADAPTER_BRANCH.match(text)
        if adapter_branch:  # the adapter's layers of branch k hold one value: `branch_k`
            return "branch_" + adapter_branch.group(1)
        if "branch_" in text:
            rest = text.split("branch_", 1)[1]
            return "branch_" + rest.split("_", 1)[0]
        text = role_text(text) or step.op.name
        return to_identifier(text) + (f"_{ref.index}" if ref.index else "")
    if isinstance(item, CallItem):
        stem = item.instance.stem or item.motif.helper
        if "branch_" in stem:
            rest = stem.split("branch_", 1)[1]
            return "branch_" + rest.split("_", 1)[0]
        return to_identifier(stem)
    return item.motif.helper
