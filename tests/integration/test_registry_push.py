# SPDX-License-Identifier: Apache-2.0
"""kiln's registry client pushing to real registries; skopeo, an independent
peer, checks what arrived (inspect --raw, and copy, which verifies every
blob). Helpers come from test_registry_pull.py."""
import json
import re

import registries as R
from test_registry_pull import registry_section, sentinel, tool  # noqa: F401 (fixtures)

TIMEOUT = R.TIMEOUT


def layout_spec(image):
    return f"{image.layout}:{image.ref}"


def skopeo_verify(seed, reg, name, tmp_path, image=None):
    """skopeo inspect --raw, and a full skopeo copy to an OCI layout (which
    checks every digest). Returns the raw manifest."""
    raw = seed.inspect(reg, name)
    dest = tmp_path / ("skopeo-" + re.sub(r"[^a-z0-9]", "-", name))
    argv = ["skopeo", "--policy", str(seed.policy), "copy", "-q", *reg.skopeo_args("src")]
    if raw.get("mediaType") == R.MT_OCI_INDEX:
        argv.append("--all")
    argv += [f"docker://{reg.host}/{name}", f"oci:{dest}:x"]
    R.run(argv, env=seed.env, timeout=max(120, 4 * TIMEOUT))
    if image is not None:
        want = json.loads((image.layout / "blobs" / "sha256" / image.digest[7:]).read_text())
        assert raw == want
    return raw


def kiln_requests(reg, method=None):
    return [e for e in reg.access_log()
            if e.user_agent.startswith("kiln/") and (method is None or e.method == method)]


def test_push_to_plain_registry(registry, seed, tool, tmp_path):
    reg = registry()
    image = seed.images.get("small")
    t = tool()
    r = t.run("push", layout_spec(image), f"{reg.host}/library/pushed:1")
    assert r.result["digest"] == image.digest
    assert r.result["blobsUploaded"] == 2 and r.result["blobsExisting"] == 0
    skopeo_verify(seed, reg, "library/pushed:1", tmp_path, image)
    # One POST + one PUT per blob, the manifest PUT last.
    reg.wait_access(lambda e: e.method == "PUT" and "/manifests/" in e.path)
    puts = kiln_requests(reg, "PUT")
    assert [e.path for e in puts][-1] == "/v2/library/pushed/manifests/1"
    assert len([e for e in puts if "/blobs/uploads/" in e.path]) == 2
    assert all("digest=sha256" in e.query for e in puts if "/blobs/uploads/" in e.path)
    dos = r.logs("do request")
    assert dos and all(d["traceID"] == dos[0]["traceID"] for d in dos)


def test_existing_blobs_are_not_uploaded_again(registry, seed, tool, tmp_path):
    reg = registry()
    image = seed.images.get("small")
    t = tool()
    t.run("push", layout_spec(image), f"{reg.host}/library/again:1")
    reg.wait_access(lambda e: e.method == "PUT" and e.path.endswith("/manifests/1"))
    n = len(kiln_requests(reg))
    r = t.run("push", layout_spec(image), f"{reg.host}/library/again:2")
    assert r.result["blobsUploaded"] == 0 and r.result["blobsExisting"] == 2
    assert {e["digest"] for e in r.events_of("blob-exists")} >= {
        image.manifest["config"]["digest"], image.manifest["layers"][0]["digest"]}
    reg.wait_access(lambda e: e.method == "PUT" and e.path.endswith("/manifests/2"))
    new = kiln_requests(reg)[n:]
    assert not [e for e in new if e.method in ("POST", "PATCH") or "/blobs/uploads/" in e.path]
    assert seed.inspect(reg, "library/again:2") == seed.inspect(reg, "library/again:1")


def test_mount_from_another_repository(registry, seed, tool, tmp_path):
    reg = registry()
    image = seed.images.get("small")
    t = tool()
    t.run("push", layout_spec(image), f"{reg.host}/team/source:1")
    r = t.run("push", layout_spec(image), f"{reg.host}/team/dest:1",
              "--mount-from", "team/source")
    assert r.result["blobsMounted"] == 2 and r.result["blobsUploaded"] == 0
    reg.wait_access(lambda e: e.method == "PUT" and e.path == "/v2/team/dest/manifests/1")
    posts = [e for e in kiln_requests(reg, "POST") if e.path.startswith("/v2/team/dest/")]
    assert posts and all(e.params.get("from") == ["team/source"] and "mount" in e.params
                         for e in posts)
    assert not [e for e in kiln_requests(reg, "PUT") if e.path.startswith("/v2/team/dest/blobs")]
    skopeo_verify(seed, reg, "team/dest:1", tmp_path, image)


