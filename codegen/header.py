"""The content hash in every generated file's header.

The hash covers the whole file with the hash itself blanked out, so a hand edit
anywhere is detected by `stitchgen generate --check` (and by `verify_hash`)
without regenerating.
"""

from __future__ import annotations

import hashlib
import re

PLACEHOLDER = "stitchgen-hash: sha256:" + "0" * 64
_HASH_RE = re.compile(r"stitchgen-hash: sha256:([0-9a-f]{64})")


def stamp(text: str) -> str:
    """Replace the placeholder with the hash of the text that contains it."""
    if PLACEHOLDER not in text:
        raise ValueError("generated text has no hash placeholder")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text.replace(PLACEHOLDER, f"stitchgen-hash: sha256:{digest}", 1)


def hash_matches(text: str) -> bool:
    """True when the text is byte-for-byte what the generator stamped."""
    match = _HASH_RE.search(text)
    if not match:
        return False
    blank = text[: match.start()] + PLACEHOLDER + text[match.end() :]
    return hashlib.sha256(blank.encode("utf-8")).hexdigest() == match.group(1)
