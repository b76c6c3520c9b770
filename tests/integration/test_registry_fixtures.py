# SPDX-License-Identifier: Apache-2.0
"""The registry fixtures themselves work: each is checked with curl and
skopeo only, no kiln code, so a failure here is the fixture's, not kiln's."""
import base64
import hashlib
import json
import os
import pathlib
import re
import socket
import subprocess
import time

import pytest

import registries as R

ACCEPT = "Accept: " + R.MANIFEST_ACCEPT


def curl(*args, timeout=20):
    """curl -sS; returns (exit code, stdout bytes, stderr text)."""
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), *map(str, args)],
                       capture_output=True, timeout=timeout + 10)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def curl_status(*args):
    """(exit code, HTTP status, headers dict (lower-case), body)."""
    rc, out, err = curl("-D", "-", *args)
    head, _, body = out.partition(b"\r\n\r\n")
    # skip interim/100 responses
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return rc, status, headers, body


def catalog(reg, *extra):
    rc, out, err = curl(*reg.curl_args(), *extra, f"{reg.url}/v2/_catalog")
    assert rc == 0, err
    return json.loads(out)["repositories"]


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def jwt_claims(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def challenge_params(header):
    scheme, _, rest = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


# --------------------------------------------------------------------------
# registries


def test_http_registry(registry, seed):
    reg = registry()
    assert reg.scheme == "http" and reg.url == f"http://{reg.host}"
    assert reg.host.startswith("127.0.0.1:")
    assert reg.ca_path is None and reg.cert is None and reg.creds is None
    digest = seed(reg, "library/alpine", "small")
    assert catalog(reg) == ["library/alpine"]

    rc, status, headers, body = curl_status("-H", ACCEPT,
                                            f"{reg.url}/v2/library/alpine/manifests/latest")
    assert (rc, status) == (0, 200)
    assert headers["docker-content-digest"] == digest == sha(body)
    assert json.loads(body)["mediaType"] == R.MT_OCI_MANIFEST

    entries = reg.wait_access(lambda e: e.path == "/v2/_catalog" and e.status == 200)
    assert entries[0].method == "GET" and entries[0].user_agent.startswith("curl/")
    # skopeo's push is in the access log too, the manifest last
    puts = [e for e in reg.access_log() if e.method == "PUT"]
    assert puts[-1].path == "/v2/library/alpine/manifests/latest", puts
    assert "level=info" in reg.log()


def test_tls_registry(registry, seed, pki):
    reg = registry(tls=True)
    assert reg.url == f"https://{reg.host}" and reg.ca_path == pki.ca_crt
    seed(reg, "library/alpine")
    assert catalog(reg) == ["library/alpine"]
    rc, _, err = curl(f"{reg.url}/v2/")
    assert rc == 60, err  # the system roots do not know the test CA
    rc, _, err = curl("--cacert", pki.other_ca_crt, f"{reg.url}/v2/")
    assert rc == 60, err
    assert sorted(os.listdir(reg.certs_dir)) == ["ca.crt"]
    assert reg.certs_dir.name == reg.host


def test_mtls_registry(registry, seed, pki):
    reg = registry(mtls=True)
    assert reg.tls and reg.cert == pki.client_crt and reg.key == pki.client_key
    assert sorted(os.listdir(reg.certs_dir)) == ["ca.crt", "client.cert", "client.key"]
    seed(reg, "library/alpine")  # skopeo --dest-cert-dir with the client pair

    rc, out, err = curl("--cacert", reg.ca_path, f"{reg.url}/v2/_catalog")
    assert rc != 0 and b"repositories" not in out, (rc, out, err)
    rc, out, err = curl("--cacert", reg.ca_path, "--cert", pki.stranger_crt,
                        "--key", pki.stranger_key, f"{reg.url}/v2/_catalog")
    assert rc != 0 and b"repositories" not in out, (rc, out, err)
    assert catalog(reg) == ["library/alpine"]  # with --cert/--key


def test_htpasswd_registry(registry, seed):
    reg = registry(auth="htpasswd")
    assert reg.username and reg.password and reg.creds == f"{reg.username}:{reg.password}"
    seed(reg, "library/alpine")

    rc, status, headers, _ = curl_status(f"{reg.url}/v2/_catalog")
    assert (rc, status) == (0, 401)
    assert headers["www-authenticate"] == 'Basic realm="kiln-test-registry"'
    rc, status, _, _ = curl_status("-u", f"{reg.username}:wrong", f"{reg.url}/v2/_catalog")
    assert status == 401
    assert catalog(reg) == ["library/alpine"]  # curl_args() carries -u

    # a Docker config.json with the registry's credentials works for skopeo
    cfg = R.docker_config(seed.dir / "docker", reg)
    r = subprocess.run(["skopeo", "--policy", seed.policy, "inspect", "--tls-verify=false",
                        "--authfile", cfg / "config.json", "--raw",
                        f"docker://{reg.host}/library/alpine"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mediaType"] == R.MT_OCI_MANIFEST


def test_token_registry_get(registry, seed):
    reg = registry(auth="token", token={"expires_in": 120})
    ts = reg.token_server
    seed(reg, "library/alpine")  # skopeo fetches its tokens by GET
    assert ts.requests and ts.requests[0].method == "GET"
    assert ts.requests[0].username == reg.username
    assert any("repository:library/alpine:pull,push" in r.scopes or
               "repository:library/alpine:push,pull" in r.scopes for r in ts.requests)

    rc, status, headers, _ = curl_status(f"{reg.url}/v2/_catalog")
    assert (rc, status) == (0, 401)
    scheme, params = challenge_params(headers["www-authenticate"])
    assert scheme == "Bearer"
    assert params == {"realm": ts.realm, "service": ts.service, "scope": "registry:catalog:*"}

    url = f"{ts.realm}?service={params['service']}&scope=registry:catalog:*"
    rc, status, _, _ = curl_status(url)
    assert status == 401, "no anonymous tokens by default"
    rc, status, _, _ = curl_status("-u", f"{reg.username}:wrong", url)
    assert status == 401
    rc, status, _, body = curl_status("-u", reg.creds, url)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["expires_in"] == 120 and doc["token"] == doc["access_token"]
    assert ts.requests[-1].method == "GET" and ts.requests[-1].scopes == ["registry:catalog:*"]

    assert catalog(reg, "-H", f"Authorization: Bearer {doc['token']}") == ["library/alpine"]
    # a pull-only token does not open the catalog
    pull = ts.mint(["repository:library/alpine:pull"])
    rc, status, headers, _ = curl_status("-H", f"Authorization: Bearer {pull}",
                                         f"{reg.url}/v2/_catalog")
    assert status == 401 and 'error="insufficient_scope"' in headers["www-authenticate"]
    rc, status, _, _ = curl_status("-H", f"Authorization: Bearer {pull}", "-H", ACCEPT,
                                   f"{reg.url}/v2/library/alpine/manifests/latest")
    assert status == 200

    # anonymous callers, when allowed, get pull access only
    ts.anonymous = True
    rc, status, _, body = curl_status(
        f"{ts.realm}?service={ts.service}&scope=repository:library/alpine:pull,push")
    assert status == 200
    claims = jwt_claims(json.loads(body)["token"])
    assert claims["sub"] == "" and claims["aud"] == ts.service and claims["iss"] == ts.issuer
    assert claims["access"] == [{"type": "repository", "name": "library/alpine",
                                 "actions": ["pull"]}]
    assert claims["exp"] - claims["iat"] == 120


def test_token_registry_post_after_get(registry, seed):
    reg = registry(auth="token")
    ts = reg.token_server
    seed(reg, "library/alpine")
    ts.get_status = 404  # as a registry without GET support: clients must POST
    del ts.requests[:]

    scope = "repository:library/alpine:pull"
    rc, status, _, _ = curl_status("-u", reg.creds,
                                   f"{ts.realm}?service={ts.service}&scope={scope}")
    assert status == 404
    fields = {"grant_type": "password", "username": reg.username, "password": reg.password,
              "service": ts.service, "scope": scope, "client_id": "kiln-test",
              "access_type": "offline"}

    def post(**change):
        args = []
        for k, v in {**fields, **change}.items():
            if v is not None:
                args += ["--data-urlencode", f"{k}={v}"]
        return curl_status(*args, ts.realm)

    rc, status, _, body = post()
    assert status == 200, body
    doc = json.loads(body)
    assert doc["scope"] == scope and doc["expires_in"] == 300 and doc["refresh_token"]
    assert ts.methods() == ["GET", "POST"]
    assert ts.requests[1].grant_type == "password" and ts.requests[1].username == reg.username
    assert ts.requests[1].form["client_id"] == ["kiln-test"]

    rc, status, _, _ = curl_status("-H", f"Authorization: Bearer {doc['access_token']}",
                                   "-H", ACCEPT, f"{reg.url}/v2/library/alpine/manifests/latest")
    assert status == 200

    rc, status, _, body = post(grant_type="refresh_token", refresh_token=doc["refresh_token"],
                               username=None, password=None, access_type=None)
    assert status == 200 and json.loads(body)["access_token"]
    assert post(password="wrong")[1] == 401
    assert post(client_id=None)[1] == 400
    assert post(service="elsewhere")[1] == 400
    assert ts.methods() == ["GET"] + ["POST"] * 5


def test_seed_kinds(registry, seed):
    reg = registry()
    digests = {kind: seed(reg, f"kinds/{kind}:t1", kind)
               for kind in ("small", "v2s2", "index", "layers12")}
    docs = {}
    for kind, digest in digests.items():
        rc, status, headers, body = curl_status(
            "-H", ACCEPT, f"{reg.url}/v2/kinds/{kind}/manifests/t1")
        assert status == 200
        assert headers["docker-content-digest"] == digest == sha(body), kind
        docs[kind] = json.loads(body)

    assert docs["small"]["mediaType"] == R.MT_OCI_MANIFEST
    assert len(docs["small"]["layers"]) == 1
    assert docs["small"]["layers"] == seed.images.get("small").layers

    assert docs["v2s2"]["mediaType"] == R.MT_DOCKER_MANIFEST
    assert docs["v2s2"]["layers"][0]["mediaType"] == \
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert docs["v2s2"]["layers"][0]["digest"] == docs["small"]["layers"][0]["digest"]

    index = docs["index"]
    assert index["mediaType"] == R.MT_OCI_INDEX
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    for m in index["manifests"]:  # --all pushed every platform
        rc, status, headers, _ = curl_status("-I", "-H", ACCEPT,
                                             f"{reg.url}/v2/kinds/index/manifests/{m['digest']}")
        assert status == 200

    layers = docs["layers12"]["layers"]
    assert len(layers) == 12 and len({l["digest"] for l in layers}) == 12
    blob = layers[5]
    rc, out, err = curl(f"{reg.url}/v2/kinds/layers12/blobs/{blob['digest']}")
    assert rc == 0 and sha(out) == blob["digest"] and len(out) == blob["size"]

    assert seed.inspect(reg, "kinds/index:t1")["mediaType"] == R.MT_OCI_INDEX


# --------------------------------------------------------------------------
# nginx path-prefix mirror


def test_nginx_prefix_mirror(registry, seed, nginx_mirror):
    reg = registry()
    digest = seed(reg, "library/alpine")
    m = nginx_mirror(reg, prefix="hub")
    assert m.mirror == f"{m.host}/hub" and m.host.startswith("127.0.0.1:")

    url = f"{m.url}/v2/hub/library/alpine/manifests/latest?ns=docker.io"
    rc, status, headers, body = curl_status("-H", ACCEPT, url)
    assert (rc, status) == (0, 200), body
    assert headers["docker-content-digest"] == digest
    layer = json.loads(body)["layers"][0]
    rc, out, err = curl(f"{m.url}/v2/hub/library/alpine/blobs/{layer['digest']}?ns=docker.io")
    assert rc == 0 and sha(out) == layer["digest"]

    got = m.wait_access(lambda e: "/manifests/" in e.uri)
    assert got[0].uri == "/v2/hub/library/alpine/manifests/latest?ns=docker.io"
    assert got[0].params == {"ns": ["docker.io"]} and got[0].status == 200
    assert got[0].rewritten == "/v2/library/alpine/manifests/latest"
    # the query string reaches the registry unchanged
    up = reg.wait_access(lambda e: e.path == "/v2/library/alpine/manifests/latest"
                         and e.method == "GET" and e.query)
    assert up[0].query == "ns=docker.io"

    rc, status, _, _ = curl_status(f"{m.url}/v2/library/alpine/manifests/latest")
    assert status == 404, "only the prefix is served"
    # skopeo sees the mirror as a registry whose repositories start with the prefix
    assert seed.inspect(m_as_registry(m), "hub/library/alpine:latest")["layers"][0] == layer


def m_as_registry(m):
    class Plain:
        host = m.host

        @staticmethod
        def skopeo_args(role=""):
            return ["--tls-verify=false", "--no-creds"]
    return Plain


# --------------------------------------------------------------------------
# faulty proxy


@pytest.fixture
def small_registry(registry, seed):
    reg = registry()
    seed(reg, "library/alpine")
    layer = seed.images.get("small").layers[0]
    return reg, layer


def test_faulty_corrupt(small_registry, faulty):
    reg, layer = small_registry
    p = faulty(reg)
    f = p.corrupt(layer["digest"][7:])
    blob = f"/v2/library/alpine/blobs/{layer['digest']}"
    rc, good, err = curl(f"{reg.url}{blob}")
    assert rc == 0 and sha(good) == layer["digest"]
    rc, bad, err = curl(f"{p.url}{blob}")
    assert rc == 0, err
    assert len(bad) == len(good) == layer["size"]
    assert sha(bad) != layer["digest"]
    assert sum(a != b for a, b in zip(good, bad)) == 16
    rc, status, headers, _ = curl_status("-I", f"{p.url}{blob}")
    assert status == 200 and headers["content-length"] == str(layer["size"])
    assert f.hits == 1, "HEAD is not corrupted"
    assert [(r.method, r.fault) for r in p.find("/blobs/")] == [("GET", "corrupt"), ("HEAD", None)]


def test_faulty_drop_then_recover(small_registry, faulty):
    reg, layer = small_registry
    p = faulty(reg)
    f = p.drop("/blobs/", after=1000, times=1)
    url = f"{p.url}/v2/library/alpine/blobs/{layer['digest']}"
    rc, out, err = curl(url)
    assert rc == 18, (rc, err)  # "transfer closed with N bytes remaining"
    assert len(out) == 1000
    rc, out, err = curl(url)
    assert rc == 0 and sha(out) == layer["digest"]
    assert f.hits == 1
    assert [r.fault for r in p.find("/blobs/")] == ["drop", None]
    assert [r.sent for r in p.find("/blobs/")] == [1000, layer["size"]]


def test_faulty_status_close_oversize_slow(small_registry, faulty):
    reg, seed_layer = small_registry
    p = faulty(reg)
    manifest = f"{p.url}/v2/library/alpine/manifests/latest"
    f500 = p.status("/manifests/", 500, times=1)
    rc, status, _, body = curl_status("-H", ACCEPT, manifest)
    assert status == 500 and json.loads(body)["errors"][0]["code"] == "UNKNOWN"
    rc, status, _, _ = curl_status("-H", ACCEPT, manifest)
    assert status == 200 and f500.hits == 1
    p.status("/manifests/missing$", 404)
    assert curl_status(f"{p.url}/v2/library/alpine/manifests/missing")[1] == 404

    p.close("/_catalog")
    rc, out, err = curl(f"{p.url}/v2/_catalog")
    assert rc in (52, 56) and out == b"", (rc, err)  # empty reply / reset

    big = p.oversize("/manifests/huge$")
    rc, status, headers, body = curl_status("-H", ACCEPT,
                                            f"{p.url}/v2/library/alpine/manifests/huge")
    assert status == 200 and len(body) == 5 * R.MiB == int(headers["content-length"])
    assert json.loads(body)["schemaVersion"] == 2
    assert headers["docker-content-digest"] == sha(body) and big.hits == 1
    p.oversize("/manifests/chunked$", size=R.MiB, chunked=True)
    rc, status, headers, body = curl_status(f"{p.url}/v2/library/alpine/manifests/chunked")
    assert status == 200 and "content-length" not in headers and len(body) == R.MiB

    p.slow("^/v2/$", delay=0.3)
    t = time.monotonic()
    assert curl_status(f"{p.url}/v2/")[1] == 200
    assert time.monotonic() - t >= 0.3
    layer = seed_layer
    rate = layer["size"] * 4  # a quarter of a second
    p.slow("/blobs/", rate=rate)
    t = time.monotonic()
    rc, out, err = curl(f"{p.url}/v2/library/alpine/blobs/{layer['digest']}")
    assert rc == 0 and sha(out) == layer["digest"]
    assert time.monotonic() - t >= 0.2

    recorded = [(r.method, r.path, r.status, r.fault) for r in p.requests]
    assert recorded[0] == ("GET", "/v2/library/alpine/manifests/latest", 500, "status")
    assert recorded[1][2:] == (200, None)
    assert ("GET", "/v2/", 200, "slow") in recorded
    assert recorded[-1][1:] == (f"/v2/library/alpine/blobs/{layer['digest']}", 200, "slow")
    assert p.requests[0].header("accept") == R.MANIFEST_ACCEPT


def test_faulty_counts_connections_and_holds_blobs(registry, seed, faulty):
    reg = registry()
    seed(reg, "library/many", "layers12")
    layers = seed.images.get("layers12").layers
    p = faulty(reg)
    gate = p.hold("/blobs/")
    procs = []
    try:
        for l in layers[1:5]:  # four layer downloads, each curl its own connection
            procs.append(subprocess.Popen(
                ["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}",
                 f"{p.url}/v2/library/many/blobs/{l['digest']}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        assert gate.wait_held(4) == 4
        assert p.active == 4 and p.max_active == 4

        # metadata on a fifth connection completes while the four are held
        rc, status, _, _ = curl_status("-H", ACCEPT,
                                       f"{p.url}/v2/library/many/manifests/latest")
        assert status == 200
        assert gate.held == 4 and all(proc.poll() is None for proc in procs)
        assert p.max_active == 5
    finally:
        gate.release()
        outs = [proc.communicate(timeout=30) for proc in procs]
    assert [o[0] for o in outs] == [b"200"] * 4, outs
    p.wait_idle()
    assert p.active == 0 and p.total == 5 and p.max_active == 5
    assert all(c.requests == 1 and c.closed for c in p.connections)

    # one curl, two URLs: one kept-alive connection, two requests
    p.reset_counters()
    p.clear_faults()
    a, b = (f"{p.url}/v2/library/many/blobs/{l['digest']}" for l in layers[6:8])
    rc, out, err = curl("-o", "/dev/null", "-o", "/dev/null", a, b)
    assert rc == 0, err
    p.wait_idle()
    assert p.total == 1 and p.max_active == 1 and p.connections[0].requests == 2


def test_faulty_tls_in_front_of_mtls_with_tls_token_server(registry, seed, faulty, pki):
    reg = registry(mtls=True, auth="token", token={"tls": True})
    assert reg.token_server.realm.startswith("https://127.0.0.1:")
    seed(reg, "library/alpine")  # skopeo trusts the test CA for the realm too
    p = faulty(reg, tls=True)
    assert p.url == f"https://{p.host}"
    rc, status, headers, _ = curl_status("--cacert", pki.ca_crt, f"{p.url}/v2/_catalog")
    assert status == 401, "the proxy brings its own client certificate upstream"
    _, params = challenge_params(headers["www-authenticate"])
    rc, status, _, body = curl_status(
        "--cacert", pki.ca_crt, "-u", reg.creds,
        f"{params['realm']}?service={params['service']}&scope={params['scope']}")
    assert status == 200, body
    token = json.loads(body)["token"]
    rc, out, err = curl("--cacert", pki.ca_crt, "-H", f"Authorization: Bearer {token}",
                        f"{p.url}/v2/_catalog")
    assert rc == 0 and json.loads(out) == {"repositories": ["library/alpine"]}, err
    assert p.find("/_catalog")[-1].header("authorization") == f"Bearer {token}"


# --------------------------------------------------------------------------
# dead addresses


def test_dead_and_blackhole(dead, blackhole):
    t = time.monotonic()
    rc, _, err = curl(f"{dead.url}/v2/")
    assert rc == 7, err  # connection refused
    assert time.monotonic() - t < 5
    rc, _, err = curl("--max-time", "0.5", f"{blackhole.url}/v2/", timeout=1)
    assert rc == 28, err  # timed out: the handshake completed, nobody answers


# --------------------------------------------------------------------------
# teardown leaves nothing behind


def _refused(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def test_stack_cleans_up_after_an_error(pki):
    """The classes under the fixtures: an exception inside a Stack still
    stops every process and thread and removes every directory."""
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with R.Stack() as st:
            d = R.make_tempdir("kiln-reg-stack-")
            st.push(R.remove_tree, d)
            reg = R.Registry(pki, d / "reg", auth="token")
            st.push(reg.stop)
            m = R.NginxMirror(reg, d / "nginx")
            st.push(m.stop)
            p = R.FaultyProxy(reg)
            st.push(p.stop)
            gate = p.hold("/v2/")
            held = subprocess.Popen(["curl", "-sS", "--max-time", "30", f"{p.url}/v2/"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            st.push(held.wait, 30)
            st.push(p.stop)  # first: it releases the held request
            gate.wait_held(1)
            seen = {"dir": d, "pids": [reg.pid, m.pid],
                    "ports": [reg.port, m.port, p.port, reg.token_server.port]}
            raise RuntimeError("boom")
    assert seen
    assert not any(R.pid_alive(pid) for pid in seen["pids"])
    assert not seen["dir"].exists()
    assert all(_refused(port) for port in seen["ports"])


LEFT = {}


def test_fixture_teardown_part1(registry, seed, nginx_mirror, faulty):
    reg = registry(auth="token", mtls=True)
    seed(reg, "library/alpine")
    m = nginx_mirror(reg)
    rc, status, _, _ = curl_status(f"{m.url}/v2/")
    assert status == 401  # through nginx, over mTLS with the client pair, to the token registry
    p = faulty(reg)
    assert curl_status(f"{p.url}/v2/")[1] == 401
    LEFT.update(dirs=[reg.dir.parent, seed.dir], pids=[reg.pid, m.pid],
                ports=[reg.port, m.port, p.port, reg.token_server.port])


def test_fixture_teardown_part2():
    if not LEFT:
        pytest.skip("runs after test_fixture_teardown_part1")
    assert not any(R.pid_alive(pid) for pid in LEFT["pids"])
    assert not any(pathlib.Path(d).exists() for d in LEFT["dirs"])
    assert all(_refused(port) for port in LEFT["ports"])


# --------------------------------------------------------------------------
# the benchmark image generator (a small variant: the real one is ~100 MB)


def test_big_image_generator(tmp_path):
    cache = tmp_path / "cache"
    path = R.big_image_layout(cache, total_mib=3, layers=6)
    img = R.image_from_layout(path, "big", "big")
    assert len(img.layers) == 6 and len({l["digest"] for l in img.layers}) == 6
    for l in img.layers:  # incompressible: gzip gains nothing
        assert l["size"] >= 3 * R.MiB // 6
    mtime = (path / "index.json").stat().st_mtime_ns
    assert R.big_image_layout(cache, total_mib=3, layers=6) == path
    assert (path / "index.json").stat().st_mtime_ns == mtime, "reused, not rebuilt"
    assert [p.name for p in cache.iterdir()] == [path.name], "no work directory left"
