"""What a single model's port script does: pair, copy, verify and write, behind its argument parser.

The template defines the constants (source, default weights, LAYER_MAP) and the
source's builder, then inlines `porting` and this module after the marker. The
values here stand in for a generated script's, so this is linted and tested as Python.
"""

import argparse
import sys

from codegen.runtime.porting import (
    MixedSetError,
    compare_outputs,
    flatten,
    load_generated,
    one_line,
    port_rows,
    save_atomic,
    seeded_inputs,
    weights_argument,
)

HERE = "."
DEFAULT_WEIGHTS = "imagenet"
WEIGHTS_HELP = '"imagenet", a weights file, or "none" (seeded random)'
TOLERANCE = 1e-5
LAYER_MAP = ()


def build_source(weights):
    """The source model; the template writes one per source kind."""
    raise NotImplementedError(weights)


# --- inline ---


def port(source, target):
    """Copy every weight LAYER_MAP names from `source` into `target`, all rows checked first."""
    port_rows({None: source}, target, [(None, *row) for row in LAYER_MAP])


def verify(source, target, tolerance=TOLERANCE, seed=0):
    """(passed, message): source and generated outputs on one seeded batch."""
    batch = seeded_inputs(source, seed)
    expected = flatten(source(batch, training=False))
    actual = flatten(target(batch, training=False))
    return compare_outputs(expected, actual, tolerance)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights", help=f"source weights: {WEIGHTS_HELP} (default: {DEFAULT_WEIGHTS})".replace("%", "%%")
    )
    parser.add_argument("--output", required=True, help="where to write the ported weights (.weights.h5)")
    parser.add_argument("--verify", action="store_true", help="compare source and generated outputs before writing")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help="relative tolerance for --verify (default: %(default)s)"
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's logs and whole error messages")
    args = parser.parse_args(argv)
    if not args.output.endswith(".weights.h5"):
        parser.error("--output must end in .weights.h5")
    try:
        weights = weights_argument(args.weights, DEFAULT_WEIGHTS, HERE)
        source = build_source(weights)
        target = load_generated().build_model()
        port(source, target)
        if args.verify:
            passed, message = verify(source, target, args.tolerance)
            print(f"verify: {message}")
            if not passed:
                print("error: the generated model does not reproduce the source; nothing written", file=sys.stderr)
                return 1
        save_atomic(target, args.output)
    except MixedSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - any failure: one line, write nothing
        print(f"error: {str(exc) if args.verbose else one_line(exc)}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0
