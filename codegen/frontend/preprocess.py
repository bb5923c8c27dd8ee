"""Which preprocessing function each side of a hybrid uses.

A keras.applications network expects its family's own `preprocess_input`
(MobileNet scales to [-1, 1], ResNet50 subtracts the ImageNet mean in BGR
order, EfficientNet does it inside the model); anything else defaults to none.
"""

from __future__ import annotations

import importlib
import inspect

from codegen.errors import StitchgenError
from codegen.frontend.spec import ModelSource


def default_preprocess(source: ModelSource) -> str:
    """`keras.applications.mobilenet.preprocess_input` for MobileNet; "none" when there is no family function."""
    if source.kind != "application":
        return "none"
    import keras

    constructor = getattr(keras.applications, source.source.rsplit(".", 1)[1], None)
    module = inspect.getmodule(constructor)
    if module is None:
        return "none"
    public = "keras.applications." + module.__name__.rsplit(".", 1)[1]
    try:
        family = importlib.import_module(public)
    except ImportError:
        return "none"
    return f"{public}.preprocess_input" if callable(getattr(family, "preprocess_input", None)) else "none"


def check_preprocess(path: str, where: str) -> str:
    """`path` if it names a callable (or is "none"); a one-line error otherwise."""
    if path == "none":
        return path
    module, _, name = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise StitchgenError(
            f'{where} preprocess {path!r} cannot be imported; give a dotted function path or "none"'
        ) from None
    if not callable(function):
        raise StitchgenError(f"{where} preprocess {path!r} is not a function")
    return path
