"""What a hybrid's port script does: both sources into the hybrid, verify each side, write.

The template defines the constants (sources, frontier, LAYER_MAP, a new
classifier's names) and the builders of both sources, then inlines `porting` and
this module after the marker. The values here stand in for a generated script's.
"""

import argparse
import sys

import keras
import numpy as np

from codegen.runtime.porting import (
    MixedSetError,
    compare_outputs,
    copy_by_name,
    flatten,
    load_generated,
    one_line,
    operation_output,
    port_rows,
    save_atomic,
    weights_argument,
)

HEAD_DEFAULT_WEIGHTS = TAIL_DEFAULT_WEIGHTS = "imagenet"
HERE = "."
TOLERANCE = 1e-5
TAIL_SOURCE_INPUT_SHAPE = (32, 32, 3)
HEAD_OUTPUT = ("head_end", 0)
TAIL_FRONTIER = (("tail_start", 0),)
LAYER_MAP = ()
CLASSIFIER = NEW_TOP = CLASSIFIER_INPUT = None


def build_head_source(weights):
    """The head's source model; the template writes one per source kind."""
    raise NotImplementedError(weights)


def build_tail_source(weights):
    """The tail's source model; the template writes one per source kind."""
    raise NotImplementedError(weights)


# --- inline ---


def port(sources, target):
    """Copy every weight LAYER_MAP names from the head and tail sources into `target`, all rows checked first."""
    port_rows(sources, target, LAYER_MAP)


def load_adapter(path, target, generated):
    adapter = generated.build_adapter()
    adapter.load_weights(path)
    copy_by_name(adapter, target)


def _submodel(model, outputs):
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    return keras.Model(inputs, outputs)


def verify(sources, target, generated, tolerance=TOLERANCE, seed=0, batch_size=2):
    """((head passed, message), (tail passed, message)) on seeded random batches."""
    rng = np.random.default_rng(seed)
    head_source, tail_source = sources["head"], sources["tail"]

    head = generated.build_head()
    copy_by_name(target, head)
    x = rng.standard_normal((batch_size,) + tuple(generated.INPUT_SHAPE)).astype("float32")
    reference = _submodel(head_source, operation_output(head_source, *HEAD_OUTPUT))
    head_result = compare_outputs(flatten(reference(x, training=False)), flatten(head(x, training=False)), tolerance)

    tail = generated.build_tail()
    copy_by_name(target, tail)
    y = rng.standard_normal((batch_size,) + tuple(TAIL_SOURCE_INPUT_SHAPE)).astype("float32")
    frontier = _submodel(tail_source, [operation_output(tail_source, *t) for t in TAIL_FRONTIER])
    activations = frontier(y, training=False)
    if not isinstance(activations, (list, tuple)):
        activations = [activations]
    if CLASSIFIER is not None:  # compare where the new top starts
        tail_source = _submodel(tail_source, operation_output(tail_source, *CLASSIFIER_INPUT))
        tail = keras.Model(tail.inputs, tail.get_layer(NEW_TOP).input)
    expected, actual = tail_source(y, training=False), tail(list(activations), training=False)
    tail_result = compare_outputs(flatten(expected), flatten(actual), tolerance)
    return head_result, tail_result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--head-weights", help=f"head source weights (default: {HEAD_DEFAULT_WEIGHTS})".replace("%", "%%")
    )
    parser.add_argument(
        "--tail-weights", help=f"tail source weights (default: {TAIL_DEFAULT_WEIGHTS})".replace("%", "%%")
    )
    parser.add_argument("--adapter-weights", help="weights of build_adapter() to load (default: fresh)")
    parser.add_argument("--output", required=True, help="where to write the hybrid's weights (.weights.h5)")
    parser.add_argument(
        "--verify", action="store_true", help="check head and tail against their sources before writing"
    )
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help="relative tolerance for --verify (default: %(default)s)"
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's logs and whole error messages")
    args = parser.parse_args(argv)
    if not args.output.endswith(".weights.h5"):
        parser.error("--output must end in .weights.h5")
    try:
        generated = load_generated()
        head_weights = weights_argument(args.head_weights, HEAD_DEFAULT_WEIGHTS, HERE)
        tail_weights = weights_argument(args.tail_weights, TAIL_DEFAULT_WEIGHTS, HERE)
        sources = {"tail": build_tail_source(tail_weights)}
        sources["head"] = build_head_source(head_weights)
        keras.utils.set_random_seed(0)  # the adapter (and a new classifier) start the same in every run
        target = generated.build_model()
        port(sources, target)
        if args.adapter_weights:
            load_adapter(args.adapter_weights, target, generated)
        if args.verify:
            failed = False
            for side, (passed, message) in zip(("head", "tail"), verify(sources, target, generated, args.tolerance)):
                print(f"verify {side}: {message}")
                failed = failed or not passed
            if failed:
                print("error: the hybrid does not reproduce its sources; nothing written", file=sys.stderr)
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
