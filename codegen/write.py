"""Put generated files on disk all-or-nothing, or check them without writing."""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from codegen.errors import StitchgenError
from codegen.header import hash_matches


def regular_file_mode() -> int:
    """What `open(path, "w")` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_files(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write every file to a temporary sibling first, then rename them all."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StitchgenError(f"cannot create output directory {str(out_dir)!r}: {exc.strerror}") from None
    staged: list[tuple[str, Path]] = []
    try:
        for name, text in files.items():
            handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
            staged.append((tmp, out_dir / name))
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
                stream.write(text)
            os.chmod(tmp, regular_file_mode())  # mkstemp makes 0600; a checked-in file is 0644-like
        for tmp, final in staged:
            os.replace(tmp, final)
    except OSError as exc:
        raise StitchgenError(f"cannot write to {str(out_dir)!r}: {exc.strerror}") from None
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
    return [final for _, final in staged]


@dataclass(frozen=True)
class Stale:
    path: Path
    reason: str  # "missing", "edited by hand", "stale"
    diff: str


def check_files(files: dict[str, str], out_dir: Path) -> list[Stale]:
    """Files on disk that differ from what would be generated now. Writes nothing."""
    problems = []
    for name, expected in files.items():
        path = out_dir / name
        if not path.is_file():
            problems.append(Stale(path, "missing", ""))
            continue
        try:
            actual = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(Stale(path, "not UTF-8 text (edited or replaced)", ""))
            continue
        if actual == expected:
            continue
        reason = "stale" if hash_matches(actual) else "edited by hand"
        diff = "".join(
            difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=f"{name} (on disk)",
                tofile=f"{name} (regenerated)",
            )
        )
        problems.append(Stale(path, reason, diff))
    return problems
