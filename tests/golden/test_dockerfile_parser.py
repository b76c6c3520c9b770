# SPDX-License-Identifier: Apache-2.0
"""Golden tests of the Dockerfile parser through dockerfile-dump.

Runs BuildKit's parser test data in ../shared/testdata/dockerfile-parser:
33 positive cases (dump must equal `result` byte for byte), the negative
cases (exit 1 with "FILE:LINE: message") and the line-number case.

KILN_TESTDATA overrides the testdata folder, KILN_BUILD_DIR the build dir.
Missing testdata makes the tests SKIP, never pass.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("KILN_TESTDATA") or REPO.parent / "shared" / "testdata")
BUILD = Path(os.environ.get("KILN_BUILD_DIR") or REPO / "build")
DATA = TESTDATA / "dockerfile-parser"
TIMEOUT = 10

ERROR_RE = re.compile(rb"^.+:\d+: \S")


def _cases(root):
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "Dockerfile").is_file())


def _params(names, marker):
    return names or [pytest.param(marker, marks=pytest.mark.skip(reason=f"{marker} not found"))]


POSITIVE = _cases(DATA / "testfiles")
NEGATIVE = _cases(DATA / "testfiles-negative")


def _tool():
    found = sorted(p for p in BUILD.rglob("dockerfile-dump") if p.is_file() and os.access(p, os.X_OK))
    if not found:
        pytest.fail(f"dockerfile-dump not found under {BUILD}: build it first (ninja -C {BUILD})")
    return found[0]


def _run(*args):
    return subprocess.run([str(_tool()), *map(str, args)], capture_output=True, timeout=TIMEOUT)


def test_case_counts():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found")
    assert (len(POSITIVE), len(NEGATIVE)) == (33, 4)


@pytest.mark.parametrize("case", _params(POSITIVE, "dockerfile-parser testfiles"))
def test_positive(case):
    d = DATA / "testfiles" / case
    res = _run(d / "Dockerfile")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout == (d / "result").read_bytes()


@pytest.mark.parametrize("case", _params(NEGATIVE, "dockerfile-parser testfiles-negative"))
def test_negative(case):
    res = _run(DATA / "testfiles-negative" / case / "Dockerfile")
    assert res.returncode == 1
    assert res.stdout == b""
    assert ERROR_RE.match(res.stderr), res.stderr[:200]


def test_line_numbers():
    path = DATA / "testfile-line" / "Dockerfile"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    res = _run("--lines", path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout == b"root 5-31 3\n5-5\n11-12\n17-31\n"
