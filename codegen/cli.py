"""The `stitchgen` command line. User errors are one line on stderr and exit code 2."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from codegen import __version__
from codegen.errors import StitchgenError


def _verbose() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("verbose"))


def user_errors(fn: Callable) -> Callable:
    """Turn StitchgenError into `error: ...` and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StitchgenError as exc:
            click.echo(f"error: {exc}", err=True)
            if exc.detail and _verbose():
                click.echo(exc.detail, err=True)
            sys.exit(exc.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="stitchgen")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's start-up logs and whole error messages.")
def main(verbose: bool) -> None:
    """Generate standalone Keras source, weight-porting scripts and stitched hybrids.

    \b
    stitchgen inspect keras.applications.MobileNet --cuts
    stitchgen generate examples/mobilenet.toml
    stitchgen generate examples/mobilenet.toml --check
    """
    from codegen.runtime.quiet import quiet_tensorflow

    quiet_tensorflow(["--verbose"] if verbose else [])


def _model_source(model: str, kwargs_json: str | None, option: str = "--kwargs"):
    from codegen.api import model_source

    if model.endswith(".toml") and kwargs_json:
        raise StitchgenError(f"{option} does not apply to a spec file; edit its [model] kwargs")
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as exc:
        raise StitchgenError(f"{option} is not valid JSON: {exc.msg}") from None
    if not isinstance(kwargs, dict):
        raise StitchgenError(f"{option} must be a JSON object, e.g. '{{\"input_shape\": [224, 224, 3]}}'")
    return model_source(model, kwargs)


def _shape(shape: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


@main.command()
@click.argument("model")
@click.option(
    "--kwargs",
    "kwargs_json",
    metavar="JSON",
    help="Constructor arguments as JSON, e.g. '{\"input_shape\": [224, 224, 3]}'.",
)
@click.option("--cuts", is_flag=True, help="List only the single-tensor cut points, with shape and stride.")
@click.option(
    "--frontier", "frontier_at", metavar="POS", help="Print the tensors crossing a cut at POS (index or layer name)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--plot",
    metavar="FILE",
    help="Also draw the model to FILE (.svg or .png), valid cut points marked (needs Graphviz).",
)
@user_errors
def inspect(
    model: str, kwargs_json: str | None, cuts: bool, frontier_at: str | None, as_json: bool, plot: str | None
) -> None:
    """Print one row per layer of MODEL: index, name, class, output shape, params.

    MODEL is keras.applications.NAME, a .keras/.h5 file, module:function, or a
    spec .toml. A '*' in the cut column marks a valid single-tensor cut point.
    """
    from codegen.api import analyse, frontier_rows, layer_rows

    analysis = analyse(_model_source(model, kwargs_json))
    graph = analysis.graph
    if plot:
        from codegen.products.diagram import model_dot, render

        producers = {analysis.frontier(p)[0].producer for p in analysis.single_tensor_cuts()}
        click.echo(f"wrote {render(model_dot(graph, producers), Path(plot))}", err=True)
    if frontier_at is not None:
        found = frontier_rows(analysis, frontier_at)
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return
        click.echo(f"frontier after layer {found['position']} ({found['layer']}): {len(found['frontier'])} tensor(s)")
        for row in found["frontier"]:
            click.echo(
                f"  {row['tensor']:<32} {_shape(tuple(row['shape'])):<22} produced at layer {row['produced_at']}"
            )
        return
    rows = layer_rows(analysis, cuts_only=cuts)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'index':>5}  {'name':<36} {'class':<24} {'output shape':<22} {'params':>10}  cut"
    if cuts:
        header += "  stride"
    click.echo(header)
    for row in rows:
        shape = _shape(tuple(row["output_shape"])) if row["output_shape"] else "-"
        line = f"{row['index']:>5}  {row['name']:<36} {row['class']:<24} {shape:<22} {row['params']:>10}  {'*' if row['cut'] else ''}"
        if cuts:
            line += f"    {row.get('stride', '')}"
        click.echo(line.rstrip())


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where to write (default: the spec's output_dir).")
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 with a diff if a file is stale or was edited by hand."
)
@click.option(
    "--style",
    type=click.Choice(["factored", "flat"]),
    help="factored: helper functions and loops for repeated blocks (the default); "
    "flat: one line per layer. Overrides the spec's style key.",
)
@user_errors
def generate(spec: str, output_dir: str | None, check: bool, style: str | None) -> None:
    """Generate <name>.py and <name>_port_weights.py from SPEC (a TOML file)."""
    from codegen.generate import generate_files
    from codegen.write import check_files, write_files

    files, out_dir = generate_files(Path(spec), style, Path(output_dir) if output_dir else None)
    if check:
        problems = check_files(files, out_dir)
        for problem in problems:
            click.echo(f"{problem.path}: {problem.reason}", err=True)
            if problem.diff:
                click.echo(problem.diff, nl=False)
        if problems:
            sys.exit(1)
        click.echo(f"{len(files)} file(s) up to date in {out_dir}")
        return
    for path in write_files(files, out_dir):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of Markdown.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the report to this file instead of stdout.")
