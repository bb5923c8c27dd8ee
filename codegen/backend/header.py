"""The two stamps in every generated file's header: the set token and the content hash.

The **content hash** covers the whole file with the hash itself blanked out, so a
hand edit anywhere is detected by `stitchgen generate --check` (and by
`hash_matches`) without regenerating.

The **set token** ties the files of one generation together. It is derived from the
generated model module (the file every script imports), and every file of the set
carries it on a line `stitchgen-set: <token>`; the scripts also hold it as a
constant and refuse a module with another token. A merge that takes one file from
each branch, or a copy from another commit, is caught that way.

Both stamps sit on lines of their own in the module docstring. The rendering layer
never lets model text start a line (`codegen.backend.literals.doc_text`), so the line-anchored
searches below cannot match a layer name.
"""

from __future__ import annotations

import hashlib
import re

PLACEHOLDER = "stitchgen-hash: sha256:" + "0" * 64
_HASH_RE = re.compile(r"^stitchgen-hash: sha256:([0-9a-f]{64})$", re.MULTILINE)

SET_PREFIX = "stitchgen-set: "
SET_PLACEHOLDER = SET_PREFIX + "0" * 16
_SET_RE = re.compile(r"^stitchgen-set: ([0-9a-f]{16})$", re.MULTILINE)


def stamp(text: str) -> str:
    """Replace the placeholder with the hash of the text that contains it."""
    match = re.search("^" + re.escape(PLACEHOLDER) + "$", text, re.MULTILINE)
    if not match:
        raise ValueError("generated text has no hash placeholder")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text[: match.start()] + f"stitchgen-hash: sha256:{digest}" + text[match.end() :]


def hash_matches(text: str) -> bool:
    """True when the text is byte-for-byte what the generator stamped."""
    match = _HASH_RE.search(text)
    if not match:
        return False
    blank = text[: match.start()] + PLACEHOLDER + text[match.end() :]
    return hashlib.sha256(blank.encode("utf-8")).hexdigest() == match.group(1)


def token_of(module_text: str) -> str:
    """The set token of a model module drafted with the set placeholder."""
    return hashlib.sha256(module_text.encode("utf-8")).hexdigest()[:16]


def fill_set_token(text: str, token: str) -> str:
    """Put `token` on the set line of a module drafted with `SET_PLACEHOLDER`."""
    match = re.search("^" + re.escape(SET_PLACEHOLDER) + "$", text, re.MULTILINE)
    if not match:
        raise ValueError("generated module has no set placeholder")
    return text[: match.start()] + SET_PREFIX + token + text[match.end() :]


def set_token(text: str) -> str | None:
    """The set token a generated file carries, or None (not generated, or from before tokens)."""
    match = _SET_RE.search(text)
    return match.group(1) if match else None
