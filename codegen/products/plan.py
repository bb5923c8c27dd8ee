"""`stitchgen plan`: choose where to split by end-to-end latency, as Neurosurgeon does.

For every valid cut of the generated model (one tensor crosses it), the phone runs
the layers up to the cut, sends that tensor, and the server runs the rest:

    latency = phone ms (layers up to the cut) + transfer ms + server ms (the rest)
    transfer ms = bytes x 8 / (bandwidth in Mbit/s x 1000) + round-trip ms

Server times are measured per layer on this machine (median of repeated eager calls
at batch 1, after a warm-up: Python's call overhead included, as on a real server);
a CSV file can replace them. Phone times are the server's times a slowdown factor
slower, or a measured CSV table (layer name, ms) for the layers it lists. A tensor
crosses as float32; the output of a bottleneck's link crosses as the spec sends it.
Two baselines stand beside the splits: everything on the server (the phone uploads
the photo as JPEG) and everything on the phone (nothing is sent).
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codegen.errors import StitchgenError
from codegen.ir.graph import TensorInfo
from codegen.planning.adapter import TRANSMISSION
from codegen.products.costs import tensor_bytes

DEFAULT_SLOWDOWN = 10.0


@dataclass(frozen=True)
class Candidate:
    """One split: the phone runs layers 0..position (the last is `layer`), then sends `bytes`."""

    position: int
    layer: str
    shape: tuple
    bytes: int
    phone_ms: float
    server_ms: float


@dataclass(frozen=True)
class Choice:
    """The best split at one bandwidth, beside the two baselines."""

    bandwidth_mbps: float
    layer: str
    position: int
    bytes: int
    phone_ms: float
    transfer_ms: float
    server_ms: float
    total_ms: float
    all_on_server_ms: float
    all_on_phone_ms: float
    best: str  # "split", "all on server" or "all on phone"


@dataclass
class Plan:
    name: str
    bandwidths_mbps: list[float]
    rtt_ms: float
    phone: str  # how phone times were obtained
    server: str  # how server times were obtained
    jpeg_bytes: int
    jpeg_how: str
    candidates: list[Candidate]
    choices: list[Choice]
    layer_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> {"phone": ms, "server": ms}

    def as_dict(self) -> dict:
        return asdict(self)


def transfer_ms(size: int, bandwidth_mbps: float, rtt_ms: float) -> float:
    """Milliseconds to send `size` bytes at `bandwidth_mbps` Mbit/s, plus one round trip."""
    return size * 8 / (bandwidth_mbps * 1000) + rtt_ms


def parse_bandwidths(text: str) -> list[float]:
    """'1,10,100' -> [1.0, 10.0, 100.0]; each must be a number above 0."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise StitchgenError(f"--bandwidth {text!r}: {part.strip()!r} is not a number of Mbit/s") from None
        if not value > 0 or not math.isfinite(value):
            raise StitchgenError(f"--bandwidth {text!r}: every bandwidth must be above 0 Mbit/s, not {part.strip()}")
        values.append(value)
    return values


def read_latency_table(path: Path, known: list[str], option: str) -> dict[str, float]:
    """A CSV of `layer,ms` rows (a header row is allowed); every layer must be one of `known`."""
    if not path.is_file():
        raise StitchgenError(f"{option} {str(path)!r} does not exist")
    table: dict[str, float] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StitchgenError(f"{option} {str(path)!r} is not a CSV file of layer,ms rows: {exc}") from None
    if rows and rows[0][0].strip().lower() == "layer":
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise StitchgenError(f"{option} {str(path)!r} row {number}: expected layer,ms; got {len(row)} fields")
        name, value = row[0].strip(), row[1].strip()
        try:
            ms = float(value)
        except ValueError:
            raise StitchgenError(f"{option} {str(path)!r} row {number}: {value!r} is not a number of ms") from None
        if not ms >= 0 or not math.isfinite(ms):
            raise StitchgenError(f"{option} {str(path)!r} row {number}: {ms} ms must be 0 or more")
        table[name] = ms
    unknown = sorted(set(table) - set(known))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise StitchgenError(
            f"{option} {str(path)!r} names layers the model does not have: {shown}; "
            "use the generated model's layer names (stitchgen plan --json lists them)"
        )
    return table


