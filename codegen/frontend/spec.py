"""Read and validate TOML specs. Every problem is one StitchgenError line."""

from __future__ import annotations

import dataclasses
import difflib
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from codegen.errors import StitchgenError

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
STYLES = ("factored", "flat")
ADAPTER_KINDS = ("auto", "linear", "conv", "bottleneck")  # [adapter] kind; planning/adapter.py designs each
TRANSMIT_PRECISIONS = ("float32", "float16", "int8")  # [adapter] transmit, for kind = "bottleneck"
MAX_STRIDE = 8
WEIGHT_KEYWORDS = ("imagenet", "none", "saved")
# Module names that would shadow what the generated files import (a circular import at run time).
# a module named like one the generated files import would be imported in its place
_SHADOWING = frozenset(sys.stdlib_module_names) | {
    "keras",
    "numpy",
    "tensorflow",
    "h5py",
    "matplotlib",
    "ai_edge_litert",
    "codegen",
    "stitchgen",
}


def as_keras_values(value: Any) -> Any:
    """TOML and JSON arrays as tuples, recursively: Keras compares shapes with tuples.

    `input_shape = [224, 224, 3]` reaches `keras.applications.*` as `(224, 224, 3)`,
    which its `imagenet` checks compare with `==`; the same values are rendered
    into the emitted scripts, so both see one type.
    """
    if isinstance(value, list | tuple):
        return tuple(as_keras_values(v) for v in value)
    if isinstance(value, dict):
        return {k: as_keras_values(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ModelSource:
    """Where a source model comes from, as a spec or the command line names it."""

    source: str
    kind: str  # "application" | "file" | "builder"
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str = "none"
    custom_objects: tuple[str, ...] = ()
    base_dir: Path = Path(".")

    @property
    def path(self) -> Path:
        return (self.base_dir / self.source).resolve()

    @property
    def weights_is_file(self) -> bool:
        """True when `weights` names a file (resolved relative to the spec), not a keyword."""
        return self.weights not in WEIGHT_KEYWORDS

    @property
    def weights_path(self) -> Path:
        return (self.base_dir / self.weights).resolve()

    def describe(self) -> str:
        """A one-line, machine-independent description for headers."""
        if self.kind == "file":
            return f"{self.kind} {Path(self.source).name}"
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.source}({args})"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: ModelSource
    spec_path: Path
    output_dir: Path
    style: str = "factored"
    declared_style: str = "factored"  # the spec file's own style key (the CLI may override it)
    output_dir_given: bool = False  # True when --output-dir replaced the spec's output_dir


def _fail(spec_path: Path | None, message: str) -> StitchgenError:
    where = f"{spec_path.name}: " if spec_path else ""
    return StitchgenError(where + message)


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str, spec_path: Path) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            raise _fail(spec_path, f"unknown key {key!r} in {where}{hint}")


def check_name(name: Any, spec_path: Path | None) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or keyword.iskeyword(name):
        raise _fail(spec_path, f"name {name!r} must be a lowercase Python module name such as 'my_model'")
    if name in _SHADOWING:
        raise _fail(
            spec_path, f"name {name!r} would shadow the {name!r} module the generated files import; pick another"
        )
    return name


