"""Pick the emitter for a style: `flat` (one line per layer) or `factored` (helpers and loops)."""

from __future__ import annotations

from typing import Any

from codegen.backend.emit_factored import FactoredEmitter
from codegen.backend.emit_graph import EmittedGraph, Function, GraphEmitter
from codegen.frontend.spec import STYLES
from codegen.ir.naming import Namespace

__all__ = ["STYLES", "emit_functions"]


def emit_functions(
    module_names: Namespace, jobs: list[tuple[Any, str, str, list[str] | None]], style: str
) -> tuple[EmittedGraph, list[Function]]:
    """(emitted functions, helper functions) for `jobs` = (graph, function name, doc, params or None).

    In the result, nested-model builders come before the job functions, which keep their order.
    """
    if style == "flat":
        emitter = GraphEmitter(module_names)
        for graph, function, doc, params in jobs:
            if params is None:
                emitter.emit(graph, function, doc)
            else:
                emitter.emit_part(graph, function, doc, params)
        helpers: list[Function] = []
    else:
        emitter = FactoredEmitter(module_names)
        for job in jobs:
            emitter.add(*job)
        emitter.run()
        helpers = emitter.helpers
    mains = [job[1] for job in jobs]
    functions = emitter.result.functions
    ordered = [f for f in functions if f.name not in mains] + [f for name in mains for f in functions if f.name == name]
    emitter.result.functions = ordered
    return emitter.result, helpers
