"""Build or load a source model in a fresh Keras naming scope.

Auto-generated layer names (`conv2d_157`) depend on what was built before in
the process, so every load starts with `keras.backend.clear_session()`: the
names then match what a fresh process sees, which is what the port script sees.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codegen.errors import StitchgenError
from codegen.spec import ModelSource


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
    with _importable(base_dir.resolve()):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise StitchgenError(f"cannot import {what} module {module_name!r}: {exc}") from None
    if not hasattr(module, attr):
        raise StitchgenError(f"module {module_name!r} has no {what} {attr!r}")
    return getattr(module, attr)


def custom_objects(source: ModelSource) -> dict[str, type]:
    return {
        dotted.partition(":")[2]: import_object(dotted, source.base_dir, "custom object")
        for dotted in source.custom_objects
    }


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StitchgenError(f"cannot build {source.source}: {first}") from None
    if not isinstance(model, keras.Model):
        raise StitchgenError(f"builder {source.source} returned {type(model).__name__}, not a keras.Model")
    return model
