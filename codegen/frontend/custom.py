"""Copy a custom layer class's source into the generated file.

The class body is taken verbatim; the module-level names it uses are resolved in
its own module and re-imported from the public API (`keras.src.ops` becomes
`from keras import ops`), so the generated file never imports a private module
or the user's package. A registration decorator with the class's registered
name is added, so `.keras` files that mention the class keep loading.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass

from codegen.errors import StitchgenError
from codegen.frontend.publicapi import public_class_path

_ALLOWED_MODULES = ("numpy", "math", "functools", "itertools", "collections")


@dataclass(frozen=True)
class CustomClassSource:
    name: str
    source: str  # the class statement, decorated, dedented
    imports: tuple[str, ...]  # import statements it needs


def _public_module(module_name: str) -> str | None:
    if module_name == "keras" or (module_name.startswith("keras.") and not module_name.startswith("keras.src")):
        return module_name
    if module_name.startswith("keras.src."):
        candidate = "keras." + module_name[len("keras.src.") :]
        try:
            importlib.import_module(candidate)
        except ImportError:
            return None
        return candidate
    if module_name.split(".")[0] in _ALLOWED_MODULES:
        return module_name
    return None


def _import_line(local: str, module: str) -> str:
    if "." in module:
        parent, last = module.rsplit(".", 1)
        return f"from {parent} import {last}" + ("" if last == local else f" as {local}")
    return f"import {module}" + ("" if module == local else f" as {local}")


def _free_names(tree: ast.AST) -> set[str]:
    """Names read in the class body that it does not bind itself."""
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return loaded - bound


def class_source(cls: type, name: str, package: str, emitted: set[type]) -> CustomClassSource:
    """The source of `cls` ready to paste into a generated module."""
    import keras

    try:
        raw = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        raise StitchgenError(
            f"the source of custom class {cls.__qualname__} is not available; "
            "define it in a .py file that stitchgen can import"
        ) from None
    tree = ast.parse(raw)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    lines = raw.splitlines()
    body = "\n".join(lines[node.lineno - 1 :])  # drop the class's own decorators

    module_globals = vars(sys.modules[cls.__module__])
    emitted_by_name = {c.__name__: c for c in emitted}
    imports: set[str] = set()
    for free in sorted(_free_names(node)):
        if free in emitted_by_name or hasattr(builtins, free):
            continue
        if free not in module_globals:
            raise StitchgenError(f"custom class {cls.__qualname__} uses {free!r}, which stitchgen cannot resolve")
        obj = module_globals[free]
        if inspect.ismodule(obj):
            public = _public_module(obj.__name__)
            if public is None:
                raise StitchgenError(
                    f"custom class {cls.__qualname__} uses module {obj.__name__}, "
                    "which generated code may not import"
                )
            imports.add(_import_line(free, public))
            continue
        path = public_class_path(obj) if isinstance(obj, type) else None
        if path is None:
            raise StitchgenError(
                f"custom class {cls.__qualname__} uses {free!r} from {cls.__module__}, "
                "which is not public Keras and cannot be copied"
            )
        module, attr = path.rsplit(".", 1)
        module = "keras." + module if not module.startswith("keras") else module
        imports.add(f"from {module} import {attr}" + ("" if attr == free else f" as {free}"))

    registered = keras.saving.get_registered_name(cls)
    reg_package, _, reg_name = registered.rpartition(">")
    decorator = (
        "@keras.saving.register_keras_serializable("
        f"package={reg_package or package!r}, name={reg_name or cls.__name__!r})"
    )
    imports.add("import keras")
    return CustomClassSource(name, decorator + "\n" + body, tuple(sorted(imports)))
