"""The factored style: one helper per repeated motif, loops over runs, structure kept apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import keras
import pytest
from helpers import import_path, max_abs_diff, randomize_weights, seeded_batch

from codegen.frontend.spec import ModelSpec, parse_source
from codegen.products.model import ModelProject

TESTS = Path(__file__).resolve().parent


def generate(function: str, tmp_path: Path, style: str = "factored", **kwargs) -> str:
    source = parse_source(f"models_for_tests:{function}", kwargs=kwargs, base_dir=TESTS)
    spec = ModelSpec(name="model", model=source, spec_path=TESTS / "spec.toml", output_dir=tmp_path, style=style)
    return ModelProject.from_spec(spec).files()["model.py"]


def helpers_of(text: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(text)
    return {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("build_")}


def calls_to(text: str, name: str) -> int:
    return len(re.findall(rf"\b{name}\(", text)) - 1  # minus the definition


def test_repetitions_share_one_helper_and_grow_by_a_line_or_two(tmp_path):
    texts = {n: generate("repeated_blocks", tmp_path, n=n) for n in (3, 6)}
    for n, text in texts.items():
        blocks = sorted(helpers_of(text))
        assert blocks == ["stage_block"], (n, blocks)
        assert [a.arg for a in helpers_of(text)["stage_block"].args.args] == ["x", "conv_0_filters", "conv_1_filters"]
        assert calls_to(text, blocks[0]) == n
    growth = len(texts[6].splitlines()) - len(texts[3].splitlines())
    assert growth <= 3 * 2, f"{growth} lines for 3 more blocks"
    flat = generate("repeated_blocks", tmp_path, style="flat", n=6)
    assert len(texts[6].splitlines()) < len(flat.splitlines())


def test_runs_whose_arguments_follow_the_index_become_a_loop(tmp_path):
    text = generate("looped_blocks", tmp_path, n=5)
    assert "for i in range(1, 6):" in text
    assert 'name=f"stage_block{i}"' in text
    longer = generate("looped_blocks", tmp_path, n=9)
    assert len(longer.splitlines()) == len(text.splitlines())


def test_a_block_with_an_extra_layer_is_not_merged(tmp_path):
    text = generate("repeated_blocks", tmp_path, n=5, odd=3)
    assert sorted(helpers_of(text)) == ["stage_block"]
    assert calls_to(text, "stage_block") == 4
    assert '"stage_block3_drop"' in text and '"stage_block3_1_conv"' in text  # written out inline


@pytest.mark.parametrize("odd", [None, 2])
def test_factored_output_is_exact(odd, tmp_path):
    text = generate("repeated_blocks", tmp_path, n=4, odd=odd)
    (tmp_path / "model.py").write_text(text)
    import models_for_tests

    keras.backend.clear_session()
    reference = models_for_tests.repeated_blocks(n=4, odd=odd)
    randomize_weights(reference, seed=11)
    generated = import_path(tmp_path / "model.py", f"factored_exact_{odd}").build_model()
    generated.set_weights(reference.get_weights())
    batch = seeded_batch(reference)
    diff, scale = max_abs_diff(reference(batch, training=False), generated(batch, training=False))
    assert scale > 1e-3 and diff == 0.0


def test_counter_names_become_structural_and_the_port_keeps_the_source_names(tmp_path):
    source = parse_source("keras.applications.InceptionResNetV2", kwargs={"input_shape": [75, 75, 3]}, weights="none")
    spec = ModelSpec(name="irv2", model=source, spec_path=TESTS / "spec.toml", output_dir=tmp_path)
    files = ModelProject.from_spec(spec).files()
    text, port = files["irv2.py"], files["irv2_port_weights.py"]
    assert "def block35(x, *, name):" in text
    assert "for i in range(1, 11):" in text and "for i in range(1, 21):" in text
    assert '"_branch_1_conv_2"' in text  # block17_20_branch_1_conv_2 and its siblings
    # only the five stem convolutions keep counter names; the port table keeps every source name
    assert len(re.findall(r'"conv2d_\d+"', text)) <= 5
    assert len(set(re.findall(r"'conv2d_\d+'", port))) >= 150
    assert len(text.splitlines()) <= 450
