"""Pick the project kind a spec describes and produce its files."""

from __future__ import annotations

from pathlib import Path

from codegen.frontend.spec import ModelSpec, StitchSpec, load_spec
from codegen.products.model import ModelProject


def generate_files(
    spec_path: Path, style: str | None = None, output_dir: Path | None = None
) -> tuple[dict[str, str], Path]:
    """(file name -> text, output directory) for the spec at `spec_path`.

    `style` and `output_dir` override the spec's keys. The output directory matters
    to the text: the emitted scripts record model and weights files relative to it.
    """
    spec = load_spec(spec_path, style, output_dir)
    return files_for(spec), spec.output_dir


def files_for(spec: ModelSpec | StitchSpec) -> dict[str, str]:
    """File name -> text for a loaded spec."""
    if isinstance(spec, StitchSpec):
        from codegen.products.hybrid import StitchProject

        return StitchProject.from_spec(spec).files()
    return ModelProject.from_spec(spec).files()


def import_generated(project, prefix: str = "_stitchgen_"):
    """Generate `project` into a temporary folder and import its model module.

    For tools that run the code the user would check in (report, export): the
    module stays loaded after the folder is gone.
    """
    import importlib.util
    import sys
    import tempfile

    from codegen.write import write_files

    name = project.spec.name
    with tempfile.TemporaryDirectory() as tmp:
        write_files(project.files(), Path(tmp))
        spec = importlib.util.spec_from_file_location(prefix + name, Path(tmp) / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module
