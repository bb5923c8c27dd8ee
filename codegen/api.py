"""stitchgen's Python API: what the CLI does, for notebooks and build scripts.

`import stitchgen` re-exports these functions. Every one takes the same inputs as
its command and raises `StitchgenError` (one line, naming the fix) where the command
would exit 2. Nothing here prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codegen.errors import StitchgenError
from codegen.frontend.spec import ModelSource, ModelSpec, StitchSpec, load_spec, parse_source, spec_from_data
from codegen.write import Stale

SpecLike = str | os.PathLike | Mapping[str, Any]


def load(spec: SpecLike, *, style: str | None = None, output_dir: str | os.PathLike | None = None,
         base_dir: str | os.PathLike | None = None) -> ModelSpec | StitchSpec:  # fmt: skip
    """A spec from a TOML file, or from a dict with the same keys.

    A dict's relative paths (model files, builders, `output_dir`) start at `base_dir`,
    the working directory by default, as if the dict were a TOML file there.
    """
    if isinstance(spec, Mapping):
        data = _plain(spec)
        name = data.get("name") if isinstance(data.get("name"), str) else "spec"
        folder = Path(base_dir) if base_dir is not None else Path.cwd()
        return spec_from_data(data, folder / f"{name}.toml", style, output_dir)
    return load_spec(Path(spec), style, output_dir)


def _plain(value: Any) -> Any:
    """Mappings as dicts and tuples as lists, recursively: what a TOML file would have given."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def generate(spec: SpecLike, *, style: str | None = None, output_dir: str | os.PathLike | None = None,
             base_dir: str | os.PathLike | None = None) -> dict[Path, str]:  # fmt: skip
    """Path -> text of every file the spec generates; writes nothing."""
    from codegen.generate import files_for

    loaded = load(spec, style=style, output_dir=output_dir, base_dir=base_dir)
    return {loaded.output_dir / name: text for name, text in files_for(loaded).items()}


def write(spec: SpecLike, *, style: str | None = None, output_dir: str | os.PathLike | None = None,
          base_dir: str | os.PathLike | None = None) -> list[Path]:  # fmt: skip
    """Generate and write the set all-or-nothing (as `stitchgen generate`); the paths written."""
    from codegen.generate import files_for
    from codegen.write import write_files

    loaded = load(spec, style=style, output_dir=output_dir, base_dir=base_dir)
    return write_files(files_for(loaded), loaded.output_dir)


def check(spec: SpecLike, *, style: str | None = None, output_dir: str | os.PathLike | None = None,
          base_dir: str | os.PathLike | None = None) -> list[Stale]:  # fmt: skip
    """What `stitchgen generate --check` reports: stale, edited, missing or mixed files. Writes nothing."""
    from codegen.generate import files_for
    from codegen.write import check_files

    loaded = load(spec, style=style, output_dir=output_dir, base_dir=base_dir)
    return check_files(files_for(loaded), loaded.output_dir)


def model_source(model: str | ModelSource, kwargs: Mapping[str, Any] | None = None) -> ModelSource:
    """MODEL as the commands take it (keras.applications.NAME, a model file, module:function, a spec)."""
    if isinstance(model, ModelSource):
        return model
    if model.endswith(".toml"):
        loaded = load_spec(Path(model))
        if not isinstance(loaded, ModelSpec):
            raise StitchgenError("inspect takes a single-model spec; inspect the [head] or [tail] source instead")
        return loaded.model
    return parse_source(model, kwargs=dict(kwargs or {}), base_dir=Path("."), where="MODEL")


def analyse(model: str | ModelSource, kwargs: Mapping[str, Any] | None = None):
    """The cut analysis (with its IR graph) of MODEL, loaded and introspected."""
    from codegen.frontend.introspect import introspect
    from codegen.frontend.load import custom_objects, load_model
    from codegen.planning.cuts import CutAnalysis

    source = model_source(model, kwargs)
    return CutAnalysis(introspect(load_model(source), custom_objects(source)).graph)


