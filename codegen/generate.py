"""Pick the project kind a spec describes and produce its files."""

from __future__ import annotations

from pathlib import Path

from codegen.project import ModelProject
from codegen.spec import StitchSpec, load_spec


def generate_files(spec_path: Path, style: str | None = None) -> tuple[dict[str, str], Path]:
    """(file name -> text, default output directory) for the spec at `spec_path`; `style` overrides the spec's."""
    spec = load_spec(spec_path, style)
    if isinstance(spec, StitchSpec):
        from codegen.stitch import StitchProject

        return StitchProject.from_spec(spec).files(), spec.output_dir
    return ModelProject.from_spec(spec).files(), spec.output_dir
