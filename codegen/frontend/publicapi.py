"""Where a Keras class or operation lives in the public API.

Generated code may only name public symbols (`layers.Conv2D`, `ops.sum`,
`keras.initializers.GlorotUniform`), never `keras.src`. These tables are built
by scanning the public modules once, so a class that Keras does not export is
caught at generation time rather than in the user's repository.
"""

from __future__ import annotations

import functools
import re

# module object path -> the expression the generated file uses for it
_PUBLIC_MODULES = (
    ("keras.layers", "layers"),
    ("keras.initializers", "keras.initializers"),
    ("keras.regularizers", "keras.regularizers"),
    ("keras.constraints", "keras.constraints"),
    ("keras.activations", "keras.activations"),
    ("keras.quantizers", "keras.quantizers"),
    ("keras", "keras"),
    ("keras.models", "keras.models"),
)


@functools.cache
def _class_table() -> dict[type, str]:
    import importlib

    table: dict[type, str] = {}
    for module_path, alias in _PUBLIC_MODULES:
        module = importlib.import_module(module_path)
        # the class's own name first, so `MaxPooling2D` wins over its alias `MaxPool2D`
        attrs = sorted(dir(module), key=lambda a: (a != getattr(getattr(module, a, None), "__name__", None), a))
        for attr in attrs:
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr, None)
            if isinstance(obj, type):
                table.setdefault(obj, f"{alias}.{attr}")
    return table


def public_class_path(cls: type) -> str | None:
    """`layers.Conv2D` for Keras's Conv2D class; None if Keras does not export it."""
    return _class_table().get(cls)


def to_snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def public_op_function(op_class: type) -> str | None:
    """`sum` for the `Sum` operation class, if `keras.ops.sum` exists."""
    from keras import ops

    candidates = [to_snake_case(op_class.__name__), op_class.__name__.lower()]
    for name in candidates:
        if callable(getattr(ops, name, None)):
            return name
    return None