_OBJECT_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def parse_source(
    source: Any,
    *,
    kwargs: Any = None,
    weights: Any = None,
    custom_objects: Any = (),
    base_dir: Path = Path("."),
    spec_path: Path | None = None,
    where: str = "[model]",
) -> ModelSource:
    """Validate one model source; the same rules serve specs and the command line."""
    if not isinstance(source, str) or not source.strip():
        raise _fail(spec_path, f"{where} source must be a non-empty string")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise _fail(spec_path, f"{where} kwargs must be a table, e.g. kwargs = {{ input_shape = [224, 224, 3] }}")
    if "weights" in kwargs:
        raise _fail(spec_path, f"{where} put weights in its own key (weights = ...), not in kwargs")
    if (
        isinstance(custom_objects, str)
        or not isinstance(custom_objects, (list, tuple))
        or not all(isinstance(c, str) and _OBJECT_RE.fullmatch(c) for c in custom_objects)
    ):
        raise _fail(
            spec_path,
            f"{where} custom_objects must be a list of 'package.module:Class' strings; got {custom_objects!r}",
        )

    if source.startswith("keras.applications."):
        import keras

        attr = source[len("keras.applications.") :]
        available = sorted(a for a in dir(keras.applications) if a[:1].isupper())
        if attr not in available:
            close = difflib.get_close_matches(attr, available, n=3)
            hint = f"; did you mean {', '.join('keras.applications.' + c for c in close)}?" if close else ""
            raise _fail(spec_path, f"{where} keras.applications has no model {attr!r}{hint}")
        kind, default_weights = "application", "imagenet"
    elif source.endswith((".keras", ".h5")):
        kind, default_weights = "file", "saved"
        if kwargs:
            raise _fail(spec_path, f"{where} kwargs do not apply to a saved model file")
        if not (base_dir / source).is_file():
            raise _fail(spec_path, f"{where} model file {source!r} does not exist")
    elif re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", source):
        kind, default_weights = "builder", "none"
    else:
        raise _fail(
            spec_path,
            f"{where} source {source!r} is not keras.applications.NAME, a .keras/.h5 file, or module:function",
        )
    if weights is None:
        weights = default_weights
    if not isinstance(weights, str) or not weights:
        raise _fail(spec_path, f"{where} weights must be a string: imagenet, none, or a weights file")
    if weights == "imagenet" and kind != "application":
        raise _fail(spec_path, f'{where} weights "imagenet" exist only for keras.applications sources')
    if weights == "saved" and kind != "file":
        raise _fail(spec_path, f'{where} weights "saved" means the weights inside a .keras/.h5 source file')
    if weights not in WEIGHT_KEYWORDS and not (base_dir / weights).is_file():
        raise _fail(
            spec_path,
            f"{where} weights file {weights!r} does not exist (relative to {'the spec' if spec_path else 'this folder'}); "
            "give imagenet, none, or an existing weights file",
        )
    return ModelSource(source, kind, as_keras_values(dict(kwargs)), weights, tuple(custom_objects), base_dir)


