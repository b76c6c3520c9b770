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


# --full adds the escape token, directives, warnings, comments and heredocs
# after the dump; the dump itself never shows heredocs (as Node.Dump).
FULL_SRC = (
    b"# syntax=docker/dockerfile:1\n"
    b"# Escape=\\\n"
    b"# the base\n"
    b"FROM alpine\n"
    b"RUN <<EOF sh -e\n"
    b"echo $HOME\n"
    b"EOF\n"
    b"COPY <<-'A' 3<<B /dst/\n"
    b"\tfirst\n"
    b"\tA\n"
    b"second\n"
    b"B\n"
    b"RUN a \\\n"
    b"\n"
    b"  b\n"
)

FULL_OUT = (
    b'(from "alpine")\n'
    b'(run "<<EOF sh -e")\n'
    b'(copy "<<-\'A\'" "3<<B" "/dst/")\n'
    b'(run "a   b")\n'
    b"escape \\\n"
    b'directive syntax "docker/dockerfile:1" 1\n'
    b'directive escape "\\\\" 2\n'
    b'warning 15 "Empty continuation line found in: RUN a   b"\n'
    b'comment 1 "the base"\n'
    b'heredoc 2 5-7 "EOF" fd=0 expand=1 chomp=0 "echo $HOME\\n"\n'
    b'heredoc 3 8-12 "A" fd=0 expand=0 chomp=1 "\\tfirst\\n"\n'
    b'heredoc 3 8-12 "B" fd=3 expand=1 chomp=0 "second\\n"\n'
)


def test_full_output(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_bytes(FULL_SRC)
    res = _run("--full", path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout == FULL_OUT
    plain = _run(path)
    assert plain.stdout == FULL_OUT[: FULL_OUT.index(b"escape ")]


@pytest.mark.parametrize(
    "src,message",
    [
        (b"FROM a\nRUN <<EOF\nbody\n", b":2: unterminated heredoc\n"),
        (b"FROM a\n\nCOPY <<A <<B /\nA\n", b":3: unterminated heredoc\n"),
        (b"# escape=`\n# escape=`\nFROM a\n", b":2: only one escape parser directive can be used\n"),
        (b"# escape=x\nFROM a\n", b":1: invalid escape token 'x' does not match ` or \\\n"),
    ],
)
def test_parse_errors(tmp_path, src, message):
    path = tmp_path / "Dockerfile"
    path.write_bytes(src)
    res = _run(path)
    assert res.returncode == 1
    assert res.stdout == b""
    assert res.stderr == str(path).encode() + message
