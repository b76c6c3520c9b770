# SPDX-License-Identifier: Apache-2.0
"""kiln's registry client pulling from real registries (registries.py):
mirrors and fallback, certificates, auth, faults, the connection limit and
the debug logs. Driven through build/**/registry-tool, which runs the same
library functions kilnd will.

Nothing here may reach the internet: every tool run gets http(s)_proxy set
to a local sentinel that counts connections (loopback addresses are never
proxied), and tests that name docker.io assert the sentinel saw nothing.
"""
import json
import os
import pathlib
import re
import socket
import subprocess
import threading
import time

import pytest

import registries as R

TIMEOUT = R.TIMEOUT
HEX = re.compile(r"^[0-9a-f]+$")


# ---------------------------------------------------------------------------
# helpers (test_registry_push.py imports them)


REPO = pathlib.Path(__file__).resolve().parents[2]


def build_dir():
    return pathlib.Path(os.environ.get("KILN_BUILD_DIR", REPO / "build"))


def tool_path():
    """build/**/registry-tool (declared in src/registry/meson.build)."""
    b = build_dir()
    for p in sorted(b.rglob("registry-tool")):
        if p.is_file() and os.access(p, os.X_OK):
            return p
    pytest.fail(f"registry-tool not found under {b}: run 'ninja -C {b}' first")


class Sentinel:
    """What http(s)_proxy points at: accepts TCP connections, counts them and
    closes them at once. A request to a non-loopback host (registry-1.docker.io)
    would come here instead of the internet."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            c.close()

    def close(self):
        self._stop = True
        self._t.join(5)
        self.sock.close()


LOG_FIELD = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log(text):
    """logrus text lines -> dicts (quoted values decoded)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("time="):
            continue
        d = {}
        for k, v in LOG_FIELD.findall(line):
            d[k] = json.loads(v) if v.startswith('"') else v
        d["_line"] = line
        out.append(d)
    return out


class Run:
    def __init__(self, proc, stdout, stderr):
        self.rc = proc.returncode
        self.stdout = stdout
        self.stderr = stderr
        self.lines = [json.loads(x) for x in stdout.splitlines() if x.strip()]
        self.events = [x for x in self.lines if "event" in x]
        self.result = next((x["result"] for x in self.lines if "result" in x), None)
        self.error = next((x["error"] for x in self.lines if "error" in x), None)
        self.log = parse_log(stderr)

    def logs(self, msg):
        return [x for x in self.log if x.get("msg") == msg]

    def events_of(self, kind):
        return [e for e in self.events if e["event"] == kind]

    def __repr__(self):
        return (f"<Run rc={self.rc} error={self.error!r}>\n--- stdout\n{self.stdout[-4000:]}"
                f"\n--- stderr\n{self.stderr[-8000:]}")


class Tool:
    """registry-tool with a config, a store root, a HOME and DOCKER_CONFIG of
    its own, fast retries and the sentinel proxy."""

    def __init__(self, dir, sentinel, config="", debug=True):
        self.dir = pathlib.Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = self.dir / "root"
        self.config_path = self.dir / "buildkitd.toml"
        self.config_path.write_text(config)
        self.docker_config = self.dir / "docker"
        self.docker_config.mkdir(exist_ok=True)
        self.debug = debug
        self.sentinel = sentinel
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "DOCKER_CONFIG": str(self.docker_config),
            "KILN_REGISTRY_RETRY_BASE_MS": "50",
            "http_proxy": sentinel.url, "https_proxy": sentinel.url,
            "HTTPS_PROXY": sentinel.url, "all_proxy": sentinel.url, "ALL_PROXY": sentinel.url,
            "no_proxy": "", "NO_PROXY": "",
        }
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                self.env[k] = os.environ[k]

    def set_config(self, text):
        self.config_path.write_text(text)

    def argv(self, *args):
        a = [str(tool_path()), "--config", str(self.config_path), "--root", str(self.root)]
        if self.debug:
            a.append("--debug")
        return a + [str(x) for x in args]

    def run(self, *args, ok=True, timeout=None, env=None):
        p = subprocess.run(self.argv(*args), capture_output=True, text=True,
                           timeout=timeout or 4 * TIMEOUT, env={**self.env, **(env or {})})
        r = Run(p, p.stdout, p.stderr)
        if ok is True:
            assert r.rc == 0 and r.error is None, r
        elif ok is False:
            assert r.rc == 1 and r.error, r
        return r

    def blob_path(self, digest):
        return self.root / "content" / "blobs" / "sha256" / digest.split(":", 1)[1]

    def has_blob(self, digest):
        return self.blob_path(digest).exists()

    def ingest_files(self):
        d = self.root / "content" / "ingest"
        return list(d.iterdir()) if d.exists() else []


