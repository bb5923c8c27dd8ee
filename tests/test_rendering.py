"""The one rendering layer, on its own: what a template may print, and each mode's guarantee."""

from __future__ import annotations

import ast

import pytest

from codegen.backend.header import fill_set_token, hash_matches, set_token, stamp, token_of
from codegen.backend.literals import DocText, Expr, Literal, doc_text, render
from codegen.backend.templating import UnrenderedText, environment, only_rendered

pytestmark = pytest.mark.unit

HOSTILE = ['x"""; import os; """', "a\nb", "a\rb", "a\u2028b", "{{ x }}", "{% if %}", "\\", "'", "\x00", "é"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_template_refuses_raw_text(text):
    template = environment().from_string('"""{{ value }}"""\n')
    with pytest.raises(UnrenderedText):
        template.render(value=text)


@pytest.mark.parametrize("text", HOSTILE)
def test_each_mode_keeps_hostile_text_inside_its_context(text):
    template = environment().from_string('"""Doc {{ doc }}."""\n\nX = {{ value }}  # {{ doc }}\n')
    source = template.render(doc=doc_text(text), value=render(text))
    tree = ast.parse(source)
    assert len(tree.body) == 2  # the docstring and one assignment: nothing started a statement
    assert ast.literal_eval(tree.body[1].value) == text  # the literal round-trips exactly
    assert len(source.splitlines()) == 3


def test_only_rendered_types_and_bare_identifiers_pass():
    for value in (Literal("'a'"), DocText("a"), Expr("x = 1"), "build_model", 3):
        assert only_rendered(value) == value
    for value in ("build model", "a-b", True, None, 1.5, ["a"]):
        with pytest.raises(UnrenderedText):
            only_rendered(value)


def test_doc_text_is_idempotent_and_printable_ascii():
    text = "".join(chr(i) for i in range(0, 0x2100, 7))
    once = doc_text(text)
    assert doc_text(once) == once
    assert all(32 <= ord(c) < 127 and c not in '"\\' for c in once)


def test_stamps_are_line_anchored():
    """A name that spells a stamp line inside a literal cannot take the stamp's place."""
    draft = (
        '"""Doc.\n\nstitchgen-set: ' + "0" * 16 + "\nstitchgen-hash: sha256:" + "0" * 64 + '\n"""\n'
        "X = 'stitchgen-set: " + "0" * 16 + "'\n"
    )
    token = token_of(draft)
    text = stamp(fill_set_token(draft, token))
    assert set_token(text) == token and hash_matches(text)
    assert text.endswith("X = 'stitchgen-set: " + "0" * 16 + "'\n")
    assert not hash_matches(text.replace("X = ", "Y = "))