def measure_layers(model, repeats: int) -> dict[str, float]:
    """Median ms per layer call at batch 1, on random inputs of the layer's own input shapes."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)

    def sample(tensor):
        shape = (1,) + tuple(1 if d is None else d for d in tensor.shape[1:])
        if "int" in str(tensor.dtype):
            return rng.integers(-8, 8, size=shape).astype(str(tensor.dtype))
        return rng.standard_normal(shape).astype(str(tensor.dtype))

    times = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            times[layer.name] = 0.0
            continue
        structure = layer.input
        x = [sample(t) for t in structure] if isinstance(structure, (list, tuple)) else sample(structure)
        layer(x)  # warm-up
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            layer(x)
            samples.append((time.perf_counter() - started) * 1000)
        times[layer.name] = statistics.median(samples)
    return times


def _crossing_bytes(project, info: TensorInfo, producer: str) -> int:
    sent = getattr(project, "sent_bytes", None)  # a hybrid with a bottleneck: what its link sends
    if sent is not None and producer == TRANSMISSION:
        return sent
    return tensor_bytes(info, 4)


def plan(
    project,
    bandwidths: list[float],
    rtt_ms: float = 0.0,
    phone_slowdown: float = DEFAULT_SLOWDOWN,
    phone_latency: Path | None = None,
    server_latency: Path | None = None,
    images: Path | None = None,
    repeats: int = 5,
) -> Plan:
    """Latency of every split of the project's generated model, and the best per bandwidth."""
    from codegen.frontend.introspect import introspect
    from codegen.generate import import_generated
    from codegen.planning.cuts import CutAnalysis
    from codegen.products.link import jpeg_size

    if not phone_slowdown > 0:
        raise StitchgenError(f"--phone-slowdown must be above 0, not {phone_slowdown}")
    if not rtt_ms >= 0:
        raise StitchgenError(f"--rtt-ms must be 0 or more, not {rtt_ms}")
    model = import_generated(project, "_plan_").build_model()
    names = [layer.name for layer in model.layers]
    phone_table = read_latency_table(phone_latency, names, "--phone-latency") if phone_latency else {}
    server_table = read_latency_table(server_latency, names, "--server-latency") if server_latency else {}
    missing = [n for n in names if n not in server_table]
    measured = measure_layers(model, repeats) if missing else {}
    server = {n: server_table.get(n, measured.get(n, 0.0)) for n in names}
    phone = {n: phone_table.get(n, server[n] * phone_slowdown) for n in names}

    analysis = CutAnalysis(introspect(model).graph)
    layers = analysis.layers
    candidates = []
    for position in range(len(layers) - 1):
        if layers[position].kind == "input":
            continue
        crossing = analysis.frontier(position)
        if len(crossing) != 1:
            continue
        (c,) = crossing
        candidates.append(
            Candidate(
                position,
                layers[position].name,
                tuple(c.info.shape[1:]),
                _crossing_bytes(project, c.info, c.producer),
                sum(phone[op.name] for op in layers[: position + 1]),
                sum(server[op.name] for op in layers[position + 1 :]),
            )
        )
    if not candidates:
        raise StitchgenError("the model has no layer after which a single tensor crosses; nothing to split")
    input_shape = tuple(model.inputs[0].shape[1:])
    jpeg = jpeg_size(input_shape, images)
    all_server = sum(server.values())
    all_phone = sum(phone.values())
    choices = []
    for bandwidth in bandwidths:

        def total(c: Candidate, bandwidth: float = bandwidth) -> float:
            return c.phone_ms + transfer_ms(c.bytes, bandwidth, rtt_ms) + c.server_ms

        best = min(candidates, key=total)
        upload = transfer_ms(jpeg.bytes, bandwidth, rtt_ms) + all_server
        totals = {
            "split": total(best),
            "all on server": upload,
            "all on phone": all_phone,
        }
        choices.append(
            Choice(
                bandwidth,
                best.layer,
                best.position,
                best.bytes,
                best.phone_ms,
                transfer_ms(best.bytes, bandwidth, rtt_ms),
                best.server_ms,
                total(best),
                upload,
                all_phone,
                min(totals, key=totals.get),
            )
        )
    phone_how = f"{phone_slowdown:g}x this machine's times"
    if phone_table:
        phone_how = f"{len(phone_table)} layers from {phone_latency}, the rest " + phone_how
    server_how = "measured on this machine, per layer at batch 1"
    if server_table:
        server_how = f"{len(server_table)} layers from {server_latency}" + (
            f", the rest {server_how}" if missing else ""
        )
    return Plan(
        project.spec.name,
        bandwidths,
        rtt_ms,
        phone_how,
        server_how,
        jpeg.bytes,
        jpeg.how,
        candidates,
        choices,
        {n: {"phone": phone[n], "server": server[n]} for n in names},
    )


def render_text(result: Plan) -> str:
    lines = [
        f"# stitchgen plan: {result.name}",
        "",
        (
            f"{len(result.candidates)} valid cuts; phone: {result.phone}; server: {result.server}; "
            f"round trip {result.rtt_ms:g} ms; the photo as JPEG: {result.jpeg_bytes:,} bytes ({result.jpeg_how})."
        ),
        "",
        (
            "| Mbit/s | best cut | bytes | phone ms | transfer ms | server ms | total ms "
            "| all on server ms | all on phone ms | fastest |"
        ),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in result.choices:
        lines.append(
            f"| {c.bandwidth_mbps:g} | {c.layer} (layer {c.position}) | {c.bytes:,} | {c.phone_ms:.2f} "
            f"| {c.transfer_ms:.2f} | {c.server_ms:.2f} | {c.total_ms:.2f} | {c.all_on_server_ms:.2f} "
            f"| {c.all_on_phone_ms:.2f} | {c.best} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: Plan, path: Path) -> Path:
    """Latency against cut position, one line per bandwidth, the baselines dashed; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codegen.runtime.porting import replace_atomically

    figure, axes = plt.subplots(figsize=(9, 4.5))
    positions = [c.position for c in result.candidates]
    for choice in result.choices:
        totals = [
            c.phone_ms + transfer_ms(c.bytes, choice.bandwidth_mbps, result.rtt_ms) + c.server_ms
            for c in result.candidates
        ]
        (line,) = axes.plot(positions, totals, label=f"{choice.bandwidth_mbps:g} Mbit/s")
        axes.axhline(
            choice.all_on_server_ms,
            color=line.get_color(),
            linestyle="--",
            linewidth=0.8,
        )
    axes.axhline(
        result.choices[0].all_on_phone_ms,
        color="black",
        linestyle=":",
        label="all on phone",
    )
    axes.set_xlabel("cut: last layer on the phone (index)")
    axes.set_ylabel("end-to-end latency (ms)")
    axes.set_yscale("log")
    axes.set_title(f"{result.name}: latency by cut (dashed: all on server, uploading the JPEG)")
    axes.legend()
    figure.tight_layout()
    try:
        replace_atomically(str(path), lambda tmp: figure.savefig(tmp, format="png"))
    except OSError as exc:
        raise StitchgenError(f"--plot {str(path)!r}: cannot write it: {exc.strerror}") from None
    finally:
        plt.close(figure)
    return path
