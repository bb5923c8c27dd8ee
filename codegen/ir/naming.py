"""Safe, unique Python identifiers for names that come from a model."""

from __future__ import annotations

import builtins
import keyword
import re

_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))


def to_identifier(name: str) -> str:
    """A valid Python identifier that still resembles `name`."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name.strip()).strip("_").lower()
    ident = re.sub(r"_+", "_", ident)
    if not ident:
        ident = "v"
    if ident[0].isdigit():
        ident = "_" + ident
    return ident


class Namespace:
    """Hands out unique identifiers, avoiding keywords, builtins and module names.

    Deterministic: the same sequence of requests yields the same names. A function's
    local namespace names its module's as `parent`: a local never takes a module-level
    name, whenever either is handed out, and the module never takes a name a local
    already holds (a nested model's builder is named while its caller's body is emitted).
    """

    def __init__(self, reserved: set[str] | None = None, parent: Namespace | None = None) -> None:
        self._used = set(_RESERVED) | set(reserved or ())
        self._by_key: dict[object, str] = {}
        self._parent = parent
        self._held_by_locals: set[str] = set()

    def used(self) -> set[str]:
        return set(self._used)

    def _taken(self, candidate: str) -> bool:
        if candidate in self._used or candidate in self._held_by_locals:
            return True  # locals of different functions may share names; module names are unique
        return self._parent is not None and candidate in self._parent._used

    def reserve(self, name: str) -> None:
        self._used.add(name)

    def name(self, hint: str, key: object | None = None) -> str:
        if key is not None and key in self._by_key:
            return self._by_key[key]
        base = to_identifier(hint)
        candidate = base
        counter = 1
        while self._taken(candidate):
            candidate = f"{base}_{counter}"
            counter += 1
        self._used.add(candidate)
        if self._parent is not None:
            self._parent._held_by_locals.add(candidate)
        if key is not None:
            self._by_key[key] = candidate
        return candidate


# short names of layer classes, for helper names (`conv_bn_relu`) and structural layer names
SHORT_CLASS_NAMES = {
    "Conv1D": "conv",
    "Conv2D": "conv",
    "Conv3D": "conv",
    "DepthwiseConv2D": "dwconv",
    "SeparableConv2D": "sepconv",
    "Dense": "dense",
    "BatchNormalization": "bn",
    "LayerNormalization": "ln",
    "Activation": "act",
    "ReLU": "relu",
    "ZeroPadding2D": "pad",
    "MaxPooling2D": "maxpool",
    "AveragePooling2D": "avgpool",
    "Concatenate": "concat",
}
