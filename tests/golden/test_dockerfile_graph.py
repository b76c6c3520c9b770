# SPDX-License-Identifier: Apache-2.0
"""The Dockerfile frontend end to end through dockerfile-graph.

Each case writes a small Dockerfile (and, where needed, a base image
config) to a temporary directory, runs dockerfile-graph on it and checks
the graph, the image config, the step names and the warnings against what
BuildKit's dockerfile2llb produces for the same input.

No testdata is needed. KILN_BUILD_DIR selects the build dir.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("KILN_BUILD_DIR") or REPO / "build")
TIMEOUT = 10


def _tool():
    found = sorted(p for p in BUILD.rglob("dockerfile-graph") if p.is_file() and os.access(p, os.X_OK))
    if not found:
        pytest.fail(f"dockerfile-graph not found under {BUILD}: build it first (ninja -C {BUILD})")
    return found[0]


def _run(tmp_path, dockerfile, *args):
    df = tmp_path / "Dockerfile"
    df.write_text(dockerfile)
    return subprocess.run([str(_tool()), *map(str, args), str(df)], capture_output=True,
                          timeout=TIMEOUT, text=True)


def _graph(tmp_path, dockerfile, *args):
    p = _run(tmp_path, dockerfile, *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _ops(out):
    return {op["digest"]: op for op in out["graph"]["ops"]}


def _terminal(out):
    return _ops(out)[out["graph"]["output"]["digest"]]


def _name(op):
    return op.get("metadata", {}).get("description", {}).get("llb.customname")


def test_run_and_history(tmp_path):
    out = _graph(tmp_path, "FROM alpine\nENV A=b\nRUN echo $A\n")
    run = _terminal(out)["op"]["exec"]
    assert run["args"] == ["/bin/sh", "-c", "echo $A"]
    assert "A=b" in run["env"]
    assert out["config"]["history"][-2:] == [
        {"created_by": "ENV A=b", "comment": "buildkit.dockerfile.v0", "empty_layer": True},
        {"created_by": "RUN /bin/sh -c echo $A # buildkit", "comment": "buildkit.dockerfile.v0"},
    ]
    assert out["steps"][0] == "[internal] load metadata for docker.io/library/alpine:latest"
    assert out["steps"][-1] == "[2/2] RUN echo b"
    assert out["steps"][1].startswith("[1/2] FROM docker.io/library/alpine:latest@sha256:")


def test_image_config_from_file(tmp_path):
    cfg = tmp_path / "base.json"
    cfg.write_text(json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "HOME=/home/x"], "WorkingDir": "/work", "User": "x",
                   "Entrypoint": ["/init"], "Labels": {"from": "base"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
        "history": [{"created_by": "base layer"}],
        "container_config": {"Hostname": "dropped"},
    }))
    out = _graph(tmp_path, "FROM example.com/base:1\nRUN pwd\nCMD [\"x\"]\n",
                 "--image", f"example.com/base:1={cfg}")
    run = _terminal(out)["op"]["exec"]
    assert run["cwd"] == "/work"
    assert run["user"] == "x"
    assert run["env"] == ["PATH=/bin", "HOME=/home/x"]
    c = out["config"]
    assert "container_config" not in c
    assert c["rootfs"]["diff_ids"] == ["sha256:" + "a" * 64]
    assert c["config"]["Entrypoint"] == ["/init"]
    assert c["config"]["Cmd"] == ["x"]
    assert c["config"]["Labels"] == {"from": "base"}
    assert c["history"][0] == {"created_by": "base layer"}
    assert list(c.keys()) == ["architecture", "os", "rootfs", "history", "config"]


def test_target_and_unused_stage(tmp_path):
    df = ("FROM alpine AS build\nRUN make\n"
          "FROM alpine AS unused\nRUN never\n"
          "FROM alpine\nCOPY --from=build /out /out\n")
    out = _graph(tmp_path, df)
    names = [_name(op) for op in out["graph"]["ops"]]
    assert "[build 2/2] RUN make" in names
    assert not any(n and "never" in n for n in names)
    out = _graph(tmp_path, df, "--target", "Unused")
    assert _name(_terminal(out)) == "[unused 2/2] RUN never"


def test_build_args_and_proxies(tmp_path):
    df = "ARG BASE=alpine\nFROM $BASE\nARG V=1\nRUN echo $V\n"
    a = _graph(tmp_path, df)
    b = _graph(tmp_path, df, "--build-arg", "HTTP_PROXY=http://p:1")
    c = _graph(tmp_path, df, "--build-arg", "V=2")
    assert a["graph"]["output"] == b["graph"]["output"]
    assert a["graph"]["output"] != c["graph"]["output"]
    assert _terminal(b)["op"]["exec"]["proxy_env"] == {"http_proxy": "http://p:1"}
    assert "V=2" in _terminal(c)["op"]["exec"]["env"]
    assert c["config"]["history"][-1]["created_by"] == "RUN |1 V=2 /bin/sh -c echo $V # buildkit"


def test_platform(tmp_path):
    out = _graph(tmp_path, "FROM alpine\nARG TARGETARCH\nRUN echo $TARGETARCH\n",
                 "--platform", "linux/arm64", "--build-platform", "linux/amd64")
    run = _terminal(out)["op"]
    assert run["platform"] == {"architecture": "arm64", "os": "linux"}
    assert "TARGETARCH=arm64" in run["exec"]["env"]
    assert out["config"]["architecture"] == "arm64"


def test_context_source(tmp_path):
    out = _graph(tmp_path, "FROM alpine\nCOPY a.txt b/ /dst/\n", "--dockerignore", "*.md")
    local = [op["op"]["source"]["local"] for op in out["graph"]["ops"]
             if "local" in op["op"].get("source", {})]
    assert local == [{"exclude_patterns": ["*.md"], "follow_paths": ["a.txt", "b"],
                      "name": "context", "shared_key_hint": "context"}]


def test_sources_are_shared_across_platforms(tmp_path):
    df = "FROM scratch\nCOPY a /a\nADD https://x.example/f /f\nADD https://g.example/a/b.git /g\n"
    seen = []
    for platform in ("linux/amd64", "linux/arm64"):
        out = _graph(tmp_path, df, "--platform", platform)
        sources = {d: op for d, op in _ops(out).items() if "source" in op["op"]}
        assert len(sources) == 3
        assert all("platform" not in op["op"] for op in sources.values())
        seen.append(set(sources))
    # the context, URL and repository are fetched once for every platform
    assert seen[0] == seen[1]


def test_git_checksum_must_be_a_commit(tmp_path):
    p = _run(tmp_path, "FROM busybox\nADD --checksum=sha256:" + "a" * 64 +
             " https://g.example/a/b.git#v1 /x\n")
    assert p.returncode == 1
    assert p.stderr.startswith("dockerfile-graph: Dockerfile:2: invalid checksum ")
    out = _graph(tmp_path, "FROM busybox\nADD --checksum=0123abc https://g.example/a/b.git#v1 /x\n")
    git = [op["op"]["source"]["git"] for op in out["graph"]["ops"]
           if "git" in op["op"].get("source", {})]
    assert git[0]["checksum"] == "0123abc"


def test_errors(tmp_path):
    p = _run(tmp_path, "FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\nCOPY --from=a / /\n")
    assert p.returncode == 1
    assert "circular dependency detected on stage: a" in p.stderr
    p = _run(tmp_path, "FROM alpine\n", "--target", "nope")
    assert p.returncode == 1
    assert p.stderr.strip() == 'dockerfile-graph: target stage "nope" could not be found'
    p = _run(tmp_path, "FROM alpine\nSTOPSIGNAL BOGUS\n")
    assert p.returncode == 1
    assert p.stderr.strip() == "dockerfile-graph: Dockerfile:2: invalid signal: BOGUS"


def test_warnings(tmp_path):
    out = _graph(tmp_path, "FROM alpine\nCMD echo $HOME\nCOPY $NOPE /x\n")
    assert {"rule": "JSONArgsRecommended",
            "message": "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
            "line": 2} in out["warnings"]
    assert {"rule": "UndefinedVar", "message": "Usage of undefined variable '$NOPE'",
            "line": 3} in out["warnings"]
