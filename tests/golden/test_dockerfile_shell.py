# SPDX-License-Identifier: Apache-2.0
"""Golden tests of shell-word expansion through dockerfile-shell.

Runs BuildKit's shell lexer test data in ../shared/testdata/dockerfile-shell
(see its README.md for the line formats):
- envVarTest: one case per line, ProcessWord with a fixed environment;
  A (all platforms) and U (Unix) lines run, W (Windows) lines are skipped.
- wordsTest: one case per test line, ProcessWords with the variables of the
  ENV lines above it.
Both use the escape token '\\' and no options. Files are read as bytes:
trailing spaces matter.

KILN_TESTDATA overrides the testdata folder, KILN_BUILD_DIR the build dir.
Missing testdata makes the tests SKIP, never pass.
"""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("KILN_TESTDATA") or REPO.parent / "shared" / "testdata")
BUILD = Path(os.environ.get("KILN_BUILD_DIR") or REPO / "build")
DATA = TESTDATA / "dockerfile-shell"
TIMEOUT = 10

# The environment of every envVarTest line.
ENV_VAR_TEST_ENV = [b"PWD=/home", b"SHELL=bash", "KOREAN=한국어".encode(), b"NULL="]

GO_SPACE = b" \t\n\v\f\r"


def _trim(b):
    # Go's strings.TrimSpace on ASCII data (the files hold no other blanks).
    return b.strip(GO_SPACE)


def _env_var_cases():
    """(id, platform, input, expected) for each line of envVarTest."""
    path = DATA / "envVarTest"
    if not path.is_file():
        return []
    cases = []
    for no, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if line.startswith(b"#"):
            continue
        line = _trim(line)
        if not line:
            continue
        fields = line.split(b"|")
        assert len(fields) == 3, f"envVarTest:{no}: bad line {line!r}"
        platform, word, expected = (_trim(f) for f in fields)
        assert platform in (b"A", b"U", b"W"), f"envVarTest:{no}: bad platform {platform!r}"
        cases.append((f"envVarTest:{no}", platform.decode(), word, expected))
    return cases


def _words_cases():
    """(id, env, input, expected words) for each test line of wordsTest."""
    path = DATA / "wordsTest"
    if not path.is_file():
        return []
    cases, env = [], []
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the text after the final newline
    for no, line in enumerate(lines, 1):
        if line.startswith(b"#"):
            continue
        if line.startswith(b"ENV "):
            env.append(line[3:].lstrip(b" "))
            continue
        fields = line.split(b"|")
        assert len(fields) == 2, f"wordsTest:{no}: bad line {line!r}"
        expected = fields[1].lstrip(b" ").split(b",")
        cases.append((f"wordsTest:{no}", list(env), _trim(fields[0]), expected))
    return cases


ENV_VAR_CASES = _env_var_cases()
WORDS_CASES = _words_cases()


def _params(cases, marker, skip_windows=False):
    if not cases:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{marker} not found"))]
    out = []
    for case in cases:
        marks = ()
        if skip_windows and case[1] == "W":
            marks = pytest.mark.skip(reason="Windows-only case (case-insensitive names)")
        out.append(pytest.param(case, id=case[0], marks=marks))
    return out


def _tool():
    found = sorted(p for p in BUILD.rglob("dockerfile-shell") if p.is_file() and os.access(p, os.X_OK))
    if not found:
        pytest.fail(f"dockerfile-shell not found under {BUILD}: build it first (ninja -C {BUILD})")
    return found[0]


def _run(mode, env, word):
    args = [str(_tool()).encode()]
    for e in env:
        args += [b"-e", e]
    args.append(mode.encode())
    return subprocess.run(args, input=word, capture_output=True, timeout=TIMEOUT)


def test_case_counts():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found")
    platforms = [c[1] for c in ENV_VAR_CASES]
    assert len(ENV_VAR_CASES) == 230
    assert (platforms.count("A"), platforms.count("U"), platforms.count("W")) == (226, 2, 2)
    assert sum(1 for c in ENV_VAR_CASES if c[3] == b"error") == 36
    assert len(WORDS_CASES) == 24
    env_lines = [l for l in (DATA / "wordsTest").read_bytes().split(b"\n") if l.startswith(b"ENV ")]
    assert len(env_lines) == 4


@pytest.mark.parametrize("case", _params(ENV_VAR_CASES, "envVarTest", skip_windows=True))
def test_env_var(case):
    _, _, word, expected = case
    res = _run("word", ENV_VAR_TEST_ENV, word)
    if expected == b"error":
        assert res.returncode == 1, f"expected an error, got {res.stdout!r}"
        assert res.stdout == b""
        assert res.stderr.startswith(b"error: failed to process "), res.stderr
        return
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout == expected


@pytest.mark.parametrize("case", _params(WORDS_CASES, "wordsTest"))
def test_words(case):
    _, env, word, expected = case
    res = _run("words", env, word)
    if expected == [b"error"]:
        assert res.returncode == 1, f"expected an error, got {res.stdout!r}"
        assert res.stderr.startswith(b"error: failed to process "), res.stderr
        return
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout.endswith(b"\0") or res.stdout == b""
    assert res.stdout.split(b"\0")[:-1] == expected
