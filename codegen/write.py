"""Put generated files on disk all-or-nothing, or check them without writing."""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from codegen.errors import StitchgenError
from codegen.header import hash_matches


def regular_file_mode() -> int:
    """What `open(path, "w")` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One writer per output folder: a second `generate` into it waits for the first.

    Without it two runs interleave their renames and leave a mixed set of files. The
    lock is taken on the folder itself, so nothing extra appears in it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: renames stay atomic per file, runs are not serialised
        yield
        return
    descriptor = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _refuse_non_files(files: dict[str, str], out_dir: Path) -> None:
    """Every target must be a regular file or absent, checked before anything is replaced."""
    for name in files:
        target = out_dir / name
        if target.exists() and not target.is_file():
            raise StitchgenError(
                f"{str(target)!r} exists and is not a regular file; move it away and rerun (nothing was written)"
            )


def write_files(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write every file to a temporary sibling first, then rename them all.

    Targets are checked first (nothing is replaced when one cannot be), and a lock
    file in the folder serialises concurrent runs, so a set is never mixed by
    another run's renames.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StitchgenError(f"cannot create output directory {str(out_dir)!r}: {exc.strerror}") from None
    with _locked(out_dir):
        _refuse_non_files(files, out_dir)
        return _write_staged(files, out_dir)


def _write_staged(files: dict[str, str], out_dir: Path) -> list[Path]:
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
