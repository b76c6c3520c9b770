# SPDX-License-Identifier: Apache-2.0
"""kiln pull and kiln imagetools inspect|create against a real registry,
through a kilnd that kiln starts itself for the default builder.

Every test has its own KILN_CONFIG and HOME; kiln and the kilnd it starts get
HTTP(S)_PROXY pointing at a refused local port, so nothing leaves 127.0.0.1.
At teardown the builder is removed with `kiln rm` and any kilnd left below
the state directory is killed.
"""
import json
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from kilnhelpers import TIMEOUT, Kiln, check_sanitizers, kilnd_pids, terminate

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def k(kiln, tmp_path, dead):
    # builders/<name>/kilnd.sock must fit in a unix socket path
    short = pathlib.Path(tempfile.mkdtemp(prefix="kiln-img-", dir="/tmp"))
    state = short / "k"
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    cli = Kiln(kiln, state, tmp_path)
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        cli.env.pop(var, None)
    cli.env.update({var: dead.url for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                                "https_proxy")})
    cli.env.update(DOCKER_CONFIG=str(docker_config), KILN_REGISTRY_RETRY_BASE_MS="50")
    yield cli
    try:
        if (state / "builders").exists():
            cli.run("rm", "--force", "default")
        assert not kilnd_pids(state), "kiln rm left a kilnd running"
    finally:
        terminate(kilnd_pids(state))
        for log in state.glob("builders/*/kilnd.log"):
            check_sanitizers(log.read_text(errors="replace"), log)
        shutil.rmtree(short, ignore_errors=True)


def skopeo_raw(seed, reg, name):
    """The bytes `skopeo inspect --raw` prints, untouched."""
    argv = ["skopeo", "--policy", str(seed.policy), "inspect", *reg.skopeo_args(), "--raw",
            f"docker://{reg.host}/{name}"]
    return subprocess.run(argv, env=seed.env, capture_output=True, check=True,
                          timeout=TIMEOUT * 3).stdout


def blob(k, digest):
    return (k.dir("default") / "root" / "content" / "blobs" / "sha256" /
            digest.split(":", 1)[1])


def run_bytes(k, *args):
    p = subprocess.run(k.argv(*args), capture_output=True, env=k.env,
                       stdin=subprocess.DEVNULL, timeout=TIMEOUT * 3)
    check_sanitizers(p.stderr.decode(errors="replace"), f"kiln {' '.join(args)}")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def test_inspect_raw_is_what_the_registry_sent(k, registry, seed):
    reg = registry()
    seed(reg, "library/alpine:latest")
    ref = f"{reg.host}/library/alpine:latest"
    assert run_bytes(k, "imagetools", "inspect", "--raw", ref) == \
        skopeo_raw(seed, reg, "library/alpine:latest")


def test_inspect_of_an_index_lists_its_platforms(k, registry, seed):
    reg = registry()
    digest = seed(reg, "library/img:v1", kind="index")
    ref = f"{reg.host}/library/img:v1"
    out = k.ok("imagetools", "inspect", ref).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["Name:", ref], out
    assert lines[1].split() == ["MediaType:", MT_OCI_INDEX], out
    assert lines[2].split() == ["Digest:", digest], out
    assert "Manifests:" in out, out
    index = json.loads(skopeo_raw(seed, reg, "library/img:v1"))
    platforms = [line.split()[1] for line in lines if line.startswith("  Platform:")]
    want = []
    for m in index["manifests"]:
        p = m["platform"]
        want.append("/".join([p["os"], p["architecture"]] +
                             ([p["variant"]] if p.get("variant") else [])))
    assert platforms == want and len(want) >= 2, out
    names = [line.split()[1] for line in lines if line.startswith("  Name:")]
    assert names == [f"{reg.host}/library/img@{m['digest']}" for m in index["manifests"]], out


def test_pull_fills_the_store_then_is_cached(k, registry, seed):
    reg = registry()
    digest = seed(reg, "library/alpine:latest")
    ref = f"{reg.host}/library/alpine:latest"
    p = k.ok("pull", ref)
    assert p.stdout == digest + "\n", p.stdout
    assert f"resolving {ref}" in p.stderr, p.stderr
    assert " done" in p.stderr, p.stderr
    manifest = json.loads(skopeo_raw(seed, reg, "library/alpine:latest"))
    for d in [digest, manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]:
        assert blob(k, d).is_file(), d

    p = k.ok("pull", ref)
    assert p.stdout == digest + "\n", p.stdout
    assert "cached" in p.stderr, p.stderr
    assert " done" not in p.stderr.replace("cached", ""), p.stderr


def test_create_copies_an_image_to_another_repo(k, registry, seed):
    reg = registry()
    digest = seed(reg, "library/alpine:latest")
    src = f"{reg.host}/library/alpine:latest"
    dest = f"{reg.host}/copies/alpine:v2"
    p = k.ok("imagetools", "create", "-t", dest, src)
    assert p.stdout == digest + "\n", p.stderr
    assert skopeo_raw(seed, reg, "copies/alpine:v2") == \
        skopeo_raw(seed, reg, "library/alpine:latest")


def test_missing_tag_fails_naming_the_ref(k, registry, seed):
    reg = registry()
    seed(reg, "library/alpine:latest")
    ref = f"{reg.host}/library/alpine:nope"
    for args in (("imagetools", "inspect", ref), ("imagetools", "inspect", "--raw", ref),
                 ("pull", ref), ("imagetools", "create", "-t", f"{reg.host}/x/y:z", ref)):
        p = k.fails(*args)
        last = p.stderr.splitlines()[-1]  # progress lines may come first
        assert last.startswith("ERROR: ") and "library/alpine:nope" in last, p.stderr
        assert p.stdout == "", p.stdout