@click.option(
    "--repeats", type=click.IntRange(0), default=10, show_default=True, help="Timed runs per part (0: skip timing)."
)
@click.option(
    "--batch-size", type=click.IntRange(1), default=8, show_default=True, help="The larger batch timed besides batch 1."
)
@click.option("--diagram", metavar="PREFIX", help="Also draw the hybrid to PREFIX.svg and PREFIX.png (needs Graphviz).")
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    default=None,
    help="A folder of images: measure the input as JPEG (quality 90) on them instead of the typical size.",
)
@user_errors
def report(
    spec: str, as_json: bool, output: str | None, repeats: int, batch_size: int, diagram: str | None, images: str | None
) -> None:
    """Parameters, MACs, output shapes and latency per part, and bytes per image at the cut.

    SPEC is a stitch spec (head, adapter and tail) or a single-model spec.
    """
    from codegen.frontend.spec import StitchSpec, load_spec
    from codegen.products.model import ModelProject
    from codegen.products.report import model_report, render_markdown, stitch_report
    from codegen.write import write_files

    loaded = load_spec(spec)
    if isinstance(loaded, StitchSpec):
        from codegen.products.hybrid import StitchProject

        project = StitchProject.from_spec(loaded)
        result = stitch_report(project, repeats, batch_size, None if images is None else Path(images))
        if diagram:
            from codegen.products.diagram import hybrid_dot, render

            dot = hybrid_dot(project)
            for suffix in (".svg", ".png"):
                click.echo(f"wrote {render(dot, Path(diagram + suffix))}", err=True)
    else:
        if diagram:
            raise StitchgenError(
                "--diagram draws a stitched hybrid; for one model use stitchgen inspect MODEL --plot FILE"
            )
        if images:
            raise StitchgenError("--images compares what a hybrid sends with the photo; this spec has one model")
        result = model_report(ModelProject.from_spec(loaded), repeats, batch_size)
    text = json.dumps(result, indent=2) + "\n" if as_json else render_markdown(result)
    if output:
        target = Path(output)
        write_files({target.name: text}, target.parent if str(target.parent) else Path("."))
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@main.command("export")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="The hybrid's weights (.weights.h5).")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where to write (default: the spec's output_dir).")
@click.option(
    "--calibration",
    type=click.Path(file_okay=False),
    default=None,
    help="A folder of images: also write a full-integer phone side (int8 inputs, outputs and activations) "
    "calibrated on them, and report its agreement on every 5th image, held out.  [default: none]",
)
@user_errors
def export_command(spec: str, weights: str, output_dir: str | None, calibration: str | None) -> None:
    """Write the phone side as TFLite (float32 and dynamic-range int8) and the server side as .keras.

    The adapter goes with the tail unless the spec says [adapter] side = "phone"; a
    bottleneck adapter splits itself: its encoder goes with the head, its decoder with the tail.
    The float32 TFLite model is checked against the Keras one on a random batch.
    """
    from codegen.frontend.spec import StitchSpec, load_spec
    from codegen.products.export import export
    from codegen.products.hybrid import StitchProject

    loaded = load_spec(spec)
    if not isinstance(loaded, StitchSpec):
        raise StitchgenError("export takes a stitch spec (with [head] and [tail])")
    out = Path(output_dir) if output_dir else loaded.output_dir
    verbose = _verbose()
    result = export(
        StitchProject.from_spec(loaded),
        Path(weights),
        out,
        verbose=verbose,
        calibration=None if calibration is None else Path(calibration),
    )
    written = [result.phone_float32, result.phone_int8, result.full_int8, result.server]
    click.echo(f"wrote {', '.join(str(p) for p in written if p is not None)}")
    click.echo(
        f"TFLite vs Keras on the phone side: max abs diff {result.float32_diff:.3e} (float32), {result.int8_diff:.3e} (int8)"
        + (
            f"; the sent codes dequantised, where one int8 level is {result.step:.3e}: "
            f"{result.float32_diff / result.step:.2f} and {result.int8_diff / result.step:.2f} levels"
            if result.step
            else ""
        )
    )
    full = result.full_int8_report
    if full is not None:
        click.echo(
            f"full int8 phone side: {full.size_bytes:,} bytes, calibrated on {full.calibration_images} images; "
            f"on {full.held_out_images} held-out images its output is within {full.relative_error:.2%} (rms) of "
            f"float32 and the hybrid's top-1 agrees with the float32 hybrid on {full.agreement:.1%}"
        )


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--bandwidth",
    default="1,10,100",
    show_default=True,
    help="Comma-separated uplink bandwidths in Mbit/s; the best cut is chosen for each.",
)
@click.option(
    "--rtt-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Network round-trip time added to every transfer.",
)
@click.option(
    "--phone-slowdown",
    type=float,
    default=10.0,
    show_default=True,
    help="How many times slower the phone runs a layer than this machine (for layers --phone-latency lacks).",
)
@click.option(
    "--phone-latency",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV of layer,ms measured on the phone; it replaces the slowdown for the layers it lists.",
)
@click.option(
    "--server-latency",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV of layer,ms for the server, instead of timing those layers on this machine.",
)
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    default=None,
    help="A folder of images: measure the photo as JPEG on them instead of the typical size.",
)
@click.option(
    "--repeats",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Timed calls per layer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Also draw latency against cut to this PNG.",
)
@user_errors
def plan(
    spec: str,
    bandwidth: str,
    rtt_ms: float,
    phone_slowdown: float,
    phone_latency: str | None,
    server_latency: str | None,
    images: str | None,
    repeats: int,
    as_json: bool,
    plot_path: str | None,
) -> None:
    """Choose where to split SPEC's generated model by end-to-end latency, for each bandwidth.

    Every valid cut is costed as phone compute + transfer + server compute, beside
    uploading the photo as JPEG (all on the server) and running everything on the phone.
    Layer names in the CSV files are the generated model's (see --json).
    """
    from codegen.api import planned
    from codegen.products import plan as planning

    if plot_path and not Path(plot_path).resolve().parent.is_dir():
        raise StitchgenError(f"--plot {plot_path!r}: its folder does not exist; create it or pick another path")
    result = planned(
        spec,
        bandwidth,
        rtt_ms=rtt_ms,
        phone_slowdown=phone_slowdown,
        phone_latency=phone_latency,
        server_latency=server_latency,
        images=images,
        repeats=repeats,
    )
    if plot_path:
        click.echo(f"wrote {planning.plot(result, Path(plot_path))}", err=True)
    click.echo(
        (json.dumps(result.as_dict(), indent=2) + "\n" if as_json else planning.render_text(result)),
        nl=False,
    )


