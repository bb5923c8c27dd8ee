"""Put a generated set of files on disk all-or-nothing, or check one without writing.

A set is written in three steps, under an exclusive lock on the output folder:

1. **Stage**: every new file is written into `.stitchgen-staging/` inside the output
   folder (same file system, so the final renames are atomic), and every target is
   checked. An error or Ctrl-C here removes the staging and changes nothing.
2. **Commit**: a journal naming the staged files is written atomically. From this
   point the set is going to be installed: a hard kill is finished by the next run
   ("roll forward"), which reads the journal before it does anything else.
3. **Move**: each staged file replaces its target; the files it replaces are kept in
   the staging folder until the end. An error or Ctrl-C during the moves puts them
   back ("roll back"), so the previous set stays complete.

No operating system renames several files at once, and files also get mixed by hand,
so every file of a set also carries the set's token (see `codegen.backend.header`), which the
emitted scripts and `--check` compare.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from codegen.backend.header import hash_matches, set_token
from codegen.errors import StitchgenError

STAGING = ".stitchgen-staging"
JOURNAL = "journal.json"
_NEW = "new"
_OLD = "old"

# Tests replace this to inject faults at the n-th move; production code never does.
_replace: Callable[[str | os.PathLike, str | os.PathLike], None] = os.replace


def regular_file_mode() -> int:
    """What `open(path, "w")` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One writer per output folder: a second `generate` into it waits for the first.

    The lock is taken on the folder itself, so nothing extra appears in it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: the journal still makes each run whole, runs are not serialised
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
    """Install `files` (name -> text) in `out_dir` as one set, or leave the previous set as it was."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StitchgenError(f"cannot create output directory {str(out_dir)!r}: {exc.strerror}") from None
    with _locked(out_dir):
        try:
            recover(out_dir)
            _refuse_non_files(files, out_dir)
            staging = _stage(files, out_dir)
        except OSError as exc:
            shutil.rmtree(out_dir / STAGING, ignore_errors=True)
            raise StitchgenError(f"cannot write to {str(out_dir)!r}: {exc.strerror}; nothing was changed") from None
        except BaseException:
            shutil.rmtree(out_dir / STAGING, ignore_errors=True)
            raise
        _move(list(files), out_dir, staging)
    return [out_dir / name for name in files]


def _stage(files: dict[str, str], out_dir: Path) -> Path:
    """Write the new files and the journal (the commit point) into the staging folder."""
    staging = out_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    (staging / _NEW).mkdir(parents=True)
    (staging / _OLD).mkdir()
    for name, text in files.items():
        path = staging / _NEW / name
        with open(path, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(path, regular_file_mode())
    journal = staging / (JOURNAL + ".tmp")
    journal.write_text(json.dumps({"files": list(files)}), encoding="utf-8")
    os.replace(journal, staging / JOURNAL)  # committed: from here on the set is installed, whatever happens
    return staging


def _move(names: list[str], out_dir: Path, staging: Path) -> None:
    """Replace each target, keeping what it replaced; on any error put the old files back."""
    moved: list[str] = []
    try:
        for name in names:
            target = out_dir / name
            if target.exists():
                _keep(target, staging / _OLD / name)
            _replace(staging / _NEW / name, target)
            moved.append(name)
    except BaseException as exc:
        _roll_back(moved, out_dir, staging)
        if isinstance(exc, OSError):
            raise StitchgenError(
                f"cannot write to {str(out_dir)!r}: {exc.strerror}; the previous files were restored"
            ) from None
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _keep(target: Path, backup: Path) -> None:
    """The previous version of a target, for a roll back: a hard link, or a copy where links fail."""
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)


def _roll_back(moved: list[str], out_dir: Path, staging: Path) -> None:
    (staging / JOURNAL).unlink(missing_ok=True)  # no roll forward of a set that was abandoned
    for name in reversed(moved):
        old = staging / _OLD / name
        if old.exists():
            os.replace(old, out_dir / name)
        else:
            (out_dir / name).unlink(missing_ok=True)  # it did not exist before this run
    shutil.rmtree(staging, ignore_errors=True)


def recover(out_dir: Path) -> bool:
    """Finish a run that was killed while moving its files in; True when there was one.

    With a journal, every staged file still there is moved into place (roll forward);
    without one, the staging is an abandoned run's and is removed.
    """
    staging = out_dir / STAGING
    if not staging.exists():
        return False
    journal = staging / JOURNAL
    if journal.is_file():
        for name in json.loads(journal.read_text(encoding="utf-8"))["files"]:
            new = staging / _NEW / name
            if new.exists():
                os.replace(new, out_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
    return True


@dataclass(frozen=True)
class Stale:
    path: Path
    reason: str  # "missing", "edited by hand", "stale", "from another generation"
    diff: str


def check_files(files: dict[str, str], out_dir: Path) -> list[Stale]:
    """Files on disk that differ from what would be generated now. Writes nothing."""
    problems = []
    on_disk: dict[str, str] = {}
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
        on_disk[name] = actual
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
    tokens = {name: set_token(text) for name, text in on_disk.items()}
    if len(set(tokens.values())) > 1:
        listing = ", ".join(f"{name} has {token or 'no token'}" for name, token in sorted(tokens.items()))
        problems.append(Stale(out_dir, f"a mixed set: files from different generations ({listing})", ""))
    if (out_dir / STAGING).exists():
        problems.append(Stale(out_dir / STAGING, "an interrupted write (the next generate finishes it)", ""))
    return problems
