# SPDX-License-Identifier: Apache-2.0
"""kiln build's outputs, checked by independent peers: what --push sent is
read back by skopeo (inspect, and copy to an OCI layout, which verifies every
blob), also from the registry that demands a client certificate; an oci
archive passes skopeo's oci-archive transport and umoci unpack; a docker
archive and --load go into a Docker engine the test starts; local and tar
outputs hold the files with their modes; SOURCE_DATE_EPOCH makes the image
digest reproducible across a prune and a fresh daemon; --metadata-file
carries buildx's keys.

Every build runs in a builder whose docker.io is mirrored to a local
docker-registry holding alpine (the builder fixture of test_build.py).
Nothing leaves 127.0.0.1.
"""
import io
import json
import os
import pathlib
import pty
import re
import shutil
import stat
import subprocess
import tarfile
import time

import pytest

import registries as R
from kilnhelpers import check_sanitizers
from test_build import BUILD_TIMEOUT, builder, step, steps  # noqa: F401 (fixture)
from test_registry_pull import registry_section

# A file written by a RUN, a set-uid file, a COPY --chmod and a symlink.
DOCKERFILE = """\
FROM alpine
COPY --chmod=0640 data.txt /out/data.txt
RUN mkdir -p /out/bin && echo "written by RUN" > /out/run.txt && \\
    printf '#!/bin/sh\\necho tool\\n' > /out/bin/tool && chmod 4755 /out/bin/tool && \\
    ln -s bin/tool /out/link
"""
DATA = "from the context\n"
EPOCH = 1700000000  # 2023-11-14T22:13:20Z
EPOCH_TEXT = "2023-11-14T22:13:20Z"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def context(tmp_path, name="ctx"):
    d = tmp_path / name
    d.mkdir()
    (d / "data.txt").write_text(DATA)
    return d


def metadata(path):
    return json.loads(pathlib.Path(path).read_text())


def norm(name):
    """A tar member's name without a leading "./" or "/"."""
    while name.startswith("./") or name.startswith("/"):
        name = name[2:] if name.startswith("./") else name[1:]
    return name.rstrip("/")


def members(tar_bytes):
    """{name: (TarInfo, content or None)} of a tar, gzip-compressed or not."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*") as t:
        for m in t.getmembers():
            data = t.extractfile(m).read() if m.isfile() else None
            out[norm(m.name)] = (m, data)
    return out


def assert_image_tree(m):
    """The files of DOCKERFILE in a tar's members (a layer or a rootfs)."""
    assert m["out/run.txt"][1] == b"written by RUN\n"
    tool = m["out/bin/tool"][0]
    assert stat.S_IMODE(tool.mode) == 0o4755, oct(tool.mode)
    assert m["out/link"][0].issym() and m["out/link"][0].linkname == "bin/tool"


