"""Reduce a layer's config to the constructor arguments a person would write.

Comparing against a default instance alone is wrong for arguments whose default
depends on others (`MaxPooling2D(strides=None)` means "same as pool_size"), so
every reduction is verified: the reduced arguments must rebuild the same config,
and any key that does not is put back.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from codegen.errors import StitchgenError
from codegen.frontend.publicapi import public_class_path
from codegen.ir.graph import ObjectSpec

_SERIALIZED_KEYS = {"module", "class_name", "config"}
_cache: dict[tuple[type, str], tuple[str, ...]] = {}


def normalize(value: Any) -> Any:
    """Config values in a comparable form: tuples and lists alike, numpy unwrapped."""
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): normalize(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return value


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(normalize(config), sort_keys=True, default=repr)


def _required_params(cls: type) -> list[str]:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.name != "self"
        and p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _leading_positional(cls: type, args: dict[str, Any]) -> tuple[str, ...]:
    """Required arguments that open the signature, as `Conv2D(32, 3, ...)` writes them."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return ()
    leading = []
    for p in params:
        if p.kind != p.POSITIONAL_OR_KEYWORD or p.default is not p.empty or p.name not in args:
            break
        leading.append(p.name)
    return tuple(leading)


def _differing(a: dict[str, Any], b: dict[str, Any], keys) -> list[str]:
    missing = object()
    return [k for k in keys if normalize(a.get(k, missing)) != normalize(b.get(k, missing))]


def reduced_keys(cls: type, config: dict[str, Any]) -> tuple[str, ...]:
    """The config keys that must be passed for `cls` to rebuild `config`."""
    body = {k: v for k, v in config.items() if k != "name"}
    cache_key = (cls, _canonical(body))
    if cache_key in _cache:
        return _cache[cache_key]
    keys = [k for k in config if k != "name"]
    named = {"name": "probe"} if "name" in config else {}
    try:
        required = [k for k in _required_params(cls) if k in config]
        base = cls.from_config({**{k: config[k] for k in required}, **named})
        keep = set(required) | set(_differing(config, base.get_config(), keys))
        for _ in range(3):  # put back whatever the reduced call does not rebuild
            probe = cls.from_config({**{k: config[k] for k in keys if k in keep}, **named})
            wrong = set(_differing(config, probe.get_config(), keys)) - keep
            if not wrong:
                break
            keep |= wrong
    except Exception:  # noqa: BLE001 - a class that cannot be probed keeps every argument
        keep = set(keys)
    result = tuple(k for k in keys if k in keep)
    _cache[cache_key] = result
    return result


def object_spec(value: Any, custom_names: dict[type, str]) -> Any:
    """Turn serialized Keras objects inside a config into constructor calls."""
    if isinstance(value, dict) and _SERIALIZED_KEYS <= set(value):
        return _serialized_to_spec(value, custom_names)
    if isinstance(value, dict):
        return {k: object_spec(v, custom_names) for k, v in value.items()}
    if isinstance(value, list):
        return [object_spec(v, custom_names) for v in value]
    if isinstance(value, tuple):
        return tuple(object_spec(v, custom_names) for v in value)
    return value


def _serialized_to_spec(value: dict[str, Any], custom_names: dict[type, str]) -> Any:
    import keras

    if value["class_name"] in ("DTypePolicy", "FloatDTypePolicy"):
        return value["config"]["name"]
    if value["class_name"] in ("__tuple__", "__bytes__", "__numpy__", "__tensor__"):
        return keras.saving.deserialize_keras_object(value)
    obj = keras.saving.deserialize_keras_object(value)
    cls = type(obj)
    callee = custom_names.get(cls) or public_class_path(cls)
    if callee is None and cls.__name__ in custom_names.values():
        callee = cls.__name__  # a re-registered copy of an emitted custom class
    if callee is None:
        raise StitchgenError(
            f"{cls.__module__}.{cls.__qualname__} is not part of the public Keras API; "
            "pass it as a custom object (module:Class) so its source can be emitted"
        )
    config = value["config"] if isinstance(value["config"], dict) else {}
    keep = reduced_keys(cls, config) if hasattr(cls, "from_config") else tuple(config)
    args = {k: object_spec(config[k], custom_names) for k in keep}
    return ObjectSpec(callee, args)


def constructor_args(layer: Any, custom_names: dict[type, str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Non-default constructor arguments of `layer` (name last) and which read positionally."""
    cls = type(layer)
    config = layer.get_config()
    keep = reduced_keys(cls, config)
    args = {k: object_spec(config[k], custom_names) for k in keep}
    if "name" in config:
        args["name"] = config["name"]
    positional = _leading_positional(cls, args)
    ordered = {k: args[k] for k in positional}
    ordered.update({k: v for k, v in args.items() if k not in ordered})
    return ordered, positional
