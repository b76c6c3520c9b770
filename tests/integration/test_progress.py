# SPDX-License-Identifier: Apache-2.0
"""kiln build's progress against BuildKit's: golden files of the plain output
of the documented hello-world build (Dockerfile from stdin, docker.io
mirrored to a local docker-registry), of its cached rebuild and of a failing
build's report, plus the tty view under a pseudo-terminal.

The files under expected/ were written by hand from BuildKit's printer
(util/progress/progressui/printer.go), its solver's vertex events
(solver/jobs.go, source/containerimage/pull.go), buildx's error report
(cmd/buildx/main.go, solver/errdefs/source.go), not from kiln's output.
What differs from run to run is normalised before the comparison:

    DONE 0.4s              -> DONE X.Xs
    a status's " 0.2s"     -> removed (BuildKit prints it only above 0.01 s)
    #5 0.153 hello         -> #5 X.XXX hello
    sha256:<64 hex>        -> sha256:DIGEST
    3.62MB, 87B, 1.04kB    -> SIZE
    a status line that the same step later prints "done": dropped (how many
    in-between lines BuildKit prints depends on the transfer's speed)
"""
import difflib
import fcntl
import os
import pathlib
import pty
import re
import select
import struct
import subprocess
import termios

import pytest

import test_build as tb

# the fixture of test_build, shared (pytest finds it in this module's names)
builder = tb.builder

EXPECTED = pathlib.Path(__file__).resolve().parent / "expected"
HELLO = tb.HELLO
FAIL = "FROM alpine\nRUN exit 1\n"


def normalise(text):
    out = []
    for line in text.splitlines():
        line = re.sub(r"sha256:[0-9a-f]{64}", "sha256:DIGEST", line)
        m = re.match(r"^(#\d+) (.*)$", line)
        if m and not line.startswith("#0 "):
            n, rest = m.groups()
            if re.match(r"^DONE \d+\.\ds$", rest):
                rest = "DONE X.Xs"
            elif re.match(r"^\d+\.\d+ ", rest):
                rest = re.sub(r"^\d+\.\d+ ", "X.XXX ", rest)
            elif rest not in ("CACHED", "CANCELED", "...") and not rest.startswith(
                    ("ERROR: ", "WARN: ", "[")):
                # a status line: "<id>[ <cur>[ / <total>]][ <secs>s][ done]"
                rest = re.sub(r" \d+\.\ds( done)?$", r"\1", rest)
                rest = re.sub(r"\b\d+(\.\d+)?(B|kB|MB|GB|TB)\b", "SIZE", rest)
            line = f"{n} {rest}"
        out.append(line)
    return "\n".join(drop_progress(out)) + "\n"


def drop_progress(lines):
    """Status lines of a step that the same step later ends with "done"."""
    keep = []
    for i, line in enumerate(lines):
        m = re.match(r"^(#\d+) (.*?)(?: SIZE(?: / SIZE)?)?$", line)
        if m and not line.endswith(" done") and not m.group(2).startswith(
                ("[", "DONE", "CACHED", "ERROR", "X.XXX")):
            n, sid = m.groups()
            later = [x for x in lines[i + 1:] if x.startswith(n + " " + sid) and
                     x.endswith(" done")]
            if later:
                continue
        keep.append(line)
    return keep


# Where kilnd's events still differ from BuildKit's (not the renderer's
# doing): (what kiln prints, what BuildKit prints, why). A golden test whose
# only differences are these is an expected failure naming them; any other
# difference fails it.
def golden(name, stderr):
    want = (EXPECTED / name).read_text()
    got = normalise(stderr)
    diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                        f"expected/{name} (BuildKit)", "kiln, normalised"))
    assert got == want, f"plain progress differs from BuildKit's:\n{diff}--- raw stderr\n{stderr}"


