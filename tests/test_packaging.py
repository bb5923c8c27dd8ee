"""The templates ship inside the wheel, so a plain `pip install .` works outside a checkout."""

from __future__ import annotations

import json
from importlib import metadata

from codegen.backend.templating import templates_dir


def test_templates_are_found():
    names = {p.name for p in templates_dir().iterdir()}
    assert {"model.py.jinja", "port_weights.py.jinja"} <= names


def test_installed_distribution_carries_templates():
    dist = metadata.distribution("stitchgen")
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        # an editable install reads templates/ from the checkout, checked above
        assert templates_dir().name == "templates"
        return
    files = {str(f) for f in dist.files or ()}
    assert "codegen/templates/model.py.jinja" in files
    assert "codegen/templates/port_weights.py.jinja" in files
    assert "stitchgen/__init__.py" in files and "stitchgen/py.typed" in files
