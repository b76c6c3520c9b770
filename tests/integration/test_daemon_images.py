# SPDX-License-Identifier: Apache-2.0
"""kilnd's image endpoints against real registries: POST /v1/pull (NDJSON
progress, blobs in the content store), GET /v1/imagetools/inspect (raw bytes
as the registry sent them, or a JSON summary), POST /v1/imagetools/create
(copy an index), bad requests, clients that hang up and SIGTERM mid-pull.

Everything runs on 127.0.0.1: every daemon gets HTTP(S)_PROXY pointing at a
refused address, and kiln (like Go) never proxies loopback hosts, so a
request that would leave the machine (docker.io) fails at once instead.
"""
import hashlib
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import kilnhelpers as H
import registries as R
from kilnhelpers import SANITIZER_MARKERS, TIMEOUT

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX socket."""

    def __init__(self, path, timeout=TIMEOUT * 3):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def request(sock, method, path, body=None):
    """One request -> (status, headers, body bytes)."""
    conn = UnixHTTPConnection(sock)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def parse_ndjson(data):
    """Every line a JSON object, the stream newline-terminated."""
    assert data.endswith(b"\n"), data[-200:]
    events = []
    for line in data.split(b"\n")[:-1]:
        ev = json.loads(line)
        assert isinstance(ev, dict), line
        assert isinstance(ev.get("type"), str), line
        assert isinstance(ev.get("time"), str) and ev["time"].endswith("Z"), line
        events.append(ev)
    return events


def stream(sock, path, body):
    """POST a streaming request -> (status, headers, events)."""
    status, headers, data = request(sock, "POST", path, body)
    if status != 200:
        return status, headers, json.loads(data)
    assert headers["Content-Type"] == "application/x-ndjson"
    return status, headers, parse_ndjson(data)


def final(events):
    last = events[-1]
    assert last["type"] in ("result", "error"), events
    assert all(e["type"] not in ("result", "error") for e in events[:-1]), events
    return last


def types(events):
    return [e["type"] for e in events]


def sha256sum(path):
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return "sha256:" + out.stdout.split()[0]


def skopeo_raw(seed, reg, name):
    """The bytes `skopeo inspect --raw` prints, untouched."""
    argv = ["skopeo", "--policy", str(seed.policy), "inspect", *reg.skopeo_args(), "--raw",
            f"docker://{reg.host}/{name}"]
    return subprocess.run(argv, env=seed.env, capture_output=True, check=True,
                          timeout=TIMEOUT * 3).stdout


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="kiln-img-", dir="/tmp")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(kilnd, tmp_path, sockdir, monkeypatch, dead):
    """daemon(config=None, *args) starts build/kilnd on a unix socket with its
    own root, an empty Docker config and a dead proxy for anything not on
    loopback; every daemon is stopped at teardown and its log checked for
    sanitizer reports."""
    started = []
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("KILN_REGISTRY_RETRY_BASE_MS", "50")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, dead.url)
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def start(config=None, *args):
        name = f"kilnd{len(started)}"
        sock = sockdir / f"{name}.sock"
        root = tmp_path / f"root-{name}"
        argv = ["--config="]
        if config is not None:
            cfg = tmp_path / f"{name}.toml"
            cfg.write_text(config)
            argv = ["--config", cfg]
        argv += ["--root", root, "--addr", f"unix://{sock}", *args]
        d = H.Daemon(kilnd, argv, tmp_path / f"{name}.log")
        d.sock, d.root = sock, root
        started.append(d)
        d.wait_until(lambda: request(sock, "GET", "/v1/info")[0] == 200, f"{sock} to answer",
                     errors=(OSError, http.client.HTTPException))
        return d

    yield start
    for d in started:
        d.kill()
    for d in started:
        log = d.log()
        for marker in SANITIZER_MARKERS:
            assert marker not in log, f"{marker} in {d.log_path}:\n{log}"


def blob_path(root, digest):
    return pathlib.Path(root) / "content" / "blobs" / "sha256" / digest.split(":", 1)[1]


# ---------------------------------------------------------------------------
# pull


def test_pull_streams_events_and_fills_the_store(daemon, registry, seed):
    reg = registry()
    digest = seed(reg, "library/alpine:latest")
    image = seed.images.get("small")
    d = daemon()
    ref = f"{reg.host}/library/alpine:latest"

    status, headers, events = stream(d.sock, "/v1/pull", {"ref": ref})
    assert status == 200, events
    res = final(events)
    assert res["type"] == "result", res
    assert res["ref"] == ref
    assert res["digest"] == digest
    assert res["mediaType"] == MT_OCI_MANIFEST
    assert res["manifest"]["digest"] == digest
    assert "platform" not in res  # a lone manifest says none
    assert res["config"]["digest"] == image.manifest["config"]["digest"]
    assert res["config"]["size"] == image.manifest["config"]["size"]
    assert [(l["digest"], l["size"]) for l in res["layers"]] == \
        [(l["digest"], l["size"]) for l in image.manifest["layers"]]
    assert res["blobsDownloaded"] == 2 and res["blobsCached"] == 0

    t = types(events)
    assert t[0] == "resolving" and "resolved" in t, t
    started = {e["digest"] for e in events if e["type"] == "blob-started"}
    done = {e["digest"] for e in events if e["type"] == "blob-done"}
    blobs = {res["config"]["digest"], *(l["digest"] for l in res["layers"])}
    assert blobs <= started and blobs <= done, t
    for e in events:
        assert e.get("ref") in (None, ref), e

    # What the result names is in the store, under its true digest.
    for dg in [digest, *blobs]:
        path = blob_path(d.root, dg)
        assert path.is_file(), path
        assert sha256sum(path) == dg
    assert not list((d.root / "content" / "ingest").iterdir())

    # Again: nothing is downloaded, every blob is reported cached.
    status, _, again = stream(d.sock, "/v1/pull", {"ref": ref})
    res2 = final(again)
    assert res2["type"] == "result", res2
    assert res2["digest"] == digest
    assert res2["blobsDownloaded"] == 0 and res2["blobsCached"] == 2
    cached = {e["digest"] for e in again if e["type"] == "blob-cached"}
    assert blobs <= cached, types(again)
    assert "blob-started" not in types(again)

    log = d.log()
    assert re.search(r'level=info msg="pull started" op=\d+ ref="' + re.escape(ref) + '"', log)
    assert re.search(r'level=info msg="pull done" digest="' + re.escape(digest) +
                     r'" duration=\d+m?s op=\d+ ref="' + re.escape(ref) + '"', log), log


def test_pull_platform_of_an_index(daemon, registry, seed):
    reg = registry()
    seed(reg, "library/multi:latest", kind="index")
    index = seed.images.get("index").manifest
    arm = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    d = daemon()
    ref = f"{reg.host}/library/multi:latest"

    _, _, events = stream(d.sock, "/v1/pull", {"ref": ref, "platform": "linux/arm64"})
    res = final(events)
    assert res["type"] == "result", res
    assert res["mediaType"] == MT_OCI_INDEX
    assert res["manifest"]["digest"] == arm["digest"]
    assert res["platform"] == "linux/arm64/v8"
    for dg in [res["digest"], res["manifest"]["digest"], res["config"]["digest"],
               *(l["digest"] for l in res["layers"])]:
        assert sha256sum(blob_path(d.root, dg)) == dg


def test_pull_alpine_through_a_docker_io_mirror(daemon, registry, seed):
    mirror = registry(name="mirror")
    digest = seed(mirror, "library/alpine:latest")
    d = daemon(f'debug = true\n[registry."docker.io"]\n  mirrors = ["{mirror.host}"]\n')

    _, _, events = stream(d.sock, "/v1/pull", {"ref": "alpine"})
    res = final(events)
    assert res["type"] == "result", res
    assert res["ref"] == "docker.io/library/alpine:latest"
    assert res["digest"] == digest
    # The mirror served it, asked on behalf of docker.io.
    hits = mirror.wait_access(lambda e: e.user_agent.startswith("kiln/")
                              and "/v2/library/alpine/manifests/" in e.path)
    assert all(e.params.get("ns") == ["docker.io"] for e in hits), [e.line for e in hits]
    assert "registry-1.docker.io" not in d.log()


def test_pull_failure_is_a_final_error_event(daemon, registry):
    reg = registry()
    d = daemon()
    ref = f"{reg.host}/library/nope:latest"
    status, _, events = stream(d.sock, "/v1/pull", {"ref": ref})
    assert status == 200
    err = final(events)
    assert err["type"] == "error", events
    assert ref in err["error"] and reg.host in err["error"], err
    assert 'msg="pull failed"' in d.log()


# ---------------------------------------------------------------------------
# imagetools inspect


def test_inspect_of_an_index_gets_only_the_index(daemon, registry, seed):
    reg = registry()
    digest = seed(reg, "library/img:v1", kind="index")
    d = daemon()
    ref = f"{reg.host}/library/img:v1"

    status, headers, body = request(d.sock, "GET", f"/v1/imagetools/inspect?ref={ref}&raw=1")
    assert status == 200, body
    assert headers["Docker-Content-Digest"] == digest
    reg.wait_access(lambda e: e.method == "GET" and "/manifests/" in e.path,
                    "the manifest GET")
    time.sleep(0.2)  # anything else kilnd sent would be logged by now
    ours = [e for e in reg.access_log() if (e.user_agent or "").startswith("kiln")]
    gets = [e for e in ours if e.method == "GET"]
    assert len(gets) == 1, [e.line for e in ours]
    assert gets[0].path.endswith("/manifests/" + digest) or gets[0].path.endswith(
        "/manifests/v1"), gets[0].line
    assert body == skopeo_raw(seed, reg, "library/img:v1")


@pytest.mark.parametrize("kind,media_type", [("index", MT_OCI_INDEX),
                                             ("small", MT_OCI_MANIFEST)])
def test_inspect_raw_is_what_the_registry_sent(daemon, registry, seed, kind, media_type):
    reg = registry()
    digest = seed(reg, "library/img:v1", kind=kind)
    d = daemon()
    ref = f"{reg.host}/library/img:v1"

    status, headers, body = request(d.sock, "GET", f"/v1/imagetools/inspect?ref={ref}&raw=1")
    assert status == 200, body
    assert body == skopeo_raw(seed, reg, "library/img:v1")
    assert headers["Content-Type"] == media_type
    assert headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest

    status, headers, summary = request(d.sock, "GET", f"/v1/imagetools/inspect?ref={ref}")
    assert status == 200, summary
    assert headers["Content-Type"] == "application/json"
    got = json.loads(summary)
    assert got["name"] == ref
    assert got["mediaType"] == media_type
    assert got["digest"] == digest
    assert got["size"] == len(body)
    assert got["manifest"] == json.loads(body)
    assert 'msg="imagetools inspect done"' in d.log()


def test_inspect_through_a_mirror(daemon, registry, seed):
    mirror = registry(name="mirror")
    digest = seed(mirror, "library/alpine:latest", kind="index")
    d = daemon(f'[registry."docker.io"]\n  mirrors = ["{mirror.host}"]\n')
    status, headers, body = request(d.sock, "GET", "/v1/imagetools/inspect?ref=alpine&raw=true")
    assert status == 200, body
    assert headers["Docker-Content-Digest"] == digest
    assert body == skopeo_raw(seed, mirror, "library/alpine:latest")


def test_inspect_missing_tag_names_ref_and_host(daemon, registry, seed, dead):
    reg = registry()
    seed(reg, "library/alpine:latest")
    d = daemon()
    ref = f"{reg.host}/library/alpine:nope"
    status, headers, body = request(d.sock, "GET", f"/v1/imagetools/inspect?ref={ref}&raw=1")
    assert status == 404, body
    assert headers["Content-Type"] == "application/json"
    msg = json.loads(body)["error"]
    assert ref in msg and f"{reg.host}/v2/library/alpine/manifests/nope" in msg, msg

    # Nobody there: a gateway error naming the host tried.
    ref = f"{dead.host}/library/alpine:latest"
    status, _, body = request(d.sock, "GET", f"/v1/imagetools/inspect?ref={ref}")
    assert status == 502, body
    msg = json.loads(body)["error"]
    assert ref in msg and dead.host in msg, msg


# ---------------------------------------------------------------------------
# imagetools create


def test_imagetools_create_copies_an_index(daemon, registry, seed):
    reg = registry()
    digest = seed(reg, "library/multi:latest", kind="index")
    d = daemon()
    src = f"{reg.host}/library/multi:latest"
    dests = [f"{reg.host}/copies/multi:one", f"{reg.host}/copies/other:two"]

    status, _, events = stream(d.sock, "/v1/imagetools/create",
                               {"sources": [src], "tags": dests})
    assert status == 200, events
    res = final(events)
    assert res["type"] == "result", res
    assert res["digest"] == digest
    assert res["mediaType"] == MT_OCI_INDEX
    assert [t["ref"] for t in res["tags"]] == dests
    assert all(t["digest"] == digest for t in res["tags"]), res

    raw = skopeo_raw(seed, reg, "library/multi:latest")
    index = json.loads(raw)
    for dest in ("copies/multi:one", "copies/other:two"):
        assert skopeo_raw(seed, reg, dest) == raw
        repo = dest.split(":")[0]
        for m in index["manifests"]:  # every platform came along
            assert skopeo_raw(seed, reg, f"{repo}@{m['digest']}") == \
                skopeo_raw(seed, reg, f"library/multi@{m['digest']}")
    assert 'msg="imagetools create done"' in d.log()


def test_imagetools_create_merges_sources(daemon, registry, seed):
    reg = registry()
    seed(reg, "library/multi:latest", kind="index")
    single = seed(reg, "library/docker:v2s2", kind="v2s2")
    index = json.loads(skopeo_raw(seed, reg, "library/multi:latest"))
    d = daemon()
    dest = f"{reg.host}/merged/image:both"

    status, _, events = stream(d.sock, "/v1/imagetools/create", {
        "sources": [f"{reg.host}/library/multi:latest", f"{reg.host}/library/docker:v2s2"],
        "tags": [dest]})
    assert status == 200, events
    res = final(events)
    assert res["type"] == "result", res
    assert res["mediaType"] == MT_OCI_INDEX  # not every entry is a Docker type
    raw = skopeo_raw(seed, reg, "merged/image:both")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == res["digest"]
    assert res["tags"] == [{"ref": dest, "digest": res["digest"]}]
    merged = json.loads(raw)
    assert merged["mediaType"] == MT_OCI_INDEX
    assert [m["digest"] for m in merged["manifests"]] == \
        [m["digest"] for m in index["manifests"]] + [single]
    lone = merged["manifests"][-1]
    assert lone["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert lone["platform"] == {"architecture": "amd64", "os": "linux"}
    for m in merged["manifests"]:
        assert "sha256:" + hashlib.sha256(
            skopeo_raw(seed, reg, f"merged/image@{m['digest']}")).hexdigest() == m["digest"]


# ---------------------------------------------------------------------------
# bad requests


@pytest.mark.parametrize("body,needle", [
    (b"{", "invalid JSON"),
    (b"", "no body"),
    (b"[]", "object"),
    (b"{}", "missing \"ref\""),
    (b'{"ref": ""}', "empty"),
    (b'{"ref": 7}', "string"),
    (b'{"ref": "alpine", "tag": "x"}', "unknown field 'tag'"),
    (b'{"ref": "alpine", "ref": "busybox"}', "duplicate"),
    (b'{"ref": "Alpine"}', "Alpine"),
    (b'{"ref": "alpine", "platform": "linux/nope/x/y"}', "linux/nope/x/y"),
])
def test_bad_pull_bodies_are_refused(daemon, body, needle):
    d = daemon()
    status, headers, data = request(d.sock, "POST", "/v1/pull", body)
    assert status == 400, data
    assert headers["Content-Type"] == "application/json"
    assert needle in json.loads(data)["error"]
    assert "pull started" not in d.log()


def test_other_bad_requests(daemon):
    d = daemon()
    cases = [
        ("POST", "/v1/pull?ref=alpine", b'{"ref": "alpine"}', 400, "unknown query parameter"),
        ("GET", "/v1/pull", None, 405, "not allowed"),
        ("GET", "/v1/imagetools/inspect", None, 400, "'ref' is required"),
        ("GET", "/v1/imagetools/inspect?ref=alpine&raw=maybe", None, 400, "maybe"),
        ("GET", "/v1/imagetools/inspect?ref=alpine&format=json", None, 400, "'format'"),
        ("GET", "/v1/imagetools/inspect?ref=alpine&ref=busybox", None, 400, "more than once"),
        ("GET", "/v1/imagetools/inspect?ref=x/UPPER", None, 400, "x/UPPER"),
        ("POST", "/v1/imagetools/inspect?ref=alpine", b"{}", 405, "not allowed"),
        ("POST", "/v1/imagetools/create", b'{"sources": ["alpine"]}', 400, "\"tags\""),
        ("POST", "/v1/imagetools/create", b'{"sources": [], "tags": ["x/y:z"]}', 400, "empty"),
        ("POST", "/v1/imagetools/create", b'{"sources": ["alpine"], "tags": ["Bad"]}', 400,
         "Bad"),
    ]
    for method, path, body, code, needle in cases:
        status, headers, data = request(d.sock, method, path, body)
        assert status == code, (method, path, data)
        assert needle in json.loads(data)["error"], (path, data)
    # A body larger than the API allows is refused before it is sent.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect(str(d.sock))
        s.sendall(b"POST /v1/pull HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % ((1 << 20) + 1))
        answer = read_all(s)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b'{"error":"request body too large"}' in answer
    assert request(d.sock, "GET", "/v1/info")[0] == 200


# ---------------------------------------------------------------------------
# clients that go away, and stopping


def start_held_pull(d, reg, faulty, seed):
    """A pull through a proxy that holds a layer's body after 1 KiB; returns
    (socket, gate, ref, what was read so far) once the daemon waits on it."""
    seed(reg, "library/big:latest", kind="layers12")
    image = seed.images.get("layers12")
    proxy = faulty(reg)
    gate = proxy.hold("/blobs/" + image.manifest["layers"][3]["digest"], after=1024,
                      timeout=TIMEOUT * 3)
    ref = f"{proxy.host}/library/big:latest"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(str(d.sock))
    body = json.dumps({"ref": ref}).encode()
    s.sendall(b"POST /v1/pull HTTP/1.1\r\nHost: kilnd\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while b"blob-started" not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 "), got
    gate.wait_held(1)
    return s, gate, ref, got


def read_all(s, data=b""):
    """Until the daemon closes the connection."""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def read_response(s, data=b""):
    """Until the end of a chunked answer (the connection stays open)."""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = s.recv(65536)
        assert chunk, data[-200:]
        data += chunk
    return data


def dechunk(data):
    """The body of a chunked HTTP/1.1 response."""
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body
        body += rest[:size]
        rest = rest[size + 2:]


def test_client_hanging_up_mid_pull(daemon, registry, faulty, seed):
    reg = registry()
    d = daemon()
    s, gate, ref, _ = start_held_pull(d, reg, faulty, seed)
    s.close()
    d.wait_log("the client went away")
    gate.release()
    d.wait_until(lambda: re.search(r'msg="pull (done|failed|cancelled)"', d.log()),
                 "the pull to end")
    # The daemon is fine, and a new pull of the same image works.
    _, _, events = stream(d.sock, "/v1/pull", {"ref": f"{reg.host}/library/big:latest"})
    assert final(events)["type"] == "result", events[-1]
    assert d.stop() == 0


def test_sigterm_during_a_pull(daemon, registry, faulty, seed):
    reg = registry()
    d = daemon()
    s, gate, ref, got = start_held_pull(d, reg, faulty, seed)
    try:
        d.proc.send_signal(signal.SIGTERM)
        # New work is refused while stopping (unless kilnd is gone already:
        # the running pull is cancelled at once, so it may exit before the
        # log can be polled).
        deadline = time.monotonic() + TIMEOUT
        while "msg=stopping" not in d.log() and d.proc.poll() is None:
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.02)
        try:
            status, _, body = request(d.sock, "POST", "/v1/pull", {"ref": ref})
            assert status == 503, body
        except (OSError, http.client.HTTPException):
            pass
        gate.release()
        assert d.wait_exit() == 0
        data = got + read_all(s)
    finally:
        s.close()
    log = d.log()
    assert "level=info msg=stopping" in log and "level=info msg=stopped" in log, log
    assert "waiting for running operations to end" in log, log
    # The client got the end of its stream: a final event.
    events = parse_ndjson(dechunk(data))
    assert final(events)["type"] in ("result", "error")
    assert not d.sock.exists()


def ingest_files(root):
    ingest = pathlib.Path(root) / "content" / "ingest"
    return [p for p in ingest.rglob("*") if not p.is_dir()] if ingest.exists() else []


def test_client_hanging_up_cancels_a_held_pull(daemon, registry, faulty, seed):
    # The gate is never released: only cancellation can end the transfer
    # before the 60 s stall timeout.
    reg = registry()
    d = daemon()
    s, gate, ref, _ = start_held_pull(d, reg, faulty, seed)
    try:
        s.close()
        started = time.monotonic()
        d.wait_log("the client went away")
        d.wait_log('msg="pull cancelled"')
        assert time.monotonic() - started < 5, d.log()
        line = [l for l in d.log().splitlines() if 'msg="pull cancelled"' in l][-1]
        assert "cancelled" in line.split("error=", 1)[1], line
        assert ingest_files(d.root) == []
        assert request(d.sock, "GET", "/v1/info")[0] == 200
    finally:
        gate.release()
    assert d.stop() == 0


def test_sigterm_stops_a_held_pull_at_once(daemon, registry, faulty, seed):
    reg = registry()
    d = daemon()
    s, gate, ref, got = start_held_pull(d, reg, faulty, seed)
    try:
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait_exit() == 0
        took = time.monotonic() - started
        data = got + read_all(s)
    finally:
        gate.release()
        s.close()
    assert took < 5, f"kilnd took {took:.1f}s to stop:\n{d.log()}"
    log = d.log()
    assert 'msg="pull cancelled"' in log, log
    events = parse_ndjson(dechunk(data))
    last = final(events)
    assert last["type"] == "error" and "cancelled" in json.dumps(last), last
    assert ingest_files(d.root) == []


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_waiting_stream_does_not_spin(daemon, registry, faulty, seed):
    # While the pull waits on a held layer, the loop sleeps: the stream's
    # connection is suspended, not polled.
    reg = registry()
    d = daemon()
    s, gate, _, got = start_held_pull(d, reg, faulty, seed)
    try:
        before = cpu_seconds(d.pid)
        time.sleep(1.5)
        spent = cpu_seconds(d.pid) - before
        assert spent < 0.3, f"kilnd used {spent:.2f}s of CPU in 1.5s while waiting"
        gate.release()
        data = read_response(s, got)
    finally:
        s.close()
    assert final(parse_ndjson(dechunk(data)))["type"] == "result"


def test_client_hanging_up_mid_inspect(daemon, registry, faulty, seed):
    reg = registry()
    seed(reg, "library/multi:latest", kind="index")
    proxy = faulty(reg)
    gate = proxy.hold("/manifests/sha256:", timeout=TIMEOUT * 3)
    d = daemon()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(str(d.sock))
    s.sendall(b"GET /v1/imagetools/inspect?ref=%s/library/multi:latest&raw=1 HTTP/1.1\r\n"
              b"Host: kilnd\r\n\r\n" % proxy.host.encode())
    gate.wait_held(1)
    s.close()
    # The held GET is abandoned at once: the operation is cancelled (so
    # quickly that the loop may never log the hang-up itself).
    d.wait_log('msg="imagetools inspect cancelled"')
    gate.release()
    status, _, body = request(d.sock, "GET",
                              f"/v1/imagetools/inspect?ref={proxy.host}/library/multi:latest")
    assert status == 200, body
    assert d.stop() == 0


def test_operations_are_bounded(daemon, registry, faulty, seed):
    # KILN_DAEMON_MAX_OPERATIONS (16) pulls wait on one held layer; the next
    # request is refused at once, and works again once they are done.
    reg = registry()
    seed(reg, "library/big:latest", kind="layers12")
    image = seed.images.get("layers12")
    proxy = faulty(reg)
    gate = proxy.hold("/blobs/" + image.manifest["layers"][3]["digest"], after=1024,
                      timeout=TIMEOUT * 3)
    d = daemon()
    ref = f"{proxy.host}/library/big:latest"
    body = json.dumps({"ref": ref}).encode()
    socks = []
    try:
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            s.connect(str(d.sock))
            s.sendall(b"POST /v1/pull HTTP/1.1\r\nHost: kilnd\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            socks.append([s, b""])
        for entry in socks:
            while b"resolving" not in entry[1]:
                chunk = entry[0].recv(65536)
                assert chunk, entry[1]
                entry[1] += chunk
        status, _, answer = request(d.sock, "POST", "/v1/pull", body)
        assert status == 503, answer
        assert "too many operations" in json.loads(answer)["error"]
        gate.release()
        for entry in socks:
            events = parse_ndjson(dechunk(read_response(entry[0], entry[1])))
            assert final(events)["type"] == "result", events[-1]
    finally:
        for entry in socks:
            entry[0].close()
    d.wait_until(lambda: d.log().count('msg="pull done"') == 16, "16 pulls to end")
    _, _, events = stream(d.sock, "/v1/pull", {"ref": ref})
    assert final(events)["type"] == "result"
