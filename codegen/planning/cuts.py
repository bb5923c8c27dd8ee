"""Where a model can be cut, and which tensors cross each cut (the frontier).

A cut at position p (an index into `model.layers`) keeps layers 0..p in the head
and p+1.. in the tail. A `keras.ops` operation has no position of its own: it
goes with the first layer that needs its result, so it sits on that layer's side.
A tensor crosses the cut when it is produced at or before p and consumed after
p; model outputs count as consumed after the end. Everything is linear in the
number of calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from codegen.ir.graph import Graph, TensorInfo, TensorRef, tensor_refs


@dataclass(frozen=True)
class Crossing:
    """One tensor of a frontier."""

    ref: TensorRef
    producer: str  # the layer (or op) that computes it
    info: TensorInfo
    position: int  # where it is produced


class CutAnalysis:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.layers = graph.layers()
        self.size = len(self.layers)
        calls = graph.calls
        consumers: dict[TensorRef, list[str]] = {}
        for call in calls:
            for ref in tensor_refs((call.args, call.kwargs)):
                consumers.setdefault(ref, []).append(call.id)
        outputs = set(tensor_refs(graph.outputs))

        # position of every call: its layer's index, or for ops the earliest
        # position among the layers that (through other ops) consume its result
        self.position: dict[str, int] = {}
        for call in reversed(calls):
            op = graph.ops[call.op]
            if op.layer_index is not None:
                self.position[call.id] = op.layer_index
                continue
            users = [
                self.position[user]
                for i in range(len(call.outputs))
                for user in consumers.get(TensorRef(call.id, i), [])
            ]
            if any(TensorRef(call.id, i) in outputs for i in range(len(call.outputs))):
                users.append(self.size)
            self.position[call.id] = min(users, default=self.size)

        self._spans: list[tuple[int, int, Crossing]] = []
        for call in calls:
            for i, info in enumerate(call.outputs):
                ref = TensorRef(call.id, i)
                born = self.position[call.id]
                last = max((self.position[u] for u in consumers.get(ref, [])), default=-1)
                if ref in outputs:
                    last = self.size
                if last > born:
                    self._spans.append((born, last, Crossing(ref, call.op, info, born)))

    def frontier(self, position: int) -> list[Crossing]:
        """Tensors produced at or before `position` and consumed after it."""
        found = [c for born, last, c in self._spans if born <= position < last]
        return sorted(found, key=lambda c: (c.position, c.ref.call, c.ref.index))

    def frontier_sizes(self) -> list[int]:
        """Number of crossing tensors at every position, by a sweep over spans."""
        delta = [0] * (self.size + 1)
        for born, last, _ in self._spans:
            if born < self.size:
                delta[max(born, 0)] += 1
                delta[min(last, self.size)] -= 1
        sizes, running = [], 0
        for p in range(self.size):
            running += delta[p]
            sizes.append(running)
        return sizes

    def single_tensor_cuts(self) -> list[int]:
        return [p for p, n in enumerate(self.frontier_sizes()) if n == 1]

    def resolve(self, cut: int | str) -> int:
        """A position from an index or a layer name; ValueError with suggestions if unknown."""
        import difflib

        if isinstance(cut, bool):
            raise ValueError(f"cut {cut!r} must be a layer index or name")  # noqa: TRY004 - callers catch ValueError
        if isinstance(cut, int):
            if not 0 <= cut < self.size:
                raise ValueError(f"layer index {cut} is out of range: the model has layers 0 to {self.size - 1}")
            return cut
        names = {op.name: op.layer_index for op in self.layers}
        if cut in names:
            return names[cut]
        close = difflib.get_close_matches(cut, list(names), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"no layer named {cut!r}{hint}")

    def nearest_single_cuts(self, position: int) -> tuple[int | None, int | None]:
        singles = self.single_tensor_cuts()
        before = max((p for p in singles if p < position), default=None)
        after = min((p for p in singles if p > position), default=None)
        return before, after

    def input_spatial(self) -> tuple[int, ...] | None:
        refs = tensor_refs(self.graph.inputs)
        if len(refs) != 1:
            return None
        shape = self.graph.call_by_id()[refs[0].call].outputs[0].shape
        return tuple(shape[1:-1])

    def stride(self, info: TensorInfo) -> str:
        """Downsampling factor relative to the input, e.g. '8' or '1/2'; '' when it does not apply."""
        spatial = self.input_spatial()
        here = info.shape[1:-1]
        if not spatial or len(here) != len(spatial) or None in here or None in spatial or not all(here):
            return ""
        ratios = {s / h for s, h in zip(spatial, here)}
        if len(ratios) != 1:
            return ""
        ratio = ratios.pop()
        return str(int(ratio)) if ratio == int(ratio) else f"{ratio:.3g}"