def _source_table(table: Any, where: str, spec_path: Path, extra: tuple[str, ...] = ()) -> ModelSource:
    if not isinstance(table, dict):
        raise _fail(spec_path, f"{where} must be a table")
    _check_keys(table, ("source", "kwargs", "weights", "custom_objects") + extra, where, spec_path)
    if "source" not in table:
        raise _fail(spec_path, f'{where} needs a source, e.g. source = "keras.applications.MobileNet"')
    return parse_source(
        table["source"],
        kwargs=table.get("kwargs"),
        weights=table.get("weights"),
        custom_objects=table.get("custom_objects", ()),
        base_dir=spec_path.parent,
        spec_path=spec_path,
        where=where,
    )


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StitchgenError(f"spec file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise _fail(path, "not a spec: its tables or arrays are nested too deeply") from None


@dataclass(frozen=True)
class StitchSpec:
    """A head cut from one network, an adapter, and a tail from another."""

    name: str
    head: ModelSource
    tail: ModelSource
    cut: int | str
    start: int | str
    adapter_kind: str
    spec_path: Path
    output_dir: Path
    head_trainable: bool = False
    tail_trainable: bool = False
    adapter_trainable: bool = True
    style: str = "factored"
    declared_style: str = "factored"  # the spec file's own style key (the CLI may override it)
    output_dir_given: bool = False  # True when --output-dir replaced the spec's output_dir
    adapter_side: str = "server"  # where `stitchgen export` puts the adapter: "server" or "phone"
    head_preprocess: str | None = None  # dotted function path or "none"; None: the source family's
    tail_preprocess: str | None = None
    classes: int | None = None  # [tail] classes: a new N-way classifier replaces the tail's own
    class_names: tuple[str, ...] | None = None  # when [tail] classes lists the names
    tail_trainable_from: int | str | None = None  # [tail] trainable_from: unfreeze this tail layer and the rest
    bottleneck: Bottleneck | None = None  # [adapter] kind = "bottleneck": what the phone sends


@dataclass(frozen=True)
class Bottleneck:
    """A bottleneck adapter's settings: the encoder's width and stride, and the transmitted precision."""

    channels: int
    transmit: str = "int8"
    stride: int = 1


MAX_CLASSES = 1_000_000


def _classes(table: dict, spec_path: Path) -> tuple[int | None, tuple[str, ...] | None]:
    """`[tail] classes = N` or a list of class names: (N, names or None)."""
    if "classes" not in table:
        return None, None
    value = table["classes"]
    hint = 'a number of classes (classes = 3) or their names (classes = ["cat", "dog", "fox"])'
    if isinstance(value, list):
        if not all(isinstance(v, str) and v and v.isprintable() for v in value):
            raise _fail(spec_path, f"[tail] classes must be {hint}; the names must be non-empty printable strings")
        if len(set(value)) != len(value):
            raise _fail(spec_path, "[tail] classes lists a name twice")
        names: tuple[str, ...] | None = tuple(value)
        count = len(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        names, count = None, value
    else:
        raise _fail(spec_path, f"[tail] classes must be {hint}; got {value!r}")
    if not 2 <= count <= MAX_CLASSES:
        raise _fail(spec_path, f"[tail] classes must be between 2 and {MAX_CLASSES:,}; got {count}")
    return count, names


def _preprocess(table: dict, where: str, spec_path: Path) -> str | None:
    if "preprocess" not in table:
        return None
    value = table["preprocess"]
    if not isinstance(value, str) or not (value == "none" or re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", value)):
        raise _fail(
            spec_path,
            f"{where} preprocess must be a dotted function path such as "
            f'"keras.applications.mobilenet.preprocess_input", or "none"; got {value!r}',
        )
    return value


def _position(table: dict, key: str, where: str, spec_path: Path) -> int | str:
    if key not in table:
        raise _fail(spec_path, f"{where} needs {key} = a layer index or name")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _fail(spec_path, f"{where} {key} must be a layer index or a layer name")
    return value


def _flag(table: dict, key: str, default: bool, where: str, spec_path: Path) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise _fail(spec_path, f"{where} {key} must be true or false")
    return value


def _load_stitch(data: dict, spec_path: Path, name: str, output_dir: Path, style: str) -> StitchSpec:
    _check_keys(data, ("name", "output_dir", "style", "head", "tail", "adapter"), "the spec", spec_path)
    for table in ("head", "tail"):
        if table not in data:
            raise _fail(spec_path, f"a stitch spec needs a [{table}] table")
    head_table, tail_table = data["head"], data["tail"]
    adapter = data.get("adapter", {})
    if not isinstance(adapter, dict):
        raise _fail(spec_path, "[adapter] must be a table")
    _check_keys(adapter, ("kind", "trainable", "side", "channels", "transmit", "stride"), "[adapter]", spec_path)
    side = adapter.get("side", "server")
    if side not in ("server", "phone"):
        raise _fail(spec_path, f'[adapter] side {side!r} must be "server" (with the tail) or "phone" (with the head)')
    kind = adapter.get("kind", "auto")
    if kind not in ADAPTER_KINDS:
        raise _fail(spec_path, f"[adapter] kind {kind!r} does not exist; choose one of {', '.join(ADAPTER_KINDS)}")
    bottleneck = _bottleneck(adapter, kind, spec_path)
    head = _source_table(head_table, "[head]", spec_path, extra=("cut", "trainable", "preprocess"))
    tail = _source_table(
        tail_table, "[tail]", spec_path, extra=("start", "trainable", "preprocess", "classes", "trainable_from")
    )
    classes, class_names = _classes(tail_table, spec_path)
    return StitchSpec(
        name=name,
        head=head,
        tail=tail,
        cut=_position(head_table, "cut", "[head]", spec_path),
        start=_position(tail_table, "start", "[tail]", spec_path),
        adapter_kind=kind,
        spec_path=spec_path,
        output_dir=output_dir,
        head_trainable=_flag(head_table, "trainable", False, "[head]", spec_path),
        tail_trainable=_flag(tail_table, "trainable", False, "[tail]", spec_path),
        adapter_trainable=_flag(adapter, "trainable", True, "[adapter]", spec_path),
        style=style,
        adapter_side=side,
        head_preprocess=_preprocess(head_table, "[head]", spec_path),
        tail_preprocess=_preprocess(tail_table, "[tail]", spec_path),
        classes=classes,
        class_names=class_names,
        tail_trainable_from=(
            _position(tail_table, "trainable_from", "[tail]", spec_path) if "trainable_from" in tail_table else None
        ),
        bottleneck=bottleneck,
    )


def _bottleneck(adapter: dict, kind: str, spec_path: Path) -> Bottleneck | None:
    """`channels`, `transmit` and `stride` of a bottleneck adapter; an error for any other kind.

    The upper bound on `channels` (the head's output channels) is checked once the head is loaded.
    """
    given = [key for key in ("channels", "transmit", "stride") if key in adapter]
    if kind != "bottleneck":
        if given:
            raise _fail(spec_path, f'[adapter] {given[0]} applies only to kind = "bottleneck", not {kind!r}')
        return None
    if "side" in adapter:
        raise _fail(
            spec_path,
            '[adapter] side does not apply to kind = "bottleneck": its encoder runs on the phone and its decoder '
            "on the server; remove side",
        )
    if "channels" not in adapter:
        raise _fail(spec_path, '[adapter] kind = "bottleneck" needs channels = N, the width of what the phone sends')
    channels = adapter["channels"]
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise _fail(spec_path, f"[adapter] channels must be a whole number of at least 1; got {channels!r}")
    transmit = adapter.get("transmit", "int8")
    if transmit not in TRANSMIT_PRECISIONS:
        raise _fail(
            spec_path, f"[adapter] transmit {transmit!r} is not one of {', '.join(map(repr, TRANSMIT_PRECISIONS))}"
        )
    stride = adapter.get("stride", 1)
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= MAX_STRIDE:
        raise _fail(spec_path, f"[adapter] stride must be a whole number from 1 to {MAX_STRIDE}; got {stride!r}")
    return Bottleneck(channels, transmit, stride)


def load_spec(
    path: str | Path, style: str | None = None, output_dir: str | Path | None = None
) -> ModelSpec | StitchSpec:
    """The spec at `path`; `style` and `output_dir` (relative to the working directory) override its keys."""
    spec_path = Path(path)
    return spec_from_data(read_toml(spec_path), spec_path, style, output_dir)


def spec_from_data(
    data: dict[str, Any], spec_path: Path, style: str | None = None, output_dir: str | Path | None = None
) -> ModelSpec | StitchSpec:
    """A spec from its parsed TOML `data`, as if read from `spec_path` (relative paths start at its folder)."""
    if not isinstance(data, dict):
        raise _fail(spec_path, "a spec is a table of keys (a dict)")
    given = output_dir is not None
    if "head" in data or "tail" in data:
        name = check_name(data.get("name"), spec_path)
        out, chosen = _output_dir_and_style(data, spec_path, style, output_dir)
        stitch = _load_stitch(data, spec_path, name, out, chosen)
        return dataclasses.replace(stitch, declared_style=data.get("style", "factored"), output_dir_given=given)
    _check_keys(data, ("name", "output_dir", "style", "model"), "the spec", spec_path)
    if "name" not in data:
        raise _fail(spec_path, 'the spec needs a name, e.g. name = "my_model"')
    if "model" not in data:
        raise _fail(spec_path, "the spec needs a [model] table")
    name = check_name(data["name"], spec_path)
    out, chosen = _output_dir_and_style(data, spec_path, style, output_dir)
    return ModelSpec(
        name=name,
        model=_source_table(data["model"], "[model]", spec_path),
        spec_path=spec_path,
        output_dir=out,
        style=chosen,
        declared_style=data.get("style", "factored"),
        output_dir_given=given,
    )


def _output_dir_and_style(
    data: dict, spec_path: Path, override: str | None, output_dir: str | Path | None
) -> tuple[Path, str]:
    """The output folder and the style: the overrides, else the spec's keys (output_dir relative to the spec)."""
    declared_dir = data.get("output_dir", ".")
    if not isinstance(declared_dir, str):
        raise _fail(spec_path, "output_dir must be a path string, relative to the spec")
    declared_style = data.get("style", "factored")
    if not isinstance(declared_style, str) or declared_style not in STYLES:
        raise _fail(spec_path, f"style {declared_style!r} is not one of {', '.join(STYLES)}")
    chosen = override or declared_style
    if chosen not in STYLES:
        raise _fail(spec_path, f"style {chosen!r} is not one of {', '.join(STYLES)}")
    out = Path(output_dir) if output_dir is not None else spec_path.parent / declared_dir
    return out, chosen
