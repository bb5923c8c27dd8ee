"""The generator's own code is held to what it asks of its output: ruff and black clean.

Black runs at ruff's line length (120) given on the command line, not in pyproject:
a [tool.black] section would also apply to the generated files, which are formatted
with black's defaults, as a user's project would check them.
"""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO

SOURCES = ["codegen", "stitchgen", "tests", "benchmarks"]


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *SOURCES], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_black_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "black", "--check", "--line-length", "120", *SOURCES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
