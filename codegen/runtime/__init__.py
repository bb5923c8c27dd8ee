"""Runtime code of the emitted scripts, kept as real Python so it is linted and unit-tested.

The templates inline these modules (`inline("porting")`) into standalone scripts,
which therefore import no stitchgen. Everything below a module's `# --- inline ---`
marker is copied; the imports above it exist for linting and tests and must be a
subset of what the templates import.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

MARKER = "# --- inline ---"


@cache
def inline(name: str) -> str:
    """The inlined part of `codegen/runtime/<name>.py`, without trailing blank lines."""
    text = (Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8")
    if MARKER not in text:
        raise ValueError(f"runtime module {name!r} has no {MARKER!r} marker")
    return text.split(MARKER, 1)[1].strip("\n")