def _weighted_model(source, weights: str):
    """The source model with `weights`: "imagenet" (applications), a weights file, or "none"."""
    import keras

    from codegen.frontend.load import load_model

    if source.kind == "application" and weights == "imagenet":
        keras.backend.clear_session()
        constructor = getattr(keras.applications, source.source.rsplit(".", 1)[1])
        try:
            # Keras prints "Downloading data from ..." on stdout, which belongs to --json
            with contextlib.redirect_stdout(sys.stderr):
                return constructor(weights="imagenet", **source.kwargs)
        except Exception as exc:  # noqa: BLE001 - downloads, h5py and Keras raise many kinds
            raise StitchgenError.wrapping(
                f"cannot load imagenet weights for {source.source}",
                exc,
                " (offline: put the file in the Keras cache, ~/.keras/models, or pass a weights file)",
            ) from None
    model = load_model(source)
    if weights not in ("none", "imagenet"):
        try:
            model.load_weights(weights)
        except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many kinds
            raise StitchgenError.wrapping(f"cannot load weights {weights!r}", exc) from None
    return model


def _preprocess_function(source) -> Callable:
    """The source family's preprocess_input (identity for "none")."""
    import importlib

    import numpy as np

    from codegen.frontend.preprocess import default_preprocess

    path = default_preprocess(source)
    if path == "none":
        return lambda x: x
    module, _, name = path.rpartition(".")
    function = getattr(importlib.import_module(module), name)
    # keras.applications' preprocess_input works in place on numpy arrays; resized
    # batches can be read-only views, so each call gets its own copy
    return lambda x: function(np.array(x, dtype="float32", copy=True))


