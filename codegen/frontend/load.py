"""Build or load a source model in a fresh Keras naming scope.

Auto-generated layer names (`conv2d_157`) depend on what was built before in
the process, so every load starts with `keras.backend.clear_session()`: the
names then match what a fresh process sees, which is what the port script sees.
"""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codegen.errors import StitchgenError
from codegen.frontend.spec import ModelSource


@contextmanager
def _importable(directory: Path) -> Iterator[None]:
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(directory))
        except ValueError:
            pass


def import_object(dotted: str, base_dir: Path, what: str) -> Any:
    """`package.module:attr` -> the object, with a one-line error on failure."""
    module_name, _, attr = dotted.partition(":")
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module_name) or not attr.isidentifier():
        raise StitchgenError(f"{what} {dotted!r} is not 'package.module:name'")
    with _importable(base_dir.resolve()):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise StitchgenError.wrapping(f"cannot import {what} module {module_name!r}", exc) from None
        except Exception as exc:  # noqa: BLE001 - a user's module may raise anything on import
            raise StitchgenError.wrapping(
                f"importing {what} module {module_name!r} failed: {type(exc).__name__}", exc
            ) from None
    if not hasattr(module, attr):
        raise StitchgenError(f"module {module_name!r} has no {what} {attr!r}")
    return getattr(module, attr)


def custom_objects(source: ModelSource) -> dict[str, type]:
    objects = {}
    for dotted in source.custom_objects:
        value = import_object(dotted, source.base_dir, "custom object")
        if not isinstance(value, type):
            raise StitchgenError(f"custom object {dotted!r} is a {type(value).__name__}, not a layer class")
        objects[dotted.partition(":")[2]] = value
    return objects


@contextmanager
def _imagenet_architecture() -> Iterator[None]:
    """Let `keras.applications.X(weights="imagenet")` build its layers without fetching weights.

    Some families build a different graph for imagenet weights (EfficientNet adds a
    Rescaling layer after its Normalization), so the generated model must come from
    the same call the port script makes. Inside this block the weights file request
    returns a marker and loading that marker does nothing: the layers are Keras's,
    the weights initial. Nothing is downloaded or read.
    """
    import keras

    file_utils = sys.modules["keras.src.utils.file_utils"]  # the module the applications call get_file on
    marker = "stitchgen-architecture-only.weights.h5"
    get_file, load_weights = file_utils.get_file, keras.Model.load_weights

    def no_fetch(*args: Any, **kwargs: Any) -> str:
        return marker

    def no_load(self: Any, filepath: Any, *args: Any, **kwargs: Any) -> Any:
        if filepath == marker:
            return None
        return load_weights(self, filepath, *args, **kwargs)

    file_utils.get_file, keras.Model.load_weights = no_fetch, no_load
    try:
        with warnings.catch_warnings():
            # e.g. "weights for input shape (224, 224) will be loaded": true of the port
            # script, which loads them and shows it; here nothing is loaded
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        file_utils.get_file, keras.Model.load_weights = get_file, load_weights


def load_model(source: ModelSource) -> Any:
    """The source model with initial (not pretrained) weights, in a fresh naming scope."""
    import keras

    keras.backend.clear_session()
    objects = custom_objects(source)
    try:
        if source.kind == "application":
            constructor = getattr(keras.applications, source.source.rsplit(".", 1)[1])
            if source.weights == "imagenet":  # the graph the port script's imagenet call builds
                with _imagenet_architecture():
                    return constructor(weights="imagenet", **source.kwargs)
            return constructor(weights=None, **source.kwargs)
        if source.kind == "file":
            with keras.saving.custom_object_scope(objects):
                return keras.saving.load_model(source.path, compile=False, safe_mode=True)
        builder = import_object(source.source, source.base_dir, "builder")
        model = builder(**source.kwargs)
    except StitchgenError:
        raise
    except (TypeError, ValueError) as exc:
        raise StitchgenError.wrapping(f"cannot build {source.source}", exc) from None
    except Exception as exc:  # noqa: BLE001 - builders, h5py and Keras raise many kinds
        verb = "load" if source.kind == "file" else "build"
        raise StitchgenError.wrapping(f"cannot {verb} {source.source}: {type(exc).__name__}", exc) from None
    if not isinstance(model, keras.Model):
        raise StitchgenError(f"builder {source.source} returned {type(model).__name__}, not a keras.Model")
    return model