def test_chunked_upload(registry, seed, tool, tmp_path):
    reg = registry()
    image = seed.images.get("small")  # a ~1 MB layer
    t = tool()
    r = t.run("push", layout_spec(image), f"{reg.host}/library/chunked:1",
              "--chunk-size", 256 * 1024)
    assert r.result["blobsUploaded"] == 2
    skopeo_verify(seed, reg, "library/chunked:1", tmp_path, image)
    reg.wait_access(lambda e: e.method == "PUT" and e.path.endswith("/manifests/1"))
    patches = kiln_requests(reg, "PATCH")
    layer_size = image.manifest["layers"][0]["size"]
    assert len(patches) == -(-layer_size // (256 * 1024)), (len(patches), layer_size)


def test_push_to_mtls_registry(registry, seed, tool, pki, tmp_path):
    reg = registry(mtls=True)
    image = seed.images.get("small")
    t = tool(config=registry_section(reg.host, http=False, ca=pki.ca_crt, cert=pki.client_crt,
                                     key=pki.client_key))
    r = t.run("push", layout_spec(image), f"{reg.host}/library/secure:1")
    assert r.result["digest"] == image.digest
    skopeo_verify(seed, reg, "library/secure:1", tmp_path, image)


def test_push_with_token_auth(registry, seed, tool, tmp_path):
    reg = registry(auth="token")
    image = seed.images.get("small")
    t = tool()
    R.docker_config(t.docker_config, reg)
    before = len(reg.token_server.requests)
    r = t.run("push", layout_spec(image), f"{reg.host}/library/tok:1")
    assert r.result["blobsUploaded"] == 2
    reqs = reg.token_server.requests[before:]
    assert reqs and all(x.scopes == ["repository:library/tok:pull,push"] for x in reqs)
    assert len(reqs) == 1, [x.scopes for x in reqs]  # cached for every later request
    assert reg.password not in r.stdout + r.stderr and "eyJ" not in r.stdout + r.stderr
    skopeo_verify(seed, reg, "library/tok:1", tmp_path, image)


def test_push_goes_to_the_origin_never_a_mirror(registry, seed, tool, tmp_path):
    origin = registry(name="origin")
    mirror = registry(name="mirror")
    image = seed.images.get("small")
    t = tool(config=registry_section(origin.host, mirrors=[mirror.host]))
    t.run("push", layout_spec(image), f"{origin.host}/library/o:1")
    skopeo_verify(seed, origin, "library/o:1", tmp_path, image)
    assert kiln_requests(mirror) == []


def test_copy_index_all_platforms_with_mounts(registry, seed, tool, tmp_path):
    reg = registry()
    other = registry(name="other")
    seed(reg, "library/multi:1", "index")
    index = seed.images.get("index")
    t = tool()

    def blob_gets():
        return [e for e in kiln_requests(reg, "GET") if "/blobs/" in e.path]

    # On one registry: every blob is mounted, none is downloaded.
    r = t.run("copy", f"{reg.host}/library/multi:1", f"{reg.host}/library/copy:1")
    assert r.result["digest"] == index.digest
    assert r.result["blobsUploaded"] == 0 and r.result["blobsMounted"] == 4
    raw = skopeo_verify(seed, reg, "library/copy:1", tmp_path)
    assert raw == seed.inspect(reg, "library/multi:1")
    assert {m["platform"]["architecture"] for m in raw["manifests"]} == {"amd64", "arm64"}
    reg.wait_access(lambda e: e.method == "PUT" and e.path == "/v2/library/copy/manifests/1")
    configs = {m["config"]["digest"] for m in
               (json.loads((index.layout / "blobs" / "sha256" / d["digest"][7:]).read_text())
                for d in raw["manifests"])}
    # Only the configs were read (the pull part reads metadata); no layer.
    assert {e.path.rsplit("/", 1)[1] for e in blob_gets()} <= configs

    # To another registry: each blob downloaded once, then uploaded.
    r = t.run("copy", f"{reg.host}/library/multi:1", f"{other.host}/library/copy:1")
    assert r.result["blobsUploaded"] == 4
    skopeo_verify(seed, other, "library/copy:1", tmp_path)
    assert seed.inspect(other, "library/copy:1") == raw
    R.wait_for(lambda: len(blob_gets()) >= 4, "the copy's blob downloads in the access log")
    assert len(blob_gets()) == 4 and len({e.path for e in blob_gets()}) == 4

    # Again, to a new repository there: uploaded from the store, nothing fetched.
    r = t.run("copy", f"{reg.host}/library/multi:1", f"{other.host}/library/copy2:1")
    assert r.result["blobsUploaded"] == 4
    assert len(blob_gets()) == 4


def test_push_failure_names_the_url(registry, seed, tool, faulty):
    reg = registry()
    image = seed.images.get("small")
    proxy = faulty(reg)
    proxy.status(r"/blobs/uploads/", code=500)
    t = tool()
    r = t.run("push", layout_spec(image), f"{proxy.host}/library/fail:1", ok=False)
    assert f"http://{proxy.host}/v2/library/fail/blobs/uploads/" in r.error
    assert "500 Internal Server Error" in r.error
    # buildkit's retry handler: 1 + 3 retries of the whole upload, containerd's
    # retry of a 500 on the last host inside each.
    assert r.events_of("retry")