@pytest.fixture
def sentinel():
    s = Sentinel()
    yield s
    s.close()


@pytest.fixture
def tool(tmp_path, sentinel):
    def make(config="", debug=True, name="tool"):
        return Tool(tmp_path / name, sentinel, config, debug)
    return make


def toml_str(s):
    return json.dumps(str(s))


def registry_section(host, http=None, ca=None, cert=None, key=None, mirrors=None,
                     insecure=None):
    lines = [f"[registry.{toml_str(host)}]"]
    if mirrors is not None:
        lines.append("mirrors = [" + ", ".join(toml_str(m) for m in mirrors) + "]")
    if http is not None:
        lines.append(f"http = {'true' if http else 'false'}")
    if insecure is not None:
        lines.append(f"insecure = {'true' if insecure else 'false'}")
    if ca:
        lines.append(f"ca = [{toml_str(ca)}]")
    if cert:
        lines.append(f"[[registry.{toml_str(host)}.keypair]]")
        lines.append(f"key = {toml_str(key)}")
        lines.append(f"cert = {toml_str(cert)}")
    return "\n".join(lines) + "\n"


def expected_blobs(image):
    """Manifest, config and layer digests of an Images kind."""
    m = image.manifest
    return [image.digest, m["config"]["digest"]] + [layer["digest"] for layer in m["layers"]]


def assert_pulled(t, image, result):
    assert result["digest"] == image.digest
    for d in expected_blobs(image):
        assert t.has_blob(d), d
        assert R.sha256_hex(t.blob_path(d).read_bytes()) == d.split(":")[1]
    assert t.ingest_files() == []
    assert result["images"][0]["layers"] == [x["digest"] for x in image.manifest["layers"]]


# ---------------------------------------------------------------------------
# plain pulls, resolve, debug logs