def inspect(model: str | ModelSource, *, kwargs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per layer: index, name, class, output_shape, params, cut (a single-tensor cut point).

    `model` is keras.applications.NAME, a .keras/.h5 file, module:function, or a spec .toml.
    """
    return layer_rows(analyse(model, kwargs))


def cuts(model: str | ModelSource, *, kwargs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The single-tensor cut points, each row with its output shape and stride."""
    return layer_rows(analyse(model, kwargs), cuts_only=True)


def frontier(model: str | ModelSource, position: int | str, *,
             kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The tensors crossing a cut after `position` (a layer index or name)."""
    return frontier_rows(analyse(model, kwargs), position)


def report(spec: SpecLike, *, repeats: int = 10, batch_size: int = 8, images: str | os.PathLike | None = None,
           base_dir: str | os.PathLike | None = None) -> dict[str, Any]:  # fmt: skip
    """What `stitchgen report --json` prints: parameters, MACs, shapes, latency, bytes at the cut and as sent.

    `images` (a folder, hybrids only) measure the input as JPEG for the bytes-as-sent comparison.
    """
    from codegen.products.report import model_report, stitch_report

    loaded = load(spec, base_dir=base_dir)
    if isinstance(loaded, StitchSpec):
        from codegen.products.hybrid import StitchProject

        return stitch_report(
            StitchProject.from_spec(loaded), repeats, batch_size, None if images is None else Path(images)
        )
    if images is not None:
        raise StitchgenError("images compare what a hybrid sends with the photo; this spec has one model")
    from codegen.products.model import ModelProject

    return model_report(ModelProject.from_spec(loaded), repeats, batch_size)


def project(spec: SpecLike, *, base_dir: str | os.PathLike | None = None):
    """The spec's project: a `StitchProject` for a hybrid, a `ModelProject` for one model."""
    loaded = load(spec, base_dir=base_dir)
    if isinstance(loaded, StitchSpec):
        from codegen.products.hybrid import StitchProject

        return StitchProject.from_spec(loaded)
    from codegen.products.model import ModelProject

    return ModelProject.from_spec(loaded)


def plan(spec: SpecLike, bandwidths: str | list[float] = "1,10,100", *, rtt_ms: float = 0.0,
         phone_slowdown: float = 10.0, phone_latency: str | os.PathLike | None = None,
         server_latency: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
         repeats: int = 5, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:  # fmt: skip
    """What `stitchgen plan --json` prints: every valid cut's latency and the best per bandwidth (Mbit/s)."""
    return planned(
        spec,
        bandwidths,
        rtt_ms=rtt_ms,
        phone_slowdown=phone_slowdown,
        phone_latency=phone_latency,
        server_latency=server_latency,
        images=images,
        repeats=repeats,
        base_dir=base_dir,
    ).as_dict()


def planned(spec: SpecLike, bandwidths: str | list[float] = "1,10,100", *, rtt_ms: float = 0.0,
            phone_slowdown: float = 10.0, phone_latency: str | os.PathLike | None = None,
            server_latency: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
            repeats: int = 5, base_dir: str | os.PathLike | None = None):  # fmt: skip
    """`plan` as a `codegen.products.plan.Plan` (for its table and plot), not a dict."""
    from codegen.products import plan as planning

    text = bandwidths if isinstance(bandwidths, str) else ",".join(str(float(b)) for b in bandwidths)
    return planning.plan(
        project(spec, base_dir=base_dir),
        planning.parse_bandwidths(text),
        rtt_ms=rtt_ms,
        phone_slowdown=phone_slowdown,
        phone_latency=None if phone_latency is None else Path(phone_latency),
        server_latency=None if server_latency is None else Path(server_latency),
        images=None if images is None else Path(images),
        repeats=repeats,
    )


def layer_rows(analysis: Any, cuts_only: bool = False) -> list[dict[str, Any]]:
    """The rows of `stitchgen inspect` (and `--cuts`) for an analysed graph."""
    graph = analysis.graph
    sizes = analysis.frontier_sizes()
    calls_by_op: dict[str, Any] = {}
    for call in graph.calls:
        calls_by_op.setdefault(call.op, call)
    rows = []
    for op in analysis.layers:
        call = calls_by_op.get(op.name)
        info = call.outputs[0] if call is not None and call.outputs else None
        is_cut = sizes[op.layer_index] == 1
        if cuts_only and not is_cut:
            continue
        row = {
            "index": op.layer_index,
            "name": op.name,
            "class": op.class_name,
            "output_shape": list(info.shape) if info else None,
            "params": op.params,
            "cut": is_cut,
        }
        if cuts_only and info is not None:
            row["stride"] = analysis.stride(info)
        rows.append(row)
    return rows


def frontier_rows(analysis: Any, position: int | str) -> dict[str, Any]:
    """`{"position", "layer", "frontier": [{tensor, output_index, shape, dtype, produced_at}]}`."""
    if isinstance(position, str) and position.lstrip("-").isdigit():
        position = int(position)
    try:
        resolved = analysis.resolve(position)
    except ValueError as exc:
        raise StitchgenError(str(exc)) from None
    rows = [
        {
            "tensor": c.producer,
            "output_index": c.ref.index,
            "shape": list(c.info.shape),
            "dtype": c.info.dtype,
            "produced_at": c.position,
        }
        for c in analysis.frontier(resolved)
    ]
    return {"position": resolved, "layer": analysis.layers[resolved].name, "frontier": rows}