def test_normalise_keeps_the_shape():
    raw = ("#4 [1/2] FROM docker.io/library/alpine:latest@sha256:" + "a" * 64 + "\n"
           "#4 resolve docker.io/library/alpine:latest@sha256:" + "a" * 64 + "\n"
           "#4 resolve docker.io/library/alpine:latest@sha256:" + "a" * 64 + " 0.1s done\n"
           "#4 sha256:" + "b" * 64 + " 0B / 3.62MB\n"
           "#4 sha256:" + "b" * 64 + " 3.62MB / 3.62MB 0.2s done\n"
           "#4 DONE 0.4s\n\n#5 [2/2] RUN echo 1.5\n#5 12.31 1.5 MB\n#5 DONE 12.4s\n")
    assert normalise(raw) == (
        "#4 [1/2] FROM docker.io/library/alpine:latest@sha256:DIGEST\n"
        "#4 resolve docker.io/library/alpine:latest@sha256:DIGEST done\n"
        "#4 sha256:DIGEST SIZE / SIZE done\n"
        "#4 DONE X.Xs\n\n#5 [2/2] RUN echo 1.5\n#5 X.XXX 1.5 MB\n#5 DONE X.Xs\n")


def test_hello_world_plain_is_buildkits(builder, tmp_path):
    b = builder()
    p = b.build(tmp_path, HELLO)
    golden("hello-plain.txt", p.stderr)


def test_cached_rebuild_plain_is_buildkits(builder, tmp_path):
    b = builder()
    b.build(tmp_path, HELLO)
    p = b.build(tmp_path, HELLO)
    golden("cached-plain.txt", p.stderr)


def test_failure_report_is_buildxs(builder, tmp_path):
    b = builder()
    p = b.build(tmp_path, FAIL, check=False)
    assert p.returncode == 1, p.stderr
    golden("fail-plain.txt", p.stderr)


def test_failure_report_has_the_last_ten_lines(builder, tmp_path):
    b = builder()
    b.build(tmp_path, HELLO)
    df = "FROM alpine\nRUN for i in $(seq 1 12); do echo line $i; done; exit 3\n"
    p = b.build(tmp_path, df, check=False)
    assert p.returncode == 1, p.stderr
    report = p.stderr.split("------\n")
    # "------", " > step:", the lines, "------", then the Dockerfile snippet
    assert len(report) >= 3, p.stderr
    body = report[1].splitlines()
    assert body[0] == " > [2/2] RUN for i in $(seq 1 12); do echo line $i; done; exit 3:"
    assert [re.sub(r"^\d+\.\d+ ", "", x) for x in body[1:]] == \
        [f"line {i}" for i in range(3, 13)], p.stderr
    assert all(re.match(r"^\d\.\d{3} line \d+$", x) for x in body[1:]), body
    assert p.stderr.rstrip("\n").splitlines()[-1] == (
        'ERROR: failed to build: failed to solve: process "/bin/sh -c for i in $(seq 1 12); '
        'do echo line $i; done; exit 3" did not complete successfully: exit code: 3')


def test_tty_view(builder, tmp_path):
    """--progress=tty on a terminal: the redrawn view ends with FINISHED
    and every step's line, the timer at the right edge."""
    b = builder()
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        argv = b.cli.argv("build", "--progress", "tty", "-f", "-", str(tmp_path))
        env = dict(b.cli.env, NO_COLOR="")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=secondary, env=env)
        os.close(secondary)
        secondary = -1
        proc.stdin.write(HELLO.encode())
        proc.stdin.close()
        out = b""
        while True:
            r, _, _ = select.select([primary], [], [], tb.BUILD_TIMEOUT)
            if not r:
                break
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the build exited and closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=tb.BUILD_TIMEOUT) == 0, out.decode(errors="replace")
    finally:
        if secondary >= 0:
            os.close(secondary)
        os.close(primary)
    text = out.decode(errors="replace")
    last = text[text.rindex("[+] Building"):]
    assert re.match(r"^\[\+\] Building \d+\.\ds \(5/5\) FINISHED +local:b\r?\n", last), last
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last)
    lines = [x.rstrip("\r") for x in plain.split("\n")]
    for name in ("[internal] load build definition from Dockerfile",
                 "[internal] load metadata for docker.io/library/alpine:latest",
                 "[internal] load .dockerignore",
                 "[1/2] FROM docker.io/library/alpine:latest@sha256:",
                 '[2/2] RUN echo "hello world"'):
        found = [x for x in lines if x.startswith(" => " + name)]
        assert found, f"no line for {name!r} in:\n{plain}"
        assert re.search(r" \d+\.\ds$", found[0]), found[0]
    # completed steps are drawn in BuildKit's blue
    assert '\x1b[34m => [2/2] RUN echo "hello world"' in last
