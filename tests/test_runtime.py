"""The emitted scripts' runtime as Python: label rules, splits, fingerprints, and what the templates must define.

The training and port scripts inline `codegen/runtime/*.py` below its marker; the
names above the marker stand in for the constants each template defines. These
tests run that code directly (no generated script, no model).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import numpy as np
import pytest

from codegen.runtime import MARKER, inline
from codegen.runtime import training as rt

pytestmark = pytest.mark.unit

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _stand_ins(name: str) -> set[str]:
    """Names a runtime module assigns or defines above its inline marker (the template's job)."""
    text = (Path(rt.__file__).parent / f"{name}.py").read_text(encoding="utf-8").split(MARKER, 1)[0]
    names = set()
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


@pytest.mark.parametrize(
    ("template", "modules"),
    [
        ("train_adapter.py.jinja", ["porting", "training"]),
        ("port_weights.py.jinja", ["porting", "port_model"]),
        ("port_hybrid.py.jinja", ["porting", "port_hybrid"]),
    ],
)
def test_each_template_defines_what_its_runtime_stands_in_for(template, modules):
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for module in modules:
        assert f'runtime("{module}")' in text
        for name in _stand_ins(module):
            defined = f"\n{name} = " in text or f"def {name}(" in text or f'build_source("{name}"' in text
            assert defined, f"{template} inlines {module} but does not define {name}"


@pytest.mark.parametrize(
    ("template", "modules"),
    [
        ("train_adapter.py.jinja", ["porting", "training", "quiet"]),
        ("port_weights.py.jinja", ["porting", "port_model", "quiet"]),
        ("port_hybrid.py.jinja", ["porting", "port_hybrid", "quiet"]),
    ],
)
def test_each_template_imports_what_its_runtime_imports(template, modules):
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for module in modules:
        above = (Path(rt.__file__).parent / f"{module}.py").read_text(encoding="utf-8").split(MARKER, 1)[0]
        for node in ast.parse(above).body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    line = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                    assert f"\n{line}\n" in text or f"\n{line}  #" in text, f"{template} lacks {line!r} ({module})"


def test_a_stored_npz_is_memory_mapped_and_a_compressed_one_loaded(tmp_path):
    x = np.arange(2 * 3 * 4 * 3, dtype="uint8").reshape(2, 3, 4, 3)
    y = np.array([1, 0])
    np.savez(tmp_path / "stored.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)
    np.savez(tmp_path / "fortran.npz", x=np.asfortranarray(x))
    stored = rt.npz_arrays(str(tmp_path / "stored.npz"))
    assert isinstance(stored["x"], np.memmap) and np.array_equal(stored["x"], x) and np.array_equal(stored["y"], y)
    assert np.array_equal(stored["x"][1:2], x[1:2])
    packed = rt.npz_arrays(str(tmp_path / "packed.npz"))
    assert not isinstance(packed["x"], np.memmap) and np.array_equal(packed["x"], x)
    assert np.array_equal(rt.npz_arrays(str(tmp_path / "fortran.npz"))["x"], x)
    (tmp_path / "broken.npz").write_bytes(b"PK not a zip")
    with pytest.raises(rt.TrainError, match="not a readable .npz"):
        rt.npz_arrays(str(tmp_path / "broken.npz"))


@pytest.mark.parametrize("name", ["porting", "port_model", "port_hybrid", "training", "quiet"])
def test_inlined_code_is_standalone_python(name):
    code = inline(name)
    tree = ast.parse(code)
    imported = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in imported:
        modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        assert not any(m and m.split(".")[0] in ("codegen", "stitchgen") for m in modules), ast.unparse(node)


@pytest.fixture
def classes(monkeypatch):
    def set_classes(count, names=None):
        monkeypatch.setattr(rt, "CLASSES", count)
        monkeypatch.setattr(rt, "CLASS_NAMES", names)

    return set_classes


def test_tail_ids_come_from_folder_names(classes):
    classes(None)
    labels, names = rt.own_labels(np.array([0, 1, 1]), ["207", "281"], True, 1000, "train")
    assert labels.tolist() == [207, 281, 281] and names is None


def test_named_folders_without_classes_point_to_the_spec(classes):
    classes(None)
    with pytest.raises(rt.TrainError, match="add classes = 2"):
        rt.own_labels(np.array([0, 1]), ["cat", "dog"], True, 1000, "train")


def test_labels_beyond_the_tail_are_refused(classes):
    classes(None)
    with pytest.raises(rt.TrainError, match=r"labels 12 are outside 0\.\.9"):
        rt.own_labels(np.array([3, 12]), None, True, 10, "train.npz")


def test_new_classes_match_folders_by_name(classes):
    classes(3, ["fox", "cat", "dog"])
    labels, names = rt.own_labels(np.array([0, 1, 0]), ["cat", "dog"], True, 1000, "train")
    assert labels.tolist() == [1, 2, 1] and names == ["fox", "cat", "dog"]
    with pytest.raises(rt.TrainError, match="not among the classes"):
        rt.own_labels(np.array([0]), ["owl"], True, 1000, "train")


def test_new_classes_need_labels(classes):
    classes(3)
    with pytest.raises(rt.TrainError, match="needs them"):
        rt.own_labels(np.array([-1]), None, False, 1000, "train")


def _cache(count: int) -> rt.Cache:
    arrays = (
        np.arange(count, dtype="float32")[:, None],
        [np.zeros((count, 1))],
        np.zeros((count, 2)),
        np.arange(count),
    )
    return rt.Cache(arrays, True)


def test_split_is_disjoint_seeded_and_refuses_tiny_sets():
    train, val = _cache(20).split(0.25)
    assert len(val) == 5 and len(train) == 15
    assert not set(train.labels) & set(val.labels) and set(train.labels) | set(val.labels) == set(range(20))
    assert _cache(20).split(0.25)[1].labels.tolist() == val.labels.tolist()
    with pytest.raises(rt.TrainError, match="pass --val"):
        _cache(1).split(0.5)


def test_soft_targets_are_probabilities_and_probabilities_pass_through():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 50.0]])
    soft = rt.soft(logits, probabilities=False)
    np.testing.assert_allclose(soft.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.argmax(soft, axis=-1).tolist() == [2, 2]
    assert rt.soft(soft, probabilities=True) is soft
    assert rt.is_probability(soft) and not rt.is_probability(logits)


def test_a_run_fingerprint_changes_with_what_makes_another_run(tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"one")

    def args(**changes):
        values = {"weights": str(weights), "data": str(tmp_path), "val": None, "val_split": 0.1, "batch_size": 32}
        values.update(learning_rate=1e-3, tail_weights=None, head_preprocess="none", tail_preprocess="none")
        values.update(changes)
        return argparse.Namespace(**values)

    first = rt.run_fingerprint(args())
    assert rt.run_fingerprint(args()) == first
    assert rt.run_fingerprint(args(learning_rate=1e-2)) != first
    assert rt.run_fingerprint(args(val_split=0.2)) != first
    weights.write_bytes(b"two")  # the same path with other contents is another run
    assert rt.run_fingerprint(args()) != first


def test_data_help_names_the_labels(classes):
    classes(4)
    assert "labels 0..3" in rt.data_help()
    classes(None)
    assert "class ids" in rt.data_help()


def test_the_reserved_transmission_names_are_what_the_hybrid_inlines():
    """A bottleneck hybrid reserves these names in its namespace: they must be all the inlined code defines."""
    from codegen.planning.adapter import TRANSMISSION_CLASSES, TRANSMISSION_NAMES

    tree = ast.parse(inline("transmission"))
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert defined == set(TRANSMISSION_NAMES)
    assert {node.name for node in tree.body if isinstance(node, ast.ClassDef)} == set(TRANSMISSION_CLASSES)
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not imports  # the hybrid module's own `import keras` is all it needs