@main.command()
@click.option("--head", "head_model", required=True, metavar="MODEL", help="The network to cut the head from.")
@click.option("--tail", "tail_model", required=True, metavar="MODEL", help="The network to take the tail from.")
@click.option("--head-kwargs", metavar="JSON", help="Constructor arguments of the head network.")
@click.option("--tail-kwargs", metavar="JSON", help="Constructor arguments of the tail network.")
@click.option(
    "--images",
    type=click.Path(exists=True),
    help="Calibration images (a directory or .npz): rank by least-squares residual.",
)
@click.option(
    "--head-weights", default="imagenet", show_default=True, help="With --images: imagenet, a weights file, or none."
)
@click.option(
    "--tail-weights", default="imagenet", show_default=True, help="With --images: imagenet, a weights file, or none."
)
@click.option("--top", type=click.IntRange(1), default=10, show_default=True, help="How many pairs to print.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def suggest(head_model, tail_model, head_kwargs, tail_kwargs, images, head_weights, tail_weights, top, as_json) -> None:
    """Rank (head cut, tail start) pairs: shape compatibility, bytes at the cut, head cost.

    With --images, the normalised residual of a least-squares linear adapter fitted
    on those images (1 - R^2 of the tail network's activations) ranks first.
    """
    from codegen.frontend.introspect import introspect
    from codegen.frontend.load import custom_objects
    from codegen.planning.cuts import CutAnalysis
    from codegen.products.suggest import candidates, count_images, image_batches, rank, residuals, spread

    head_source = _model_source(head_model, head_kwargs, "--head-kwargs")
    tail_source = _model_source(tail_model, tail_kwargs, "--tail-kwargs")
    head_net = _weighted_model(head_source, head_weights if images else "none")
    head = CutAnalysis(introspect(head_net, custom_objects(head_source)).graph)
    found = candidates(
        head, CutAnalysis(introspect(_weighted_model(tail_source, "none"), custom_objects(tail_source)).graph)
    )
    if not found:
        raise StitchgenError("no pair of single-tensor spatial cuts found between these two networks")
    ranked = spread(rank(found), top)
    if images:
        tail_net = _weighted_model(tail_source, tail_weights)
        head_net = _weighted_model(head_source, head_weights)
        sizes = [tuple(head_net.inputs[0].shape[1:3]), tuple(tail_net.inputs[0].shape[1:3])]
        head_pre, tail_pre = _preprocess_function(head_source), _preprocess_function(tail_source)
        total = count_images(Path(images), limit=512)

        def batches():
            for head_x, tail_x in image_batches(Path(images), sizes, limit=512, batch_size=4):
                yield head_pre(head_x), tail_pre(tail_x)

        with click.progressbar(length=total, label="least squares over --images", file=sys.stderr) as bar:
            residuals(ranked, head_net, tail_net, batches(), progress=bar.update)
        ranked = rank(ranked)
    rows = [c.row() for c in ranked[:top]]
    if as_json:
        click.echo(json.dumps({"ranked_by": "residual" if images else "shape", "pairs": rows}, indent=2))
        return
    click.echo(
        f"{'rank':>4}  {'head cut':<28} {'tail start':<28} {'head -> tail':<30} {'penalty':>7} {'bytes f32':>11} {'head MACs':>14} {'residual':>9}"
    )
    for i, r in enumerate(rows, start=1):
        shapes = f"{tuple(r['head_shape'])} -> {tuple(r['tail_shape'])}"
        residual = "-" if r["residual"] is None else f"{r['residual']:.4f}"
        click.echo(
            f"{i:>4}  {r['head_cut']:>4} {r['head_layer']:<23} {r['tail_start']:>4} {r['tail_layer']:<23} {shapes:<30} "
            f"{r['shape_penalty']:>7.3f} {r['bytes_float32']:>11,} {r['head_macs']:>14,} {residual:>9}"
        )
