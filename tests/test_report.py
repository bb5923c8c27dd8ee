"""Costs from shapes (checked by hand), bytes at the cut, and the report command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
from helpers import REPO, run_cli
from keras import layers
from test_train import SPEC as TINY_SPEC

from codegen.frontend.introspect import introspect
from codegen.frontend.spec import load_spec
from codegen.products.costs import graph_cost, tensor_bytes
from codegen.products.hybrid import StitchProject
from codegen.products.report import bytes_rows

TESTS = Path(__file__).resolve().parent


def test_macs_and_params_match_a_hand_count():
    keras.backend.clear_session()
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 * 3*3*3*4 = 6912 MACs, 108 + 4 params
    x = layers.Conv2D(6, 1, groups=2)(x)  # grouped: 8*8 * 1*1*2*6 = 768 MACs, 12 + 6 params
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 8*8 * 3*3*6*2 = 6912, 108 + 12
    x = layers.SeparableConv2D(5, 3)(x)  # 6*6 * (3*3*12*1 + 1*1*12*5) = 6048, 108 + 60 + 5
    x = layers.MaxPooling2D(2)(x)  # 3*3*5 outputs * 4 = 180
    x = layers.GlobalAveragePooling2D()(x)  # 45 inputs
    x = layers.BatchNormalization()(x)  # 0 MACs, 20 params
    outputs = layers.Dense(7)(x)  # 5*7 = 35, 35 + 7
    model = keras.Model(inputs, outputs)
    cost = graph_cost(introspect(model).graph)
    assert cost.macs == 6912 + 768 + 6912 + 6048 + 180 + 45 + 35
    assert cost.params == 112 + 18 + 120 + 173 + 20 + 42 == model.count_params()


def test_dense_on_a_sequence_counts_every_position():
    keras.backend.clear_session()
    inputs = keras.Input((10, 16))
    model = keras.Model(inputs, layers.Dense(4)(inputs))
    assert graph_cost(introspect(model).graph).macs == 10 * 16 * 4


def test_bytes_at_the_seed_cut_and_its_four_tensor_frontier():
    project = StitchProject.from_spec(load_spec(REPO / "examples" / "mobilenet_to_inception_resnet_v2.toml"))
    head = bytes_rows("head", [(project.head_crossing.producer, project.head_crossing.info)])
    assert head == [
        {"tensor": "head: conv_pad_6", "shape": [29, 29, 256], "float32": 861_184, "float16": 430_592, "int8": 215_296}
    ]
    tail = bytes_rows("tail", [(c.producer, c.info) for c in project.tail_crossings])
    values = 17 * 17 * 1088 + 8 * 8 * 384 + 8 * 8 * 288 + 8 * 8 * 320
    assert [r["float32"] for r in tail[:-1]] == [tensor_bytes(c.info, 4) for c in project.tail_crossings]
    assert tail[-1]["tensor"] == "tail: all 4 tensors" and tail[-1]["float32"] == 4 * values == 1_511_680
    assert tail[-1]["int8"] == values


def test_report_renders_for_a_stitch_spec_and_a_model_spec(tmp_path):
    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    result = run_cli("report", str(tmp_path / "tiny.toml"), "--repeats", "1", "--batch-size", "2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert [p["part"] for p in report["parts"]] == ["head", "adapter", "tail"]
    head, adapter, _tail = report["parts"]
    assert head["params_frozen"] > 0 and head["params_trainable"] == 0 and adapter["params_trainable"] > 0
    assert head["macs_per_image"] == 8 * 8 * 3 * 3 * 3 * 8 + 8 * 8 * 3 * 3 * 8 * 12
    assert head["latency_ms_batch_1"] > 0 and head["latency_ms_batch_2"] > 0
    assert report["bytes_at_cut"][0]["float32"] == 8 * 8 * 12 * 4

    out = tmp_path / "report.md"
    result = run_cli("report", str(tmp_path / "tiny.toml"), "--repeats", "0", "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# stitchgen report: tiny") and "| adapter |" in text and "| 3,072 |" in text

    (tmp_path / "one.toml").write_text('name = "one"\n[model]\nsource = "models_for_tests:tiny_tail"\n')
    result = run_cli("report", str(tmp_path / "one.toml"), "--repeats", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| model |" in result.stdout and "Bytes per image" not in result.stdout


def test_report_on_a_missing_spec_is_a_user_error(tmp_path):
    result = run_cli("report", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def _valid_images(prefix: Path) -> str:
    import xml.etree.ElementTree as ET

    svg = Path(str(prefix) + ".svg") if prefix.suffix != ".svg" else prefix
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    png = Path(str(prefix) + ".png")
    if png.exists():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return svg.read_text()


def test_seed_report_and_diagram(tmp_path):
    prefix = tmp_path / "seed"
    out = tmp_path / "seed.md"
    spec = REPO / "examples" / "mobilenet_to_inception_resnet_v2.toml"
    result = run_cli("report", str(spec), "--repeats", "0", "--diagram", str(prefix), "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert "| head output (adapter on the server): conv_pad_6 | (29, 29, 256) | 861,184 | 430,592 | 215,296 |" in text
    assert "all 4 tensors | - | 1,511,680 |" in text
    svg = _valid_images(prefix)
    for label in (
        "conv_pad_6 (29, 29, 256)",
        "block17_20_ac (17, 17, 1088)",
        "conv2d_162 (8, 8, 320)",
        "block8_1 .. block8_9 (x9)",
    ):
        assert label in svg.replace("&#45;", "-"), label


def test_inspect_plot_marks_the_cut_points(tmp_path):
    shutil.copy(TESTS / "models_for_tests.py", tmp_path / "models_for_tests.py")
    for suffix in (".svg", ".png"):
        result = run_cli(
            "inspect", "models_for_tests:looped_blocks", "--plot", str(tmp_path / f"blocks{suffix}"), cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr[-2000:]
    svg = _valid_images(tmp_path / "blocks")
    assert "stage_block1 .. stage_block5 (x5)" in svg and "cut after here" in svg
    bad = run_cli("inspect", "models_for_tests:looped_blocks", "--plot", str(tmp_path / "x.pdf"), cwd=tmp_path)
    assert bad.returncode == 2 and "must be a .svg or .png" in bad.stderr