def test_pull_plain_registry_then_cached(registry, seed, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    t = tool()
    ref = f"{reg.host}/library/alpine"

    r = t.run("resolve", ref)
    assert r.result == {"ref": f"{reg.host}/library/alpine:latest", "digest": image.digest,
                        "mediaType": R.MT_OCI_MANIFEST,
                        "size": len((image.layout / "blobs" / "sha256" /
                                     image.digest[7:]).read_bytes())}

    r = t.run("pull", ref)
    assert_pulled(t, image, r.result)
    assert r.result["blobsDownloaded"] == 2
    kinds = [e["event"] for e in r.events]
    assert kinds[:2] == ["resolving", "resolved"]
    for d in expected_blobs(image):
        assert any(e["event"] == "blob-done" and e["digest"] == d for e in r.events), d

    # Again: everything is in the store; only the tag is resolved.
    def kiln(method):
        return [e for e in reg.access_log()
                if e.method == method and e.user_agent.startswith("kiln/")]

    def gets():
        return kiln("GET")

    def heads():
        return kiln("HEAD")
    R.wait_for(lambda: len(gets()) >= 3, "the first pull's GETs in the access log")
    n_gets = len(gets())
    r = t.run("pull", ref)
    assert r.result["blobsDownloaded"] == 0 and r.result["blobsCached"] == 2
    assert {e["digest"] for e in r.events_of("blob-cached")} == set(expected_blobs(image))
    R.wait_for(lambda: len(heads()) >= 3, "the second pull's HEAD in the access log")
    assert len(gets()) == n_gets
    assert all("/manifests/" in e.path for e in heads())

    # Pinned by a digest the store holds: resolved there, no request at all.
    # A tag pull afterwards is the marker that the log has caught up.
    n_heads = len(heads())
    r = t.run("pull", f"{ref}@{image.digest}")
    assert r.result["digest"] == image.digest and r.result["blobsDownloaded"] == 0
    assert [e["event"] for e in r.events][:2] == ["resolving", "resolved"]
    t.run("pull", ref)
    R.wait_for(lambda: len(heads()) >= n_heads + 1, "the tag pull's HEAD in the access log")
    assert len(heads()) == n_heads + 1 and len(gets()) == n_gets
    assert not any(image.digest in e.path for e in heads())


def test_pull_index_selects_platform(registry, seed, tool):
    reg = registry()
    seed(reg, "library/multi:1", "index")
    index = seed.images.get("index")
    t = tool()
    r = t.run("pull", f"{reg.host}/library/multi:1")
    assert r.result["mediaType"] == R.MT_OCI_INDEX
    assert r.result["images"][0]["platform"] == "linux/amd64"
    assert r.result["images"][0]["layers"] == [x["digest"] for x in index.layers]

    r = t.run("pull", f"{reg.host}/library/multi:1", "--platform", "linux/arm64")
    assert r.result["images"][0]["platform"] == "linux/arm64/v8"
    assert r.result["images"][0]["layers"] != [x["digest"] for x in index.layers]

    r = t.run("pull", f"{reg.host}/library/multi:1", "--platform", "linux/s390x", ok=False)
    assert "linux/s390x" in r.error or "s390x" in r.error, r


def test_docker_io_mirror_and_debug_logs(registry, seed, tool, sentinel):
    mirror = registry(name="hub-mirror")
    seed(mirror, "library/alpine:latest", "small")
    image = seed.images.get("small")
    t = tool(config="debug = true\n" + registry_section("docker.io", mirrors=[mirror.host]),
             debug=False)  # debug from the config, as kilnd
    r = t.run("pull", "alpine")
    assert r.result["ref"] == "docker.io/library/alpine:latest"
    assert_pulled(t, image, r.result)

    # The mirror served everything, with ?ns=docker.io; nothing else was asked.
    mirror.wait_access(lambda e: "/blobs/" in e.path and e.method == "GET")
    entries = [e for e in mirror.access_log() if e.user_agent.startswith("kiln/")]
    assert entries and all(e.params.get("ns") == ["docker.io"] for e in entries), entries
    assert sentinel.connections == 0

    dos = r.logs("do request")
    resps = r.logs("fetch response received")
    assert dos and resps
    trace = dos[0]["traceID"]
    spans = set()
    for d in dos:
        assert d["level"] == "debug"
        assert d["url"].startswith(f"http://{mirror.host}/v2/library/alpine/")
        assert d["url"].endswith("?ns=docker.io"), d
        assert d["request.method"] in ("GET", "HEAD")
        assert d["request.header.user-agent"].startswith("kiln/")
        assert "request.header.accept" in d
        assert not any(k.startswith("request.header.authorization") for k in d)
        assert len(d["traceID"]) == 32 and HEX.match(d["traceID"])
        assert len(d["spanID"]) == 16 and HEX.match(d["spanID"])
        assert d["traceID"] == trace  # one trace per pull
        spans.add(d["spanID"])
    assert len(spans) == len(dos)  # one span per request
    for x in resps:
        assert x["response.status"] == "200 OK"
        assert "response.header.content-type" in x
        assert x["spanID"] in spans
    blob_dos = [d for d in dos if "/blobs/" in d["url"]]
    assert blob_dos and all(d.get("digest") and d.get("mediatype") and d.get("size")
                            for d in blob_dos)
    assert r.logs("resolving") and r.logs("resolved")[0]["desc.digest"] == image.digest
    assert any(x.get("digest") == image.manifest["layers"][0]["digest"] for x in r.logs("fetch"))
    # The text format is logrus': time, level, msg first.
    assert re.match(r'^time="[^"]+" level=debug msg="do request" ', dos[0]["_line"])


def test_the_origin_would_only_reach_the_sentinel(tool, sentinel):
    # The safety net of every test here: docker.io's origin is never
    # reached; a request for it ends at the local sentinel proxy.
    t = tool()
    r = t.run("resolve", "alpine", ok=False)
    assert "https://registry-1.docker.io/v2/library/alpine/manifests/latest" in r.error
    assert sentinel.connections >= 1


def test_dead_mirror_then_live_one(registry, seed, tool, dead, sentinel):
    live = registry(name="live-mirror")
    seed(live, "library/alpine:latest", "small")
    image = seed.images.get("small")
    t = tool(config=registry_section("docker.io", mirrors=[dead.host, live.host]))
    r = t.run("pull", "alpine")
    assert_pulled(t, image, r.result)
    nexts = r.logs("trying next host")
    assert nexts and all(x["level"] == "info" for x in nexts)
    assert any(dead.host in x["error"] for x in nexts), nexts
    assert sentinel.connections == 0


def test_nginx_path_prefix_mirror(registry, seed, nginx_mirror, tool, sentinel):
    upstream = registry(name="upstream")
    seed(upstream, "library/alpine:latest", "small")
    image = seed.images.get("small")
    m = nginx_mirror(upstream, prefix="hub/proxy")
    t = tool(config=registry_section("docker.io", mirrors=[m.mirror]))
    r = t.run("pull", "alpine")
    assert_pulled(t, image, r.result)
    got = m.wait_access(lambda e: "/blobs/" in e.uri and e.method == "GET")
    for e in m.access_log():
        if e.uri.startswith("/v2/hub/proxy/"):
            assert e.uri.endswith("?ns=docker.io"), e
    assert all(e.uri.startswith("/v2/hub/proxy/library/alpine/") for e in got)
    assert all(d["url"].startswith(f"http://{m.host}/v2/hub/proxy/library/alpine/")
               for d in r.logs("do request"))
    assert sentinel.connections == 0


def test_http_fallback_for_insecure_http_registry(registry, seed, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    t = tool(config=registry_section(reg.host, http=True, insecure=True))
    r = t.run("pull", f"{reg.host}/library/alpine")
    assert r.result["blobsDownloaded"] == 2
    assert r.logs("falling back to plain http")
    https = [d for d in r.logs("do request") if d["url"].startswith("https://")]
    assert len(https) == 1  # only the first request tried TLS


# ---------------------------------------------------------------------------
# certificates


def test_mtls_registry_with_ca_and_keypair(registry, seed, tool, pki):
    reg = registry(mtls=True)
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    ok = registry_section(reg.host, http=False, ca=pki.ca_crt, cert=pki.client_crt,
                          key=pki.client_key)
    t = tool(config=ok)
    r = t.run("pull", f"{reg.host}/library/alpine")
    assert_pulled(t, image, r.result)
    assert all(d["url"].startswith("https://") for d in r.logs("do request"))

    # Without the key pair: the registry refuses the handshake.
    t2 = tool(config=registry_section(reg.host, http=False, ca=pki.ca_crt), name="nokey")
    r = t2.run("pull", f"{reg.host}/library/alpine", ok=False)
    assert f"https://{reg.host}/v2/library/alpine/manifests/latest" in r.error
    assert re.search(r"certificate|alert|handshake|SSL|TLS", r.error, re.I), r.error

    # The wrong CA: kiln refuses the registry's certificate.
    t3 = tool(config=registry_section(reg.host, http=False, ca=pki.other_ca_crt,
                                      cert=pki.client_crt, key=pki.client_key), name="wrongca")
    r = t3.run("pull", f"{reg.host}/library/alpine", ok=False)
    assert f"https://{reg.host}" in r.error
    assert re.search(r"certificate", r.error, re.I), r.error
    assert "PRIVATE KEY" not in r.stderr + r.stdout


# ---------------------------------------------------------------------------
# auth


def write_docker_config(t, *regs):
    R.docker_config(t.docker_config, *regs)


def test_htpasswd_basic_auth_from_docker_config(registry, seed, tool):
    reg = registry(auth="htpasswd")
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    t = tool()
    r = t.run("pull", f"{reg.host}/library/alpine", ok=False)
    assert "401 Unauthorized" in r.error and reg.host in r.error, r.error

    write_docker_config(t, reg)
    r = t.run("pull", f"{reg.host}/library/alpine")
    assert_pulled(t, image, r.result)
    out = r.stdout + r.stderr
    assert reg.password not in out
    import base64
    assert base64.b64encode(reg.creds.encode()).decode() not in out
    # Basic was sent proactively after the first 401: one 401 in all.
    unauthorized = [x for x in r.logs("fetch response received")
                    if x["response.status"].startswith("401")]
    assert len(unauthorized) == 1


@pytest.mark.parametrize("get_status", [None, 404])
def test_token_auth_get_then_post_and_cached(registry, seed, tool, get_status):
    reg = registry(auth="token")
    seed(reg, "library/multi:1", "index")  # index, manifest, config, layer: several requests
    seeded_requests = len(reg.token_server.requests)
    reg.token_server.get_status = get_status
    t = tool()
    write_docker_config(t, reg)
    r = t.run("pull", f"{reg.host}/library/multi:1")
    assert r.result["blobsDownloaded"] >= 2
    reqs = reg.token_server.requests[seeded_requests:]
    methods = [x.method for x in reqs]
    if get_status is None:
        assert methods == ["GET"], methods
        assert reqs[0].username == reg.username
    else:
        assert methods == ["GET", "POST"], methods
        assert reqs[1].grant_type == "password" and reqs[1].form["client_id"] == ["buildkit-client"]
    assert reqs[-1].scopes == ["repository:library/multi:pull"]
    out = r.stdout + r.stderr
    assert reg.password not in out
    assert "eyJ" not in out  # no JWT (token) anywhere
    assert r.logs("do request") and all(not k.startswith("request.header.authorization")
                                        for d in r.logs("do request") for k in d)


# ---------------------------------------------------------------------------
# faults


def test_corrupt_blob_is_never_published(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    layer = image.manifest["layers"][0]["digest"]
    proxy = faulty(reg)
    proxy.corrupt(re.escape(layer))
    t = tool()
    r = t.run("pull", f"{proxy.host}/library/alpine", ok=False)
    assert layer in r.error and "sha256:" in r.error
    m = re.search(r"expected (sha256:[0-9a-f]{64}).*?(sha256:[0-9a-f]{64})", r.error)
    assert m and m.group(1) == layer and m.group(2) != layer, r.error
    assert not t.has_blob(layer)
    assert t.ingest_files() == []
    # The manifest and config were fine and are kept.
    assert t.has_blob(image.digest)
    assert r.events_of("error")


def test_connection_dropped_mid_blob_is_retried(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    layer = image.manifest["layers"][0]["digest"]
    proxy = faulty(reg)
    proxy.drop(re.escape(layer), after=100 * 1024, times=1)
    t = tool()
    r = t.run("pull", f"{proxy.host}/library/alpine")
    assert_pulled(t, image, r.result)
    gets = proxy.find(re.escape(layer), method="GET")
    assert len(gets) == 2 and gets[0].fault == "drop", gets


def test_500_from_mirror_moves_to_next_host(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    proxy = faulty(reg)
    proxy.status(r"^/v2/library/", code=500)
    t = tool(config=registry_section(reg.host, mirrors=[proxy.host]))
    r = t.run("pull", f"{reg.host}/library/alpine")
    assert_pulled(t, image, r.result)
    assert any("500 Internal Server Error" in x["error"] for x in r.logs("trying next host"))
    # Not the last host: no retries there, one request per object.
    paths = [x.path for x in proxy.find(r"^/v2/library/")]
    assert len(paths) == len(set(paths)), paths
    assert all(q == ["127.0.0.1:%d" % reg.port] for q in
               (x.params.get("ns") for x in proxy.find(r"^/v2/library/")))


def test_every_host_failing_names_each(registry, seed, faulty, tool, dead):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    proxy = faulty(reg)
    proxy.status(r"^/v2/library/", code=503)
    t = tool(config=registry_section(proxy.host, mirrors=[dead.host]))
    r = t.run("pull", f"{proxy.host}/library/alpine", ok=False)
    assert f"{proxy.host}/library/alpine:latest" in r.error
    assert f"http://{dead.host}/v2/library/alpine/manifests/latest?ns=" in r.error
    assert f"http://{proxy.host}/v2/library/alpine/manifests/latest" in r.error
    assert "503 Service Unavailable" in r.error
    # The last host got containerd's retry once (the same 503 twice stops it).
    assert len(proxy.find("/manifests/latest")) == 2


@pytest.mark.parametrize("method,chunked", [(None, False), ("GET", True)])
def test_oversized_manifest_is_refused(registry, seed, faulty, tool, method, chunked):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    proxy = faulty(reg)
    proxy.oversize("/manifests/", size=5 * R.MiB, chunked=chunked, method=method)
    t = tool()
    r = t.run("pull", f"{proxy.host}/library/alpine", ok=False)
    assert "5242880" in r.error or "larger than" in r.error, r.error
    assert "4393216" in r.error, r.error  # the limit, named
    assert t.ingest_files() == []


# ---------------------------------------------------------------------------
# the connection limit


def limit_config(n):
    return f"[system]\nmaxRegistryConcurrency = {n}\n"


def test_connection_limit_12_layers(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/big12:1", "layers12")
    image = seed.images.get("layers12")
    proxy = faulty(reg)
    proxy.slow(r"/blobs/", rate=512 * 1024)  # ~0.15 s a layer: transfers overlap
    t = tool(config=limit_config(4))
    r = t.run("pull", f"{proxy.host}/library/big12:1")
    assert_pulled(t, image, r.result)
    assert proxy.max_active <= 5, proxy.max_active
    assert proxy.max_active >= 4, proxy.max_active  # the limit was reached, not avoided


def test_metadata_passes_held_layers(registry, seed, faulty, tool):
    n = 2
    reg = registry()
    seed(reg, "library/big12:1", "layers12")
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("layers12")
    small = seed.images.get("small")
    proxy = faulty(reg)
    held_layers = "|".join(re.escape(x["digest"]) for x in image.manifest["layers"][1:])
    gate = proxy.hold(f"/blobs/({held_layers})", after=1024)
    t = tool(config=limit_config(n))
    p = subprocess.Popen(t.argv("batch"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=t.env)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    try:
        p.stdin.write(f"big pull {proxy.host}/library/big12:1\n")
        p.stdin.flush()
        gate.wait_held(n)
        # N layers are open and held; one metadata pull must still finish.
        p.stdin.write(f"meta pull --metadata-only {proxy.host}/library/alpine\n")
        p.stdin.flush()
        R.wait_for(lambda: any('"id":"meta"' in x and ('"result"' in x or '"error"' in x)
                               for x in lines), "the metadata pull")
        assert gate.held == n  # the layers are still held: it did not wait for them
        assert proxy.active <= n + 1 and proxy.max_active <= n + 1, proxy.max_active
        meta = next(json.loads(x) for x in lines if '"id":"meta"' in x and '"result"' in x)
        assert meta["result"]["digest"] == small.digest
    finally:
        gate.release()
        p.stdin.close()
        try:
            p.wait(timeout=4 * TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    reader.join(TIMEOUT)
    err = p.stderr.read()
    big = [json.loads(x) for x in lines if '"id":"big"' in x and ('"result"' in x or
                                                                 '"error"' in x)]
    assert p.returncode == 0 and big and "result" in big[0], (lines[-5:], err[-3000:])
    assert proxy.max_active <= n + 1, proxy.max_active


def test_concurrent_pulls_download_a_blob_once(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    layer = image.manifest["layers"][0]["digest"]
    proxy = faulty(reg)
    gate = proxy.hold(re.escape(layer), after=1024)
    t = tool()
    ref = f"{proxy.host}/library/alpine"

    def second_waits(lines):
        # "a" holds the layer's download; "b" has reached the same blob.
        if gate.held < 1:
            return False
        return any(x.get("id") == "b" and x.get("event") == "blob-started" and
                   x.get("digest") == layer for x in lines)

    p = subprocess.Popen(t.argv("batch"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=t.env)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in p.stdout),
                              daemon=True)
    reader.start()
    try:
        p.stdin.write(f"a pull {ref}\n")
        p.stdin.flush()
        gate.wait_held(1)
        p.stdin.write(f"b pull {ref}\n")
        p.stdin.flush()
        R.wait_for(lambda: second_waits(list(lines)), "the second pull to reach the blob")
        gate.release()
        p.stdin.close()
        p.wait(timeout=4 * TIMEOUT)
    finally:
        gate.release()
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(TIMEOUT)
    results = {x["id"]: x["result"] for x in lines if "result" in x}
    assert set(results) == {"a", "b"}, (lines[-4:], p.stderr.read()[-2000:])
    assert results["a"]["blobsDownloaded"] + results["b"]["blobsDownloaded"] == 2
    assert len(proxy.find(re.escape(layer), method="GET")) == 1
    assert t.has_blob(layer) and t.ingest_files() == []


def test_head_405_falls_back_to_get_and_429_is_retried(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    layer = image.manifest["layers"][0]["digest"]
    proxy = faulty(reg)
    proxy.status(r"/manifests/latest$", code=405, method="HEAD")
    proxy.status(re.escape(layer), code=429, times=1, method="GET")
    t = tool()
    r = t.run("pull", f"{proxy.host}/library/alpine")
    assert_pulled(t, image, r.result)
    assert [x.method for x in proxy.find(r"/manifests/latest$")] == ["HEAD", "GET"]
    assert [x.status for x in proxy.find(re.escape(layer))] == [429, 200]


def test_response_secrets_redacted_and_json_logs(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    proxy = faulty(reg)
    proxy.status(r"/manifests/", code=404,
                 headers=[("Set-Cookie", "sid=cookie-secret-1"),
                          ("X-Auth-Token", "token-secret-2")])
    t = tool(config=registry_section(reg.host, mirrors=[proxy.host]))
    r = t.run("--log-format", "json", "pull", f"{reg.host}/library/alpine")
    assert r.result["digest"]
    assert "cookie-secret-1" not in r.stderr and "token-secret-2" not in r.stderr
    logs = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    resp = [x for x in logs if x.get("msg") == "fetch response received"
            and x.get("response.status") == "404 Not Found"]
    assert resp and resp[0]["response.header.set-cookie"] == "REDACTED"
    assert resp[0]["response.header.x-auth-token"] == "REDACTED"
    assert any(x.get("msg") == "trying next host" and x.get("level") == "info" for x in logs)


def test_foreign_urls_are_tried_first(registry, seed, tool, tmp_path):
    # distribution refuses manifests with foreign URLs unless allowed
    reg = registry(name="main", config={
        "validation": {"manifests": {"urls": {"allow": [r"^http://127\.0\.0\.1:"]}}}})
    storage = registry(name="storage")
    seed(storage, "library/alpine:latest", "small")
    small = seed.images.get("small")
    src = R.OciLayout(small.layout)
    layer = dict(small.manifest["layers"][0])
    layer["urls"] = [f"http://{storage.host}/v2/library/alpine/blobs/{layer['digest']}"]
    out = R.OciLayout(tmp_path / "foreign")
    out.add_blob(src.blob(small.manifest["config"]["digest"]), R.MT_OCI_CONFIG)
    out.add_blob(src.blob(layer["digest"]), R.MT_OCI_LAYER_GZIP)
    manifest = {"schemaVersion": 2, "mediaType": R.MT_OCI_MANIFEST,
                "config": small.manifest["config"], "layers": [layer]}
    desc = out.add_blob(json.dumps(manifest).encode(), R.MT_OCI_MANIFEST)
    out.tag(desc, "foreign")
    tool(name="pusher").run("push", f"{out.path}:foreign", f"{reg.host}/library/foreign:1")

    t = tool(name="puller")
    r = t.run("pull", f"{reg.host}/library/foreign:1")
    assert r.result["images"][0]["layers"] == [layer["digest"]]
    assert t.has_blob(layer["digest"])
    storage.wait_access(lambda e: e.user_agent.startswith("kiln/") and layer["digest"] in e.path)
    assert not [e for e in reg.access_log() if e.method == "GET" and layer["digest"] in e.path]


# ---------------------------------------------------------------------------
# one manifest, and cancellation


def test_fetch_manifest_gets_only_that_document(registry, seed, tool):
    reg = registry()
    digest = seed(reg, "library/multi:latest", "index")
    t = tool()
    r = t.run("fetch-manifest", f"{reg.host}/library/multi:latest")
    data = r.result["data"].encode()
    assert r.result["digest"] == digest
    assert r.result["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert r.result["size"] == len(data)
    assert "sha256:" + R.sha256_hex(data) == digest
    # By digest as well; nothing is stored, no child is fetched.
    r = t.run("fetch-manifest", f"{reg.host}/library/multi@{digest}")
    assert r.result["data"].encode() == data
    assert not t.has_blob(digest)
    ours = [e for e in reg.access_log() if e.user_agent.startswith("kiln")]
    gets = [e for e in ours if e.method == "GET" and e.path != "/v2/"]
    assert [e.path for e in gets] == [f"/v2/library/multi/manifests/{digest}"] * 2, \
        [e.line for e in ours]


def test_cancel_wakes_a_backoff_sleep(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    layer = image.manifest["layers"][0]["digest"]
    proxy = faulty(reg)
    proxy.status(re.escape(layer), code=503)
    t = tool()
    started = time.monotonic()
    # 20 s between attempts: only the cancel flag can end this early.
    r = t.run("pull", f"{proxy.host}/library/alpine", "--cancel-after", "700", ok=False,
              env={"KILN_REGISTRY_RETRY_BASE_MS": "20000"})
    took = time.monotonic() - started
    assert took < 8, (took, r)
    assert r.error == f"pull '{proxy.host}/library/alpine:latest': cancelled", r
    assert r.events_of("retry"), r
    assert not t.has_blob(layer)
    assert t.ingest_files() == []


def test_cancel_aborts_a_held_transfer(registry, seed, faulty, tool):
    reg = registry()
    seed(reg, "library/alpine:latest", "small")
    image = seed.images.get("small")
    layer = image.manifest["layers"][0]["digest"]
    proxy = faulty(reg)
    gate = proxy.hold(re.escape(layer), after=1024, timeout=4 * TIMEOUT)
    t = tool()
    try:
        started = time.monotonic()
        r = t.run("pull", f"{proxy.host}/library/alpine", "--cancel-after", "1500", ok=False)
        took = time.monotonic() - started
    finally:
        gate.release()
    assert took < 10, (took, r)
    assert r.error == f"pull '{proxy.host}/library/alpine:latest': cancelled", r
    assert not t.has_blob(layer)
    assert t.ingest_files() == []