def assert_rootfs(root):
    """The files of DOCKERFILE in an unpacked root file system."""
    root = pathlib.Path(root)
    assert (root / "out/run.txt").read_text() == "written by RUN\n"
    assert (root / "out/data.txt").read_text() == DATA
    assert stat.S_IMODE((root / "out/data.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "out/bin/tool").stat().st_mode) == 0o4755
    assert os.readlink(root / "out/link") == "bin/tool"
    assert (root / "bin/busybox").is_file()  # the base image is there too


def skopeo(seed, *args, **kw):
    return R.run(["skopeo", "--policy", str(seed.policy), *map(str, args)], env=seed.env,
                 timeout=max(120, 4 * R.TIMEOUT), **kw)


def umoci_unpack(layout, tag, bundle):
    R.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
          timeout=max(120, 4 * R.TIMEOUT))
    return bundle / "rootfs"


def layout_blob(layout, digest):
    return (pathlib.Path(layout) / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def base_layer(seed):
    return seed.images.get("small").manifest["layers"][0]["digest"]


def require_tools(*tools):
    for t in tools:
        if not shutil.which(t):
            pytest.fail(f"{t} is not installed: run scripts/install-deps")


# ---------------------------------------------------------------------------
# --push


def check_pushed(seed, reg, ref, tmp_path, md):
    """skopeo inspect and copy of a pushed image; the layers as the user
    relies on them."""
    info = json.loads(skopeo(seed, "inspect", *reg.skopeo_args(), f"docker://{ref}").stdout)
    assert info["Digest"] == md["containerimage.digest"]
    assert len(info["Layers"]) == 3, info["Layers"]
    assert info["Layers"][0] == base_layer(seed)  # the base layer reused as it is
    raw = json.loads(skopeo(seed, "inspect", "--raw", *reg.skopeo_args(),
                            f"docker://{ref}").stdout)
    assert raw["mediaType"] == OCI_MANIFEST
    assert raw["config"]["digest"] == md["containerimage.config.digest"]
    layout = tmp_path / "copied"
    skopeo(seed, "copy", "-q", *reg.skopeo_args("src"), f"docker://{ref}", f"oci:{layout}:x")
    top = members(layout_blob(layout, raw["layers"][-1]["digest"]))
    assert_image_tree(top)
    assert "bin/busybox" not in top  # the RUN's layer holds the RUN's changes only
    assert_rootfs(umoci_unpack(layout, "x", tmp_path / "bundle"))


def test_push_to_a_registry_read_back_by_skopeo(builder, seed, tmp_path):
    b = builder()
    ref = f"{b.reg.host}/proof/img:latest"
    md_path = tmp_path / "md.json"
    p = b.build(context(tmp_path), DOCKERFILE, "--push", "-t", ref, "--metadata-file", md_path)
    md = metadata(md_path)
    check_pushed(seed, b.reg, ref, tmp_path, md)
    assert md["image.name"] == ref
    lines = steps(p.stderr)
    export = step(lines, "exporting to image")
    assert f"exporting manifest {md['containerimage.digest']}" in " ".join(export)
    assert any(x.startswith(f"pushing manifest for {ref}@{md['containerimage.digest']}")
               for x in export), export
    # a push never goes to a mirror
    assert not [e for e in b.reg.access_log()
                if e.method in ("PUT", "POST", "PATCH") and "ns=" in e.query]


def test_push_to_the_mutual_tls_registry(builder, registry, seed, pki, tmp_path):
    tls = registry(mtls=True)
    # http = false: like BuildKit, kiln speaks plain HTTP to 127.0.0.1 unless told
    b = builder(registry_section(tls.host, http=False, ca=pki.ca_crt, cert=pki.client_crt,
                                 key=pki.client_key))
    ref = f"{tls.host}/proof/secure:1"
    md_path = tmp_path / "md.json"
    b.build(context(tmp_path), DOCKERFILE, "--push", "-t", ref, "--metadata-file", md_path)
    check_pushed(seed, tls, ref, tmp_path, metadata(md_path))
    assert [e for e in tls.access_log() if e.method == "PUT" and
            e.path == "/v2/proof/secure/manifests/1" and e.status == 201]


def test_push_without_the_client_certificate_fails(builder, registry, pki, tmp_path):
    tls = registry(mtls=True)
    b = builder(registry_section(tls.host, http=False, ca=pki.ca_crt))
    ref = f"{tls.host}/proof/secure:1"
    p = b.build(context(tmp_path), DOCKERFILE, "--push", "-t", ref, check=False)
    assert p.returncode == 1
    assert "ERROR: " in p.stderr and tls.host in p.stderr, p.stderr
    assert re.search(r"certificate|alert|handshake|tls", p.stderr, re.I), p.stderr
    assert not [e for e in tls.access_log() if e.method == "PUT"]


# ---------------------------------------------------------------------------
# oci and docker archives


def test_oci_archive_passes_skopeo_and_umoci(builder, seed, tmp_path):
    require_tools("umoci")
    b = builder()
    out = tmp_path / "out.tar"
    md_path = tmp_path / "md.json"
    p = b.build(context(tmp_path), DOCKERFILE, "-t", "proof/img:1", "-o",
                f"type=oci,dest={out}", "--metadata-file", md_path)
    md = metadata(md_path)
    info = json.loads(skopeo(seed, "inspect", f"oci-archive:{out}").stdout)
    assert info["Digest"] == md["containerimage.digest"]
    assert len(info["Layers"]) == 3 and info["Layers"][0] == base_layer(seed)
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"

    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(out) as t:
        names = t.getnames()
        t.extractall(layout)
    assert "oci-layout" in names and "index.json" in names
    index = json.loads((layout / "index.json").read_text())
    [desc] = index["manifests"]
    assert desc["digest"] == md["containerimage.digest"]
    created = desc["annotations"].pop("org.opencontainers.image.created")  # as BuildKit
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created), created
    assert desc["annotations"] == {"io.containerd.image.name": "docker.io/proof/img:1",
                                   "org.opencontainers.image.ref.name": "1"}
    assert_rootfs(umoci_unpack(layout, "1", tmp_path / "bundle"))

    export = step(steps(p.stderr), "exporting to oci image format")
    assert any(x.startswith("sending tarball") for x in export), export
    # skopeo's own check of every blob: a copy out of the archive
    skopeo(seed, "copy", "-q", f"oci-archive:{out}", f"oci:{tmp_path / 'copy'}:x")


def test_oci_directory_with_tar_false(builder, tmp_path):
    require_tools("umoci")
    b = builder()
    out = tmp_path / "layout"
    b.build(context(tmp_path), DOCKERFILE, "-t", "proof/img:dir", "-o",
            f"type=oci,dest={out},tar=false")
    assert json.loads((out / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    assert_rootfs(umoci_unpack(out, "dir", tmp_path / "bundle"))


def test_docker_archive_is_accepted_by_docker_load(builder, dockerd, tmp_path):
    b = builder()
    out = tmp_path / "img.tar"
    md_path = tmp_path / "md.json"
    b.build(context(tmp_path), DOCKERFILE, "-t", "proof/dock:1", "-o",
            f"type=docker,dest={out}", "--metadata-file", md_path)
    with tarfile.open(out) as t:
        manifest = json.load(t.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["proof/dock:1"] or \
        manifest[0]["RepoTags"] == ["docker.io/proof/dock:1"], manifest
    p = dockerd.docker("load", "-i", out)
    assert "Loaded image: proof/dock:1" in p.stdout, p.stdout
    check_in_engine(dockerd, "proof/dock:1", metadata(md_path))


def check_in_engine(dockerd, ref, md):
    [info] = json.loads(dockerd.docker("image", "inspect", ref).stdout)
    assert info["Id"] == md["containerimage.config.digest"]  # docker's image ID
    assert len(info["RootFS"]["Layers"]) == 3
    # the engine runs it: the RUN's file and the COPY's mode are there
    p = dockerd.docker("run", "--rm", "--network", "none", ref, "sh", "-c",
                       "cat /out/run.txt /out/data.txt; stat -c %a /out/data.txt /out/bin/tool")
    assert p.stdout.split("\n") == ["written by RUN", DATA.strip(), "640", "4755", ""], p.stdout


def test_load_into_the_engine_of_docker_host(builder, dockerd, tmp_path):
    b = builder()
    md_path = tmp_path / "md.json"
    b.build(context(tmp_path), DOCKERFILE, "--load", "-t", "proof/loaded:1",
            "--metadata-file", md_path, env={"DOCKER_HOST": dockerd.host})
    check_in_engine(dockerd, "proof/loaded:1", metadata(md_path))


def test_load_without_an_engine_says_what_to_do(builder, tmp_path):
    b = builder()
    sock = tmp_path / "no-docker.sock"
    p = b.build(context(tmp_path), DOCKERFILE, "--load", "-t", "proof/nowhere:1",
                check=False, env={"DOCKER_HOST": f"unix://{sock}"})
    assert p.returncode == 1, p.stderr
    assert f"no Docker engine answers at unix://{sock}" in p.stderr, p.stderr
    assert "-o type=oci,dest=" in p.stderr and "type=docker,dest=" in p.stderr, p.stderr
    # checked before the build: nothing ran
    assert "RUN mkdir" not in p.stderr, p.stderr


# ---------------------------------------------------------------------------
# local and tar


def test_local_output_holds_the_files_with_their_modes(builder, tmp_path):
    b = builder()
    out = tmp_path / "dest"
    p = b.build(context(tmp_path), DOCKERFILE, "-o", f"type=local,dest={out}")
    assert_rootfs(out)
    export = step(steps(p.stderr), "exporting to client directory")
    assert any(x.startswith("copying files") for x in export), export


def test_local_output_with_a_relative_dest(builder, tmp_path):
    b = builder()
    ctx = context(tmp_path)
    p = subprocess.run(b.cli.argv("build", "--progress", "plain", "-f", "-", "-o", "rel", ctx),
                       input=DOCKERFILE, capture_output=True, text=True, env=b.cli.env,
                       cwd=tmp_path, timeout=BUILD_TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert_rootfs(tmp_path / "rel")  # "-o DIR" is type=local,dest=DIR


def test_tar_output(builder, tmp_path):
    b = builder()
    out = tmp_path / "fs.tar"
    p = b.build(context(tmp_path), DOCKERFILE, "-o", f"type=tar,dest={out}")
    m = members(out.read_bytes())
    assert_image_tree(m)
    assert m["out/data.txt"][1] == DATA.encode()
    assert stat.S_IMODE(m["out/data.txt"][0].mode) == 0o640
    assert "bin/busybox" in m
    step(steps(p.stderr), "exporting to client tarball")


def test_file_outputs_write_through_links_and_devices(builder, tmp_path):
    """As buildx's os.Create: a dest that is a symbolic link gets its target
    written (the link stays), a device is written into, not replaced; the
    metadata file too."""
    b = builder()
    real = tmp_path / "real.tar"
    real.write_text("old")
    link = tmp_path / "link.tar"
    link.symlink_to(real)
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    meta_real = tmp_path / "meta.json"
    meta_link = tmp_path / "meta-link.json"
    meta_link.symlink_to(meta_real)
    ctx = context(tmp_path)
    b.build(ctx, DOCKERFILE, "-o", f"type=tar,dest={link}", "--metadata-file", meta_link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert "out/data.txt" in members(real.read_bytes())
    assert meta_link.is_symlink() and "buildx.build.ref" in json.loads(meta_real.read_text())
    b.build(ctx, DOCKERFILE, "-o", f"type=tar,dest={null}")
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert not [p for p in tmp_path.iterdir() if ".kiln-" in p.name]


@pytest.mark.parametrize("kind", ["tar", "oci"])
def test_dest_dash_writes_to_stdout(builder, seed, tmp_path, kind):
    b = builder()
    argv = b.cli.argv("build", "--progress", "plain", "-f", "-", "-o", f"type={kind},dest=-",
                      context(tmp_path))
    p = subprocess.run(argv, input=DOCKERFILE.encode(), capture_output=True, env=b.cli.env,
                       timeout=BUILD_TIMEOUT)
    stderr = p.stderr.decode(errors="replace")
    check_sanitizers(stderr, "kiln build")
    assert p.returncode == 0, stderr
    m = members(p.stdout)  # stdout is the archive and nothing else
    if kind == "tar":
        assert_image_tree(m)
    else:
        assert "oci-layout" in m and "index.json" in m
        (tmp_path / "img.tar").write_bytes(p.stdout)
        info = json.loads(skopeo(seed, "inspect", f"oci-archive:{tmp_path / 'img.tar'}").stdout)
        assert len(info["Layers"]) == 3
    assert "#1 " in stderr  # the progress went to stderr


def test_dest_dash_refuses_a_terminal(builder, tmp_path):
    b = builder()
    ctx = context(tmp_path)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    master, slave = pty.openpty()
    try:
        p = subprocess.run(b.cli.argv("build", "--progress", "plain", "-o",
                                      "type=tar,dest=-", ctx),
                           stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
                           text=True, env=b.cli.env, timeout=BUILD_TIMEOUT)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 1
    assert "dest file is required for tar exporter. refusing to write to console" in \
        p.stderr, p.stderr
    assert "RUN mkdir" not in p.stderr  # refused before the build


# ---------------------------------------------------------------------------
# reproducibility and metadata

REPRO = """\
FROM alpine
RUN echo reproducible > /r.txt && mkdir -p /d/e && touch /d/e/x
"""


def oci_build(b, ctx, out, *args, env=None):
    md_path = out.with_suffix(".json")
    b.build(ctx, REPRO, "-o", f"type=oci,dest={out}", "--metadata-file", md_path, *args,
            env=env)
    return metadata(md_path)["containerimage.digest"]


def test_source_date_epoch_gives_the_same_digest(builder, seed, tmp_path):
    b = builder()
    ctx = context(tmp_path)
    arg = ("--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}")
    first = oci_build(b, ctx, tmp_path / "1.tar", *arg)

    # the cache is gone: the RUN runs again, at another time
    b.cli.ok("prune", "--all", "--force")
    p = b.build(ctx, REPRO, *arg, "-o", f"type=oci,dest={tmp_path / '2.tar'}",
                "--metadata-file", tmp_path / "2.json")
    assert not any("CACHED" in v for k, v in steps(p.stderr).items() if "RUN echo" in k)
    assert metadata(tmp_path / "2.json")["containerimage.digest"] == first
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()

    # a fresh daemon root, the epoch from the environment as buildx takes it
    b.cli.ok("rm", "--force", "b")
    b2 = builder()
    assert oci_build(b2, ctx, tmp_path / "3.tar", env={"SOURCE_DATE_EPOCH": str(EPOCH)}) == first

    # the config and the history say when, and every layer mtime is clamped
    info = json.loads(skopeo(seed, "inspect", "--config", f"oci-archive:{tmp_path / '3.tar'}")
                      .stdout)
    assert info["created"] == EPOCH_TEXT
    assert info["history"][-1]["created"] == EPOCH_TEXT
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(tmp_path / "3.tar") as t:
        t.extractall(layout)
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.created"] == EPOCH_TEXT
    manifest = json.loads(layout_blob(layout, first))
    top = members(layout_blob(layout, manifest["layers"][-1]["digest"]))
    assert top["r.txt"][1] == b"reproducible\n"
    assert all(m.mtime <= EPOCH for m, _ in top.values())

    # a tar of the files gives every one of them the epoch, as BuildKit's
    b2.build(ctx, REPRO, *arg, "-o", f"type=tar,dest={tmp_path / 'fs.tar'}")
    files = members((tmp_path / "fs.tar").read_bytes())
    assert files and all(m.mtime == EPOCH for m, _ in files.values())

    # a build argument wins over the environment, as with buildx
    other = oci_build(b2, ctx, tmp_path / "4.tar", "--build-arg",
                      f"SOURCE_DATE_EPOCH={EPOCH + 1}", env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert other != first


def test_without_source_date_epoch_rebuilds_differ(builder, tmp_path):
    """The control of the test above: without an epoch, a RUN that ran again
    at another time gives another digest (so equality above is the epoch's
    doing, not the cache's)."""
    b = builder()
    ctx = context(tmp_path)
    first = oci_build(b, ctx, tmp_path / "1.tar")
    b.cli.ok("prune", "--all", "--force")
    time.sleep(1.1)  # another second on the clock, whatever precision "created" has
    assert oci_build(b, ctx, tmp_path / "2.tar") != first


def test_metadata_file_has_buildx_keys(builder, tmp_path):
    b = builder()
    out = tmp_path / "out.tar"
    md_path = tmp_path / "md.json"
    p = b.build(context(tmp_path), DOCKERFILE, "-t", "proof/img:1", "-t", "proof/img:latest",
                "-o", f"type=oci,dest={out}", "--metadata-file", md_path)
    md = metadata(md_path)
    assert re.fullmatch(r"b/b0/[a-z0-9]+", md["buildx.build.ref"]), md
    assert md["image.name"] == "docker.io/proof/img:1,docker.io/proof/img:latest"
    with tarfile.open(out) as t:
        index = json.load(t.extractfile("index.json"))
        manifest = json.load(t.extractfile(
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
    assert {d["annotations"]["org.opencontainers.image.ref.name"]
            for d in index["manifests"]} == {"1", "latest"}
    desc = md["containerimage.descriptor"]
    assert desc["mediaType"] == OCI_MANIFEST
    assert desc["digest"] == md["containerimage.digest"] == index["manifests"][0]["digest"]
    assert desc["size"] == index["manifests"][0]["size"]
    assert md["containerimage.config.digest"] == manifest["config"]["digest"]
    # the progress names the same manifest
    export = " ".join(step(steps(p.stderr), "exporting to oci image format"))
    assert f"exporting manifest {md['containerimage.digest']}" in export
    assert f"exporting config {md['containerimage.config.digest']}" in export


def test_metadata_file_of_a_local_output_has_no_image(builder, tmp_path):
    b = builder()
    md_path = tmp_path / "md.json"
    b.build(context(tmp_path), DOCKERFILE, "-o", f"type=local,dest={tmp_path / 'd'}",
            "--metadata-file", md_path)
    md = metadata(md_path)
    assert "buildx.build.ref" in md
    assert "containerimage.digest" not in md


def test_docker_media_types_with_oci_mediatypes_false(builder, seed, tmp_path):
    b = builder()
    out = tmp_path / "out.tar"
    b.build(context(tmp_path), DOCKERFILE, "-o",
            f"type=oci,dest={out},oci-mediatypes=false")
    raw = json.loads(skopeo(seed, "inspect", "--raw", f"oci-archive:{out}").stdout)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {layer["mediaType"] for layer in raw["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"}


def test_zstd_compression(builder, seed, tmp_path):
    b = builder()
    out = tmp_path / "out.tar"
    b.build(context(tmp_path), DOCKERFILE, "-o",
            f"type=oci,dest={out},compression=zstd,force-compression=true")
    raw = json.loads(skopeo(seed, "inspect", "--raw", f"oci-archive:{out}").stdout)
    assert [layer["mediaType"] for layer in raw["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"] * 3
    # skopeo decompresses and verifies every layer on its way to a layout
    skopeo(seed, "copy", "-q", f"oci-archive:{out}", f"oci:{tmp_path / 'copy'}:x")
