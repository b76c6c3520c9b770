# SPDX-License-Identifier: Apache-2.0
"""Real registries and the things around them, for integration tests.

Everything here listens on 127.0.0.1 only, on ports the kernel hands out,
under temporary directories; every object has a stop()/close() that kills
what it started and waits for it, and `Stack` runs those in reverse order
even when one of them fails. The pytest fixtures in conftest.py are thin
wrappers around these classes, so a benchmark script can use them too.

- `Pki`: a per-session CA with server, client, stranger and token-signing
  certificates (openssl CLI).
- `Registry`: distribution 2.8 (`/usr/bin/docker-registry serve CONFIG`)
  over HTTP, TLS or mutual TLS, with no auth, htpasswd Basic auth or token
  auth (`TokenServer`, a small JWT issuer written here).
- `Images` + `seed()`: OCI layouts written by hand from busybox-static
  (tar + gzip + JSON), pushed with `skopeo copy`.
- `NginxMirror`: nginx serving `/v2/<prefix>/<repo>/...` from a registry's
  `/v2/<repo>/...`, query strings kept, every request logged.
- `FaultyProxy`: a threaded HTTP proxy that corrupts, drops, fails, inflates,
  slows or holds matching requests and counts the client's TCP connections.
- `DeadAddress` (refuses connections) and `Blackhole` (accepts, never
  answers).

Only the Python standard library is used.
"""
import base64
import dataclasses
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import pathlib
import random
import re
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse

# Generous: the suites also run under AddressSanitizer.
TIMEOUT = float(os.environ.get("KILN_TEST_TIMEOUT", "20"))

DOCKER_REGISTRY = os.environ.get("KILN_DOCKER_REGISTRY", "/usr/bin/docker-registry")
BUSYBOX = os.environ.get("KILN_BUSYBOX", "/bin/busybox")
NGINX = os.environ.get("KILN_NGINX", "/usr/sbin/nginx")
CACHE_ROOT = pathlib.Path(os.environ.get("KILN_TEST_CACHE", "/var/tmp/kiln-test-cache"))

MiB = 1024 * 1024

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST])

# Hop-by-hop headers (RFC 9110 7.6.1): a proxy never forwards these.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect"}


class FixtureError(RuntimeError):
    """A fixture could not be set up; the message carries the relevant logs."""


# ---------------------------------------------------------------------------
# small helpers


def free_port():
    """A port that was free a moment ago. Servers written here bind port 0
    instead; this is for programs that must be told a port (and they are
    retried on "address already in use")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except OSError as e:
        return f"<{path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def wait_for(cond, what, timeout=None, interval=0.02, proc=None, logs=()):
    """Polls cond() until it returns a true value and returns that. Fails with
    the logs' tails when the deadline passes or `proc` (a Popen) exits."""
    deadline = time.monotonic() + (TIMEOUT if timeout is None else timeout)
    last = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise FixtureError(f"{what}: process {proc.pid} exited with {proc.returncode}\n"
                               + "\n".join(f"--- {p}:\n{tail(p)}" for p in logs))
        try:
            value = cond()
            if value:
                return value
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            last = e
        if time.monotonic() > deadline:
            raise FixtureError(f"timed out after {timeout or TIMEOUT}s waiting for {what}"
                               f" (last error: {last!r})\n"
                               + "\n".join(f"--- {p}:\n{tail(p)}" for p in logs))
        time.sleep(interval)


def pid_alive(pid):
    """True while /proc/<pid> exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def split_name(name):
    """'library/alpine:3' -> ('library/alpine', '3'); the tag defaults to latest."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, "latest"


class Stack:
    """Callbacks run last-in first-out by close(), all of them even when one
    raises (the first error is raised at the end). A context manager."""

    def __init__(self):
        self._callbacks = []
        self._lock = threading.Lock()

    def push(self, fn, *args):
        with self._lock:
            self._callbacks.append((fn, args))
        return fn

    def close(self):
        first = None
        while True:
            with self._lock:
                if not self._callbacks:
                    break
                fn, args = self._callbacks.pop()
            try:
                fn(*args)
            except BaseException as e:  # noqa: B902 - keep cleaning up
                first = first or e
        if first is not None:
            raise first

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_tempdir(prefix, parent=None):
    """A private directory; removed by the caller (see Stack)."""
    return pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=parent or "/tmp"))


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):  # a read-only leftover: try once more, loudly
        shutil.rmtree(path)


# If pytest is killed outright, the kernel sends SIGKILL to what it started
# instead of leaving orphans (util-linux's setpriv sets the parent-death
# signal, then execs: no preexec_fn, which is unsafe once threads run).
SETPRIV = shutil.which("setpriv")


class Process:
    """A child process with its output in files, killed by stop()."""

    def __init__(self, argv, stdout_path, stderr_path=None, cwd=None, env=None):
        self.argv = [str(a) for a in argv]
        launch = ([SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []) + self.argv
        self.stdout_path = pathlib.Path(stdout_path)
        self.stderr_path = pathlib.Path(stderr_path) if stderr_path else self.stdout_path
        with open(self.stdout_path, "ab") as out:
            if self.stderr_path == self.stdout_path:
                err = subprocess.STDOUT
                self.proc = subprocess.Popen(
                    launch, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                    env=env, start_new_session=True)
            else:
                with open(self.stderr_path, "ab") as err:
                    self.proc = subprocess.Popen(
                        launch, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                        env=env, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after `timeout`; always reaps. Returns the
        exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def run(argv, timeout=None, check=True, **kw):
    """subprocess.run with text output captured and a deadline; a failure
    raises FixtureError with the command's output."""
    argv = [str(a) for a in argv]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=timeout or 4 * TIMEOUT, **kw)
    except subprocess.TimeoutExpired as e:
        raise FixtureError(f"timed out: {' '.join(argv)}\n{e.stdout}\n{e.stderr}") from None
    if check and r.returncode != 0:
        raise FixtureError(f"exit {r.returncode}: {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
    return r


# ---------------------------------------------------------------------------
# PKI


class Pki:
    """A test CA and certificates signed by it, made once per session.

    Attributes (paths): ca_crt ca_key, server_crt server_key (SAN IP:127.0.0.1
    and DNS:localhost), client_crt client_key (clientAuth), other_ca_crt
    other_ca_key (an unrelated CA: "the wrong CA"), stranger_crt stranger_key
    (a client certificate from the other CA), token_crt token_key (RSA,
    self-signed: signs the token server's JWTs; the registry trusts it through
    `rootcertbundle`), token_kid (its libtrust key ID)."""

    def __init__(self, dir):
        self.dir = pathlib.Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca("ca")
        self._leaf("server", "ca", "serverAuth")
        self._leaf("client", "ca", "clientAuth")
        self._ca("other-ca")
        self._leaf("stranger", "other-ca", "clientAuth")
        self._token()
        for name in ("ca", "server", "client", "other-ca", "stranger", "token"):
            os.chmod(self.dir / f"{name}.key", 0o600)
        self.ca_crt, self.ca_key = self.dir / "ca.crt", self.dir / "ca.key"
        self.server_crt, self.server_key = self.dir / "server.crt", self.dir / "server.key"
        self.client_crt, self.client_key = self.dir / "client.crt", self.dir / "client.key"
        self.other_ca_crt, self.other_ca_key = self.dir / "other-ca.crt", self.dir / "other-ca.key"
        self.stranger_crt, self.stranger_key = self.dir / "stranger.crt", self.dir / "stranger.key"
        self.token_crt, self.token_key = self.dir / "token.crt", self.dir / "token.key"
        self.token_kid = libtrust_key_id(self.token_key)

    def _openssl(self, *args):
        run(["openssl", *args], cwd=self.dir)

    def _ca(self, name):
        (self.dir / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        self._openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        self._openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN=kiln test {name}",
                      "-out", f"{name}.csr")
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-signkey", f"{name}.key", "-days",
                      "7", "-extfile", f"{name}.ext", "-out", f"{name}.crt")

    def _leaf(self, name, ca, usage):
        ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        ext += f"extendedKeyUsage={usage}\n"
        if usage == "serverAuth":
            ext += "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        (self.dir / f"{name}.ext").write_text(ext)
        self._openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        self._openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN=kiln test {name}",
                      "-out", f"{name}.csr")
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey",
                      f"{ca}.key", "-set_serial", str(secrets.randbits(63)), "-days", "7",
                      "-extfile", f"{name}.ext", "-out", f"{name}.crt")

    def _token(self):
        self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                      "-out", "token.key")
        self._openssl("req", "-new", "-x509", "-key", "token.key", "-subj",
                      "/CN=kiln test token signer", "-days", "7", "-out", "token.crt")

    def certs_dir(self, dest, client=True, ca=None):
        """A docker/containers `certs.d/<host>` style directory at `dest`:
        ca.crt (the test CA, or `ca`), and client.cert + client.key when
        `client`. For skopeo --cert-dir, docker and buildkitd's tlsconfigdir."""
        dest = pathlib.Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca or self.ca_crt, dest / "ca.crt")
        if client:
            shutil.copyfile(self.client_crt, dest / "client.cert")
            shutil.copyfile(self.client_key, dest / "client.key")
            os.chmod(dest / "client.key", 0o600)
        return dest

    def client_context(self, cert=True):
        ctx = ssl.create_default_context(cafile=str(self.ca_crt))
        if cert:
            ctx.load_cert_chain(str(self.client_crt), str(self.client_key))
        return ctx

    def server_context(self, require_client_cert=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server_crt), str(self.server_key))
        if require_client_cert:
            ctx.load_verify_locations(str(self.ca_crt))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def libtrust_key_id(key_path):
    """The key ID libtrust (and so distribution's token auth, `kid`) gives a
    key: the SHA-256 of its DER SubjectPublicKeyInfo, first 240 bits, base32,
    in colon-separated groups of four."""
    der = subprocess.run(["openssl", "pkey", "-in", str(key_path), "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


# ---------------------------------------------------------------------------
# OCI layouts written by hand

EPOCH = 1704067200  # 2024-01-01T00:00:00Z, every mtime and "created"
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def make_layer(entries, level=6):
    """A gzip'd tar layer from (path, kind, payload, mode) entries, kind one of
    'dir', 'file' (payload bytes), 'symlink' (payload target). Deterministic.
    Returns (compressed bytes, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, payload, mode in entries:
            info = tarfile.TarInfo(path)
            info.mtime = EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    data = raw.getvalue()
    return gzip.compress(data, compresslevel=level, mtime=0), "sha256:" + sha256_hex(data)


def busybox_entries():
    if not os.path.exists(BUSYBOX):
        raise FixtureError(f"{BUSYBOX} is missing: install busybox-static")
    binary = pathlib.Path(BUSYBOX).read_bytes()
    applets = run([BUSYBOX, "--list"]).stdout.split()
    entries = [(d, "dir", None, m) for d, m in [
        ("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755), ("proc", 0o755),
        ("root", 0o700), ("sbin", 0o755), ("sys", 0o755), ("tmp", 0o1777), ("usr", 0o755),
        ("usr/bin", 0o755), ("usr/sbin", 0o755), ("var", 0o755), ("var/tmp", 0o1777)]]
    entries.append(("bin/busybox", "file", binary, 0o755))
    for a in sorted(set(applets) - {"busybox"}):
        entries.append((f"bin/{a}", "symlink", "busybox", 0o777))
    entries += [
        ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n"
         b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
        ("etc/group", "file", b"root:x:0:\nnogroup:x:65534:\n", 0o644),
        ("etc/nsswitch.conf", "file", b"hosts: files dns\n", 0o644),
        ("etc/hosts", "file", b"", 0o644),
        ("etc/resolv.conf", "file", b"", 0o644),
    ]
    return entries


class OciLayout:
    """An OCI image layout directory being written."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}

    def add_blob(self, data, media_type, **extra):
        digest = "sha256:" + sha256_hex(data)
        blob = self.path / "blobs" / "sha256" / digest[7:]
        if not blob.exists():
            tmp = blob.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.rename(blob)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def blob(self, digest):
        return (self.path / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()

    def add_image(self, layers, arch="amd64", variant=None, history=None):
        """layers: [(compressed, diff_id)]. Returns the manifest descriptor
        (with the platform) and the manifest."""
        config = {
            "created": CREATED,
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [{"created": CREATED, "created_by": h}
                        for h in (history or [f"kiln test layer {i}" for i in range(len(layers))])],
        }
        if variant:
            config["variant"] = variant
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": self.add_blob(_json_bytes(config), MT_OCI_CONFIG),
            "layers": [self.add_blob(c, MT_OCI_LAYER_GZIP) for c, _ in layers],
        }
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        desc = self.add_blob(_json_bytes(manifest), MT_OCI_MANIFEST, platform=platform)
        return desc, manifest

    def add_index(self, descs):
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": descs}
        return self.add_blob(_json_bytes(index), MT_OCI_INDEX), index

    def tag(self, desc, name):
        desc = {k: v for k, v in desc.items() if k != "platform"}
        desc["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.index["manifests"] = [
            d for d in self.index["manifests"]
            if d.get("annotations", {}).get("org.opencontainers.image.ref.name") != name]
        self.index["manifests"].append(desc)
        (self.path / "index.json").write_text(json.dumps(self.index, indent=1))


@dataclasses.dataclass
class Image:
    """One image in a layout: `ref` is its tag in the layout, `digest` the
    manifest's (or index's) digest there, `manifest` the parsed document,
    `layers` its layer descriptors (of the linux/amd64 manifest for an
    index)."""
    kind: str
    layout: pathlib.Path
    ref: str
    digest: str
    media_type: str
    manifest: dict
    layers: list


def _random_bytes(seed, n):
    return random.Random(seed).randbytes(n)


class Images:
    """Test images as OCI layouts, built on first use.

    Kinds: 'small' (busybox, one layer, OCI manifest, linux/amd64; 'alpine'
    is an alias), 'v2s2' (the same image, pushed as Docker schema 2 by
    seed()), 'index' (OCI index: linux/amd64 = 'small', linux/arm64/v8 = a
    different small one-layer image), 'layers12' (busybox + 11 distinct 64 KiB
    incompressible layers), 'big' (~100 MiB in 6 incompressible layers,
    cached under CACHE_ROOT)."""

    KINDS = ("small", "alpine", "v2s2", "index", "layers12", "big")

    def __init__(self, dir, cache_root=CACHE_ROOT):
        self.dir = pathlib.Path(dir)
        self.cache_root = pathlib.Path(cache_root)
        self._images = {}
        self._lock = threading.Lock()
        self._oci = None

    def get(self, kind):
        kind = {"alpine": "small", "v2s2": "small"}.get(kind, kind)
        with self._lock:
            if kind not in self._images:
                builder = {"small": self._small, "index": self._index,
                           "layers12": self._layers12, "big": self._big}.get(kind)
                if builder is None:
                    raise ValueError(f"unknown image kind {kind!r}; known: {self.KINDS}")
                self._images[kind] = builder()
            return self._images[kind]

    def _layout(self):
        if self._oci is None:
            self._oci = OciLayout(self.dir / "oci")
        return self._oci

    def _busybox_layer(self):
        if not hasattr(self, "_bb"):
            self._bb = make_layer(busybox_entries())
        return self._bb

    def _small(self):
        oci = self._layout()
        desc, manifest = oci.add_image([self._busybox_layer()], history=["busybox rootfs"])
        oci.tag(desc, "small")
        return Image("small", oci.path, "small", desc["digest"], MT_OCI_MANIFEST, manifest,
                     manifest["layers"])

    def _index(self):
        oci = self._layout()
        amd64, amd64_manifest = oci.add_image([self._busybox_layer()], history=["busybox rootfs"])
        arm64_layer = make_layer([
            ("etc", "dir", None, 0o755),
            ("etc/arch", "file", b"arm64\n", 0o644),
            ("README", "file", b"kiln test image: linux/arm64 placeholder, not runnable\n",
             0o644)])
        arm64, _ = oci.add_image([arm64_layer], arch="arm64", variant="v8",
                                 history=["arm64 placeholder"])
        desc, index = oci.add_index([amd64, arm64])
        oci.tag(desc, "index")
        return Image("index", oci.path, "index", desc["digest"], MT_OCI_INDEX, index,
                     amd64_manifest["layers"])

    def _layers12(self):
        oci = self._layout()
        layers = [self._busybox_layer()]
        for i in range(1, 12):
            layers.append(make_layer([
                ("data", "dir", None, 0o755),
                (f"data/layer-{i:02d}.bin", "file", _random_bytes(f"layers12-{i}", 64 * 1024),
                 0o644)]))
        desc, manifest = oci.add_image(
            layers, history=["busybox rootfs"] + [f"layer {i}" for i in range(1, 12)])
        oci.tag(desc, "layers12")
        return Image("layers12", oci.path, "layers12", desc["digest"], MT_OCI_MANIFEST,
                     manifest, manifest["layers"])

    def _big(self):
        path = big_image_layout(self.cache_root)
        return image_from_layout(path, "big", "big")


def image_from_layout(path, ref, kind):
    path = pathlib.Path(path)
    index = json.loads((path / "index.json").read_text())
    desc = next(d for d in index["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
    manifest = json.loads((path / "blobs" / "sha256" / desc["digest"][7:]).read_text())
    return Image(kind, path, ref, desc["digest"], desc["mediaType"], manifest,
                 manifest.get("layers", []))


BIG_VERSION = 1


def big_image_layout(cache_root=CACHE_ROOT, total_mib=100, layers=6):
    """An OCI layout (tag 'big') holding one image of `layers` layers of
    incompressible pseudo-random data, `total_mib` MiB in all; built once
    into `cache_root` (deterministic content, so every machine gets the same
    digests) and reused afterwards. Safe against concurrent and interrupted
    builders: it is written aside and renamed into place."""
    cache_root = pathlib.Path(cache_root)
    per = total_mib * MiB // layers
    final = cache_root / f"big-v{BIG_VERSION}-{layers}x{per}"
    if (final / "index.json").exists():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=cache_root))
    try:
        oci = OciLayout(work)
        built = []
        for i in range(layers):
            data = _random_bytes(f"kiln-big-{BIG_VERSION}-{i}", per)
            built.append(make_layer([
                ("data", "dir", None, 0o755),
                (f"data/layer-{i}.bin", "file", data, 0o644)], level=1))
            del data
        desc, _ = oci.add_image(built, history=[f"big layer {i}" for i in range(layers)])
        oci.tag(desc, "big")
        os.chmod(work, 0o755)
        try:
            work.rename(final)
        except OSError:
            if not (final / "index.json").exists():  # not someone else's finished copy
                raise
    finally:
        if work.exists():
            remove_tree(work)
    return final


# ---------------------------------------------------------------------------
# access logs


@dataclasses.dataclass
class AccessEntry:
    method: str
    uri: str     # as the client sent it, query string included
    status: int
    size: int
    user_agent: str
    line: str
    rewritten: str = ""  # nginx only: the URI sent upstream (no query)

    @property
    def path(self):
        return self.uri.split("?", 1)[0]

    @property
    def query(self):
        return self.uri.split("?", 1)[1] if "?" in self.uri else ""

    @property
    def params(self):
        return urllib.parse.parse_qs(self.query, keep_blank_values=True)


# gorilla/handlers CombinedLoggingHandler, as distribution writes it to stdout
_COMBINED = re.compile(r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+) ([^"]+)" (\d{3}) (\d+|-)'
                       r' "([^"]*)" "([^"]*)"')


def parse_combined_log(text):
    out = []
    for line in text.splitlines():
        m = _COMBINED.match(line)
        if m:
            out.append(AccessEntry(m[5], m[6], int(m[8]), 0 if m[9] == "-" else int(m[9]),
                                   m[11], line))
    return out


# ---------------------------------------------------------------------------
# threaded HTTP servers (token server, faulty proxy)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-test"

    def setup(self):
        self.timeout = self.server.owner.io_timeout
        if self.server.ssl_ctx is not None:
            self.request.settimeout(self.timeout)
            self.request = self.server.ssl_ctx.wrap_socket(self.request, server_side=True)
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, False)
            if self.server.ssl_ctx is not None:
                try:
                    self.connection.close()
                except OSError:
                    pass
            self.server.owner._handler_finished(self)

    def log_message(self, format, *args):
        pass

    def _dispatch(self):
        self.server.owner.handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class _Server(http.server.HTTPServer):
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, owner, ssl_ctx):
        self.owner = owner
        self.ssl_ctx = ssl_ctx
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        # Counted at accept(), in the accepting thread: the count is the
        # number of TCP connections the client has open to us.
        conn_id = self.owner._accepted(request, client_address)
        t = threading.Thread(target=self._thread, args=(request, client_address, conn_id),
                             name=f"{type(self.owner).__name__}-conn{conn_id}", daemon=True)
        self.owner._threads_add(t)
        t.start()

    def _thread(self, request, client_address, conn_id):
        threading.current_thread().conn_id = conn_id
        try:
            self.finish_request(request, client_address)
        except Exception as e:  # noqa: BLE001 - a test server reports, never dies
            self.owner._error(conn_id, e)
        finally:
            try:
                self.shutdown_request(request)
            finally:
                self.owner._closed(conn_id)

    def handle_error(self, request, client_address):
        pass


@dataclasses.dataclass
class Connection:
    id: int
    peer: tuple
    opened: float
    closed: float = None
    requests: int = 0


class ThreadedServer:
    """Base of the Python servers: a listening socket on 127.0.0.1:0, one
    thread per TCP connection, connection accounting, clean stop()."""

    io_timeout = 60.0

    def __init__(self, ssl_ctx=None):
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = []
        self._live = set()
        self.active = 0            # TCP connections open now
        self.max_active = 0        # the most open at once since start/reset
        self.total = 0             # connections accepted since start/reset
        self.connections = []      # Connection records since start/reset
        self._conn_by_id = {}
        self._next_conn = 0
        self.errors = []
        self.tls = ssl_ctx is not None
        self._server = _Server(self, ssl_ctx)
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if self.tls else 'http'}://{self.host}"
        self._loop = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"{type(self).__name__}-accept", daemon=True)
        self._loop.start()
        self.stopped = False

    # accounting, called from _Server/_Handler
    def _accepted(self, request, peer):
        with self._lock:
            self._next_conn += 1
            c = Connection(self._next_conn, peer, time.monotonic())
            self.connections.append(c)
            self._conn_by_id[c.id] = c
            self.active += 1
            self.total += 1
            self.max_active = max(self.max_active, self.active)
            return c.id

    def _closed(self, conn_id):
        with self._lock:
            self.active -= 1
            c = self._conn_by_id.pop(conn_id, None)
            if c:
                c.closed = time.monotonic()

    def _track(self, sock, add):
        with self._lock:
            (self._live.add if add else self._live.discard)(sock)

    def _threads_add(self, t):
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _handler_finished(self, handler):
        pass

    def _error(self, conn_id, e):
        with self._lock:
            self.errors.append((conn_id, e))

    def _count_request(self):
        cid = getattr(threading.current_thread(), "conn_id", None)
        with self._lock:
            c = self._conn_by_id.get(cid)
            if c:
                c.requests += 1
        return cid

    def reset_counters(self):
        """Forgets connection history: max_active restarts from the
        connections open now."""
        with self._lock:
            self.max_active = self.active
            self.total = 0
            self.connections = [c for c in self.connections if c.closed is None]

    def wait_idle(self, timeout=None):
        """Waits until no client connection is open."""
        wait_for(lambda: self.active == 0, f"{self.host}: all connections closed", timeout)

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        self._stopping.set()
        self._server.shutdown()
        self._loop.join(TIMEOUT)
        with self._lock:
            live = list(self._live)
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        deadline = time.monotonic() + TIMEOUT
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            raise FixtureError(f"{type(self).__name__} {self.host}: threads did not stop: {stuck}")

    # helpers for subclasses
    @staticmethod
    def read_body(h):
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline().strip():
                        pass
                    return bytes(out)
                out += h.rfile.read(size)
                h.rfile.readline()
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    @staticmethod
    def respond(h, status, body=b"", headers=(), content_type="application/json"):
        h.send_response_only(status)
        sent = {k.lower() for k, _ in headers}
        for k, v in headers:
            h.send_header(k, v)
        if "content-type" not in sent and body:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Date", h.date_time_string())
        h.end_headers()
        if h.command != "HEAD" and body:
            h.wfile.write(body)


# ---------------------------------------------------------------------------
# token server


@dataclasses.dataclass
class TokenRequest:
    method: str
    path: str
    query: dict          # parse_qs of the query string
    form: dict           # parse_qs of a POST body
    headers: dict        # lower-case name -> value
    username: str        # from Basic auth (GET) or the form (POST), else None
    scopes: list
    status: int = 0
    time: float = 0.0
    grant_type: str = None


class TokenServer(ThreadedServer):
    """A Docker registry token server (distribution's `auth: token:`).

    GET  <path>?service=S&scope=A&scope=B[&offline_token=true]  with optional
         Basic credentials -> {"token", "access_token", "expires_in",
         "issued_at"[, "refresh_token"]}
    POST <path> form grant_type=password (username, password) or
         grant_type=refresh_token (refresh_token), service, scope (space
         separated), client_id (required, as the spec says)[, access_type=
         offline] -> {"access_token", "expires_in", "issued_at", "scope"[,
         "refresh_token"]}

    Tokens are RS256 JWTs with the libtrust `kid` of Pki.token_key, issued for
    `service`/`issuer`, granting every requested action (only `pull` to an
    anonymous caller when `anonymous`). Wrong credentials get 401; a wrong or
    missing service gets 400.

    Mutable knobs: expires_in (None leaves it out of the answer),
    get_status/post_status (answer that status instead, e.g. 404 so a client
    must fall back from GET to POST), users, anonymous. Every request is in
    `requests` (TokenRequest), in arrival order."""

    def __init__(self, pki, users=None, service="kiln-test-registry",
                 issuer="kiln-test-token-issuer", expires_in=300, get_status=None,
                 post_status=None, anonymous=False, tls=False, path="/token"):
        self.pki = pki
        self.users = dict(users or {})
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.get_status = get_status
        self.post_status = post_status
        self.anonymous = anonymous
        self.token_path = path
        self.rootcertbundle = pki.token_crt
        self.requests = []
        self.refresh_tokens = {}
        super().__init__(pki.server_context() if tls else None)
        self.realm = self.url + path

    def mint(self, scopes, subject="kiln", expires_in=None, access=None):
        """A signed token for `scopes` ("repository:library/alpine:pull,push"),
        made without a request."""
        now = int(time.time())
        ttl = self.expires_in if expires_in is None else expires_in
        claims = {
            "iss": self.issuer, "sub": subject or "", "aud": self.service,
            "exp": now + (ttl if ttl is not None else 60), "nbf": now - 1, "iat": now,
            "jti": secrets.token_hex(12),
            "access": access if access is not None else self._access(scopes, subject),
        }
        header = {"typ": "JWT", "alg": "RS256", "kid": self.pki.token_kid}
        signing_input = (_b64url(_json_bytes(header)) + "." + _b64url(_json_bytes(claims))).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.pki.token_key)],
                             input=signing_input, capture_output=True, check=True).stdout
        return signing_input.decode() + "." + _b64url(sig)

    def _access(self, scopes, subject):
        access = []
        for scope in scopes:
            try:
                typ, rest = scope.split(":", 1)
                name, actions = rest.rsplit(":", 1)
            except ValueError:
                continue
            acts = [a for a in actions.split(",") if a]
            if not subject:
                acts = [a for a in acts if a == "pull"]
            access.append({"type": typ, "name": name, "actions": acts})
        return access

    def handle(self, h):
        self._count_request()
        parsed = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        body = self.read_body(h)
        form = {}
        if h.command == "POST":
            form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        rec = TokenRequest(h.command, parsed.path, query, form,
                           {k.lower(): v for k, v in h.headers.items()}, None, [],
                           time=time.monotonic(), grant_type=(form.get("grant_type") or [None])[0])
        with self._lock:
            self.requests.append(rec)
        status, doc, headers = self._answer(h, rec, parsed.path, query, form)
        rec.status = status
        self.respond(h, status, _json_bytes(doc), headers)

    def _answer(self, h, rec, path, query, form):
        if path != self.token_path:
            return 404, {"errors": [{"code": "NOT_FOUND", "message": path}]}, []
        if h.command == "GET":
            if self.get_status:
                return self.get_status, {"errors": [{"code": "UNSUPPORTED"}]}, []
            scopes = [s for v in query.get("scope", []) for s in v.split(" ") if s]
            service = (query.get("service") or [None])[0]
            user = None
            auth = h.headers.get("Authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    user, password = "", None
                rec.username = user
                if self.users.get(user) != password or user not in self.users:
                    return 401, {"errors": [{"code": "UNAUTHORIZED",
                                             "message": "invalid credentials"}]}, \
                        [("WWW-Authenticate", 'Basic realm="kiln-test-token"')]
            elif not self.anonymous:
                return 401, {"errors": [{"code": "UNAUTHORIZED",
                                         "message": "credentials required"}]}, \
                    [("WWW-Authenticate", 'Basic realm="kiln-test-token"')]
            offline = (query.get("offline_token") or ["false"])[0] == "true"
        elif h.command == "POST":
            if self.post_status:
                return self.post_status, {"error": "unsupported"}, []
            get = lambda k: (form.get(k) or [None])[0]  # noqa: E731
            scopes = [s for s in (get("scope") or "").split(" ") if s]
            service = get("service")
            if not get("client_id"):
                return 400, {"error": "invalid_request", "error_description": "client_id missing"}, []
            grant = get("grant_type")
            if grant == "password":
                user = get("username")
                rec.username = user
                if user not in self.users or self.users[user] != get("password"):
                    return 401, {"error": "invalid_grant"}, []
            elif grant == "refresh_token":
                user = self.refresh_tokens.get(get("refresh_token"))
                rec.username = user
                if user is None:
                    return 401, {"error": "invalid_grant"}, []
            else:
                return 400, {"error": "unsupported_grant_type"}, []
            offline = get("access_type") == "offline"
        else:
            return 405, {"error": "method not allowed"}, [("Allow", "GET, POST")]
        rec.scopes = scopes
        if service != self.service:
            return 400, {"errors": [{"code": "INVALID_SERVICE", "message": f"service {service!r}"}]}, []
        token = self.mint(scopes, subject=user)
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if h.command == "GET":
            doc = {"token": token, "access_token": token, "issued_at": issued}
        else:
            doc = {"access_token": token, "issued_at": issued, "scope": " ".join(scopes)}
        if self.expires_in is not None:
            doc["expires_in"] = self.expires_in
        if offline and user:
            refresh = secrets.token_urlsafe(24)
            with self._lock:
                self.refresh_tokens[refresh] = user
            doc["refresh_token"] = refresh
        return 200, doc, []

    def methods(self):
        """The methods of the requests so far, in order: ['GET', 'POST']."""
        with self._lock:
            return [r.method for r in self.requests]


def _b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


# ---------------------------------------------------------------------------
# registry


def _yaml(obj, indent=0):
    """Block YAML for dicts/lists of scalars; strings JSON-quoted (valid YAML)."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    else:
        for v in obj:
            if isinstance(v, (dict, list)):
                lines.append(f"{pad}-")
                lines.append(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}- {_scalar(v)}")
    return "\n".join(lines)


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if v == {} or v == []:
        return "{}" if v == {} else "[]"
    return json.dumps(str(v))


class Registry:
    """A docker-registry (distribution 2.8) process on 127.0.0.1.

    Parameters: tls (serve HTTPS with Pki.server_crt), mtls (also require a
    client certificate signed by the test CA; implies tls), auth (None,
    'htpasswd' or 'token'), username/password (generated when not given),
    token (dict of TokenServer options, for auth='token'), config (a dict
    merged over the generated config.yml), name.

    Attributes: name, host ('127.0.0.1:PORT'), port, scheme, url, tls, mtls,
    auth, ca_path (the CA to trust, None over HTTP), cert/key (the client
    certificate when mtls, else None), username/password/creds ('u:p', None
    without auth), token_server (TokenServer or None), dir, data_dir,
    config_path, log_path (the registry's own logrus log), access_log_path
    (its combined access log), certs_dir (a certs.d-style dir for this host:
    ca.crt, and client.cert/.key when mtls; None over HTTP), pid."""

    def __init__(self, pki, dir, tls=False, mtls=False, auth=None, username=None, password=None,
                 token=None, config=None, name="registry"):
        if not os.access(DOCKER_REGISTRY, os.X_OK):
            raise FixtureError(f"{DOCKER_REGISTRY} is missing: install docker-registry")
        if auth not in (None, "htpasswd", "token"):
            raise ValueError(f"auth={auth!r}: use None, 'htpasswd' or 'token'")
        self.pki = pki
        self.name = name
        self.dir = pathlib.Path(dir)
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.mtls = bool(mtls)
        self.tls = bool(tls) or self.mtls
        self.scheme = "https" if self.tls else "http"
        self.auth = auth
        self.ca_path = pki.ca_crt if self.tls else None
        self.cert = pki.client_crt if self.mtls else None
        self.key = pki.client_key if self.mtls else None
        self.username = self.password = self.creds = None
        if auth:
            self.username = username or "kiln"
            self.password = password or "pw-" + secrets.token_hex(8)
            self.creds = f"{self.username}:{self.password}"
        self.token_server = None
        self.config_path = self.dir / "config.yml"
        self.log_path = self.dir / "registry.log"
        self.access_log_path = self.dir / "access.log"
        self.process = None
        self._stack = Stack()
        try:
            self._start(token, config or {})
        except BaseException:
            self._stack.close()
            raise

    def _config(self, port, extra):
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False},
                    "fields": {"service": "registry", "name": self.name}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{port}",
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.tls:
            cfg["http"]["tls"] = {"certificate": str(self.pki.server_crt),
                                  "key": str(self.pki.server_key)}
            if self.mtls:
                cfg["http"]["tls"]["clientcas"] = [str(self.pki.ca_crt)]
        if self.auth == "htpasswd":
            cfg["auth"] = {"htpasswd": {"realm": "kiln-test-registry",
                                        "path": str(self.dir / "htpasswd")}}
        elif self.auth == "token":
            ts = self.token_server
            cfg["auth"] = {"token": {"realm": ts.realm, "service": ts.service,
                                     "issuer": ts.issuer,
                                     "rootcertbundle": str(ts.rootcertbundle)}}
        return _merge(cfg, extra)

    def _start(self, token_options, extra):
        if self.auth == "htpasswd":
            if not shutil.which("htpasswd"):
                raise FixtureError("htpasswd is missing: install apache2-utils")
            line = run(["htpasswd", "-Bbn", self.username, self.password]).stdout.strip()
            (self.dir / "htpasswd").write_text(line + "\n")
        elif self.auth == "token":
            opts = {"users": {self.username: self.password}, **(token_options or {})}
            self.token_server = TokenServer(self.pki, **opts)
            self._stack.push(self.token_server.stop)
        if self.tls:
            self.certs_dir = self.pki.certs_dir(self.dir / "certs.d" / "HOST", client=self.mtls)
        else:
            self.certs_dir = None
        for attempt in range(5):
            port = free_port()
            self.config_path.write_text(_yaml(self._config(port, extra)) + "\n")
            self.process = Process([DOCKER_REGISTRY, "serve", self.config_path],
                                   self.access_log_path, self.log_path)
            self.pid = self.process.pid
            self._stack.push(self.process.stop)
            self.port = port
            self.host = f"127.0.0.1:{port}"
            self.url = f"{self.scheme}://{self.host}"
            try:
                wait_for(self._ready, f"registry {self.name} on {self.host}",
                         proc=self.process.proc, logs=[self.log_path])
                break
            except FixtureError:
                self.process.stop()
                if "address already in use" in tail(self.log_path) and attempt < 4:
                    self.log_path.write_text("")
                    continue
                raise
        if self.certs_dir is not None:
            named = self.certs_dir.parent / self.host
            self.certs_dir.rename(named)
            self.certs_dir = named

    def _ready(self):
        if f"listening on 127.0.0.1:{self.port}" not in self.log():
            return False
        status, _, _ = self.request("GET", "/v2/", timeout=2)
        return status in (200, 401)

    def ssl_context(self, cert=True):
        return self.pki.client_context(cert=cert and self.mtls) if self.tls else None

    def request(self, method, path, headers=None, body=None, timeout=None, cert=True):
        """One raw HTTP request (no auth handling) -> (status, headers, body)."""
        if self.tls:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout or TIMEOUT,
                                               context=self.ssl_context(cert))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_log(self):
        """The access log so far: a list of AccessEntry (method, uri, path,
        query, params, status, size, user_agent, line). A line is written when
        its response has been sent, so use wait_access() right after a
        request."""
        if not self.access_log_path.exists():
            return []
        return parse_combined_log(self.access_log_path.read_text(errors="replace"))

    def wait_access(self, pred, what="an access log line", timeout=None):
        """Waits for access log entries matching pred; returns them."""
        return wait_for(lambda: [e for e in self.access_log() if pred(e)], what, timeout)

    def curl_args(self, cert=True):
        """curl options to reach this registry: --cacert, --cert/--key (mtls),
        -u user:pass (htpasswd)."""
        args = []
        if self.tls:
            args += ["--cacert", str(self.ca_path)]
        if self.mtls and cert:
            args += ["--cert", str(self.cert), "--key", str(self.key)]
        if self.auth == "htpasswd":
            args += ["-u", self.creds]
        return args

    def skopeo_args(self, role=""):
        """skopeo options for this registry; role '' (inspect), 'src' or 'dest'."""
        p = f"--{role}-" if role else "--"
        args = []
        if self.tls:
            args += [f"{p}cert-dir", str(self.certs_dir)]
        else:
            args += [f"{p}tls-verify=false"]
        if self.creds:
            args += [f"{p}creds", self.creds]
        else:
            args += [f"{p}no-creds"]
        return args

    def docker_auth(self):
        """This registry's entry for a Docker config.json `auths` map."""
        if not self.creds:
            return None
        return {"auth": base64.b64encode(self.creds.encode()).decode()}

    def stop(self):
        self._stack.close()

    def __repr__(self):
        return f"<Registry {self.name} {self.url} auth={self.auth} mtls={self.mtls}>"


def _merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def docker_config(dir, *registries, extra=None):
    """Writes <dir>/config.json (a Docker client config) with an `auths`
    entry for each registry with credentials, keyed by its host; `extra` is
    merged in (e.g. {"credsStore": "x"}). Returns the directory, for
    DOCKER_CONFIG."""
    dir = pathlib.Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    doc = {"auths": {r.host: r.docker_auth() for r in registries if r.docker_auth()}}
    doc.update(extra or {})
    path = dir / "config.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    os.chmod(path, 0o600)
    return dir


# ---------------------------------------------------------------------------
# seeding


class Seeder:
    """seed(registry, 'library/alpine[:tag]', kind) pushes an Images kind with
    skopeo copy and returns the pushed manifest's (or index's) digest."""

    def __init__(self, images, dir):
        self.images = images
        self.dir = pathlib.Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.policy = self.dir / "policy.json"
        self.policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}\n')
        self.env = {**os.environ, "HOME": str(self.dir), "XDG_RUNTIME_DIR": str(self.dir),
                    "TMPDIR": str(self.dir), "REGISTRY_AUTH_FILE": str(self.dir / "auth.json")}
        self._n = 0

    def __call__(self, registry, name, kind="small"):
        image = self.images.get(kind)
        repo, tag = split_name(name)
        self._n += 1
        digestfile = self.dir / f"digest-{self._n}"
        argv = ["skopeo", "--policy", self.policy, "copy", "-q", "--digestfile", digestfile,
                *registry.skopeo_args("dest")]
        if kind == "v2s2":
            argv += ["--format", "v2s2"]
        if image.media_type == MT_OCI_INDEX:
            argv += ["--all"]
        argv += [f"oci:{image.layout}:{image.ref}", f"docker://{registry.host}/{repo}:{tag}"]
        run(argv, env=self.env, timeout=max(120, 4 * TIMEOUT))
        digest = digestfile.read_text().strip()
        digestfile.unlink()
        return digest

    def inspect(self, registry, name, raw=True):
        argv = ["skopeo", "--policy", self.policy, "inspect", *registry.skopeo_args()]
        if raw:
            argv.append("--raw")
        argv.append(f"docker://{registry.host}/{name}")
        return json.loads(run(argv, env=self.env).stdout)


# ---------------------------------------------------------------------------
# nginx path-prefix mirror


class NginxMirror:
    """nginx on 127.0.0.1 serving `/v2/<prefix>/<repo>/...` (and `/v2/`)
    from `upstream`'s `/v2/<repo>/...`, query strings kept.

    Attributes: host ('127.0.0.1:PORT'), url, prefix, mirror ('127.0.0.1:
    PORT/prefix', what buildkitd.toml's `mirrors` lists), upstream, dir,
    log_path (nginx's error log), access_log_path, pid. access_log() gives
    AccessEntry objects whose uri is what the client sent (with ?ns=...) and
    `rewritten` the path sent upstream."""

    def __init__(self, upstream, dir, prefix="mirror"):
        if not os.access(NGINX, os.X_OK):
            raise FixtureError(f"{NGINX} is missing: install nginx-light")
        self.upstream = upstream
        self.prefix = prefix.strip("/")
        self.dir = pathlib.Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "error.log"
        self.access_log_path = self.dir / "access.log"
        self.conf_path = self.dir / "nginx.conf"
        self._stack = Stack()
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise

    def _conf(self, port):
        d = self.dir
        up = self.upstream
        tls = ""
        if getattr(up, "tls", False):
            tls = "proxy_ssl_verify off;\n"
            if getattr(up, "cert", None):
                tls += f"proxy_ssl_certificate {up.cert};\nproxy_ssl_certificate_key {up.key};\n"
        prefix = re.escape(self.prefix)
        return f"""
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.log_path} info;
events {{ worker_connections 256; }}
http {{
    log_format kiln '$msec\\t$request_method\\t$request_uri\\t$status\\t$body_bytes_sent\\t$uri\\t$http_user_agent';
    access_log {self.access_log_path} kiln;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_read_timeout 120s;
    {tls}
    server {{
        listen 127.0.0.1:{port};
        location = /v2/ {{
            proxy_pass {up.scheme}://{up.host};
        }}
        location ^~ /v2/{self.prefix}/ {{
            rewrite ^/v2/{prefix}/(.*)$ /v2/$1 break;
            proxy_pass {up.scheme}://{up.host};
        }}
        location / {{
            return 404 '{{"errors":[{{"code":"NOT_FOUND","message":"not under the mirror prefix"}}]}}';
        }}
    }}
}}
"""

    def _start(self):
        for attempt in range(5):
            port = free_port()
            self.conf_path.write_text(self._conf(port))
            self.process = Process([NGINX, "-p", self.dir, "-e", self.log_path, "-c",
                                    self.conf_path], self.dir / "nginx.out")
            self.pid = self.process.pid
            self._stack.push(self.process.stop)
            self.port = port
            self.host = f"127.0.0.1:{port}"
            self.url = f"http://{self.host}"
            self.mirror = f"{self.host}/{self.prefix}"
            try:
                wait_for(self._ready, f"nginx mirror on {self.host}", proc=self.process.proc,
                         logs=[self.log_path, self.dir / "nginx.out"])
                return
            except FixtureError:
                self.process.stop()
                if "Address already in use" in tail(self.log_path) and attempt < 4:
                    continue
                raise

    def _ready(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/v2/", headers={"User-Agent": "kiln-test-probe"})
            r = conn.getresponse()
            r.read()
            return r.status in (200, 401)
        finally:
            conn.close()

    def access_log(self):
        if not self.access_log_path.exists():
            return []
        out = []
        for line in self.access_log_path.read_text(errors="replace").splitlines():
            f = line.split("\t")
            if len(f) >= 7:
                out.append(AccessEntry(f[1], f[2], int(f[3]), int(f[4]), f[6], line,
                                       rewritten=f[5]))
        return out

    def wait_access(self, pred, what="an nginx access log line", timeout=None):
        return wait_for(lambda: [e for e in self.access_log() if pred(e)], what, timeout)

    def stop(self):
        self._stack.close()


# ---------------------------------------------------------------------------
# the faulty proxy


@dataclasses.dataclass
class ProxyRequest:
    method: str
    path: str
    query: str
    headers: list        # [(name, value)] as received
    conn_id: int
    started: float
    finished: float = None
    status: int = None
    fault: str = None    # the action applied, if any
    sent: int = 0        # body bytes sent to the client
    error: str = None

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def params(self):
        return urllib.parse.parse_qs(self.query, keep_blank_values=True)


class Fault:
    """A rule: requests whose path matches `pattern` (re.search) and whose
    method is `method` (any when None) get `action`, the first `times` of
    them (all when None). `hits` counts the requests it was applied to."""

    def __init__(self, pattern, action, method=None, times=None, **params):
        self.pattern = re.compile(pattern)
        self.action = action
        self.method = method
        self.times = times
        self.params = params
        self.hits = 0

    def __repr__(self):
        return f"<Fault {self.action} {self.pattern.pattern!r} hits={self.hits}>"


class Gate:
    """Holds matching responses (after their headers and `after` body bytes)
    until release(), or until `timeout` seconds pass so no test hangs.
    `held` is how many are waiting now, `total` how many were ever held."""

    def __init__(self, timeout):
        self.timeout = timeout
        self._released = threading.Event()
        self._cond = threading.Condition()
        self.held = 0
        self.total = 0
        self.fault = None

    def _wait(self, stopping):
        with self._cond:
            self.held += 1
            self.total += 1
            self._cond.notify_all()
        try:
            deadline = time.monotonic() + self.timeout
            while not self._released.is_set() and not stopping.is_set():
                if time.monotonic() > deadline:
                    break
                self._released.wait(0.05)
        finally:
            with self._cond:
                self.held -= 1
                self._cond.notify_all()

    def wait_held(self, n, timeout=None):
        """Waits until at least n responses are held; returns how many are."""
        deadline = time.monotonic() + (TIMEOUT if timeout is None else timeout)
        with self._cond:
            while self.held < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FixtureError(f"timed out waiting for {n} held responses ({self.held} held)")
                self._cond.wait(left)
            return self.held

    def release(self):
        self._released.set()


class FaultyProxy(ThreadedServer):
    """An HTTP proxy on 127.0.0.1 in front of one registry (so its counters
    are per upstream host), injecting faults into matching requests.

    Attributes: host, port, url, upstream, requests (ProxyRequest list, in
    arrival order), active / max_active / total (the client's TCP
    connections: open now, most at once, accepted), connections (Connection
    records: id, peer, opened, closed, requests), faults.

    Faults (pattern is a regex searched in the path, without the query):
      corrupt(pattern, offset=None, count=16)  same length, `count` bytes
          flipped (XOR 0xff) at `offset` (the middle by default)
      drop(pattern, after=1024, times=1)      headers and `after` body bytes,
          then the connection is closed (reset=True: with a TCP RST)
      close(pattern)                          closed before any response
      status(pattern, code=500, body=None, headers=())  a canned response
      oversize(pattern, size=5 MiB, chunked=False)  a 200 manifest of `size`
          bytes of valid JSON (chunked: without Content-Length)
      slow(pattern, delay=0, rate=None)       wait `delay` s before answering,
          then send at most `rate` bytes/s
      hold(pattern, after=0) -> Gate          hold the response open until
          the gate is released
    Each takes method= (GET for body faults, any otherwise) and times=."""

    def __init__(self, upstream, tls=False, pki=None):
        self.upstream = upstream
        self.requests = []
        self.faults = []
        self._up_ssl = upstream.ssl_context() if getattr(upstream, "tls", False) else None
        self._up_port = int(upstream.host.rsplit(":", 1)[1])
        super().__init__((pki or upstream.pki).server_context() if tls else None)

    # -- fault rules
    def add(self, pattern, action, method=None, times=None, **params):
        f = Fault(pattern, action, method, times, **params)
        with self._lock:
            self.faults.append(f)
        return f

    def corrupt(self, pattern, offset=None, count=16, method="GET", times=None):
        return self.add(pattern, "corrupt", method, times, offset=offset, count=count)

    def drop(self, pattern, after=1024, times=1, method="GET", reset=False):
        return self.add(pattern, "drop", method, times, after=after, reset=reset)

    def close(self, pattern, times=None, method=None):
        return self.add(pattern, "close", method, times)

    def status(self, pattern, code=500, body=None, headers=(), times=None, method=None):
        return self.add(pattern, "status", method, times, code=code, body=body,
                        headers=list(headers))

    def oversize(self, pattern, size=5 * MiB, chunked=False, times=None, method=None):
        return self.add(pattern, "oversize", method, times, size=size, chunked=chunked)

    def slow(self, pattern, delay=0.0, rate=None, times=None, method=None):
        return self.add(pattern, "slow", method, times, delay=delay, rate=rate)

    def hold(self, pattern, after=0, times=None, method="GET", timeout=None):
        gate = Gate(TIMEOUT if timeout is None else timeout)
        gate.fault = self.add(pattern, "hold", method, times, after=after, gate=gate)
        return gate

    def clear_faults(self):
        with self._lock:
            for f in self.faults:
                g = f.params.get("gate")
                if g:
                    g.release()
            self.faults = []

    def _match(self, method, path):
        with self._lock:
            for f in self.faults:
                if f.method and f.method != method:
                    continue
                if not f.pattern.search(path):
                    continue
                if f.times is not None and f.hits >= f.times:
                    continue
                f.hits += 1
                return f
        return None

    # -- observation
    def find(self, pattern=None, method=None):
        """Recorded requests whose path matches pattern (re.search)."""
        rx = re.compile(pattern) if pattern else None
        with self._lock:
            return [r for r in self.requests
                    if (rx is None or rx.search(r.path)) and (method is None or r.method == method)]

    def wait_requests(self, pred, what="a request", timeout=None):
        def got():
            with self._lock:
                return [r for r in self.requests if pred(r)]
        return wait_for(got, what, timeout)

    def reset_counters(self):
        super().reset_counters()
        with self._lock:
            self.requests = []

    def stop(self):
        self.clear_faults()
        super().stop()

    # -- the proxy
    def _upstream_conn(self, h):
        conn = getattr(h, "upstream_conn", None)
        if conn is None:
            if self._up_ssl is not None:
                conn = http.client.HTTPSConnection("127.0.0.1", self._up_port,
                                                   timeout=self.io_timeout, context=self._up_ssl)
            else:
                conn = http.client.HTTPConnection("127.0.0.1", self._up_port,
                                                  timeout=self.io_timeout)
            h.upstream_conn = conn
        return conn

    def _drop_upstream(self, h):
        conn = getattr(h, "upstream_conn", None)
        if conn is not None:
            conn.close()
            h.upstream_conn = None

    def _handler_finished(self, h):
        self._drop_upstream(h)

    def handle(self, h):
        conn_id = self._count_request()
        path, _, query = h.path.partition("?")
        rec = ProxyRequest(h.command, path, query, list(h.headers.items()), conn_id,
                           time.monotonic())
        with self._lock:
            self.requests.append(rec)
        try:
            self._handle(h, rec)
        except (OSError, http.client.HTTPException) as e:
            rec.error = repr(e)
            h.close_connection = True
            self._drop_upstream(h)
        finally:
            rec.finished = time.monotonic()

    def _handle(self, h, rec):
        body = self.read_body(h)
        fault = self._match(h.command, rec.path)
        p = fault.params if fault else {}
        if fault:
            rec.fault = fault.action
        if fault and fault.action == "close":
            h.close_connection = True
            _abort(h.connection, reset=True)
            return
        if fault and fault.action == "status":
            code = p["code"]
            doc = p["body"]
            if doc is None:
                name = {404: "NOT_FOUND", 401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS"}.get(
                    code, "UNKNOWN")
                doc = _json_bytes({"errors": [{"code": name, "message": "injected fault"}]})
            rec.status = code
            self.respond(h, code, doc if isinstance(doc, bytes) else doc.encode(), p["headers"])
            rec.sent = 0 if h.command == "HEAD" else len(doc)
            return
        if fault and fault.action == "oversize":
            self._oversize(h, rec, p["size"], p["chunked"])
            return
        if fault and fault.action == "slow" and p["delay"]:
            self._stopping.wait(p["delay"])

        # forward
        conn = self._upstream_conn(h)
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP
                   and k.lower() != "content-length"]
        headers.append(("X-Forwarded-Proto", "https" if self.tls else "http"))
        try:
            resp = self._send_upstream(conn, h.command, h.path, headers, body)
        except (OSError, http.client.HTTPException):
            self._drop_upstream(h)  # a stale keep-alive connection: one retry
            conn = self._upstream_conn(h)
            try:
                resp = self._send_upstream(conn, h.command, h.path, headers, body)
            except (OSError, http.client.HTTPException) as e:
                self._drop_upstream(h)
                rec.status = 502
                rec.error = repr(e)
                self.respond(h, 502, _json_bytes({"errors": [{"code": "UNKNOWN",
                                                              "message": f"upstream: {e}"}]}))
                return
        rec.status = resp.status
        out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        no_body = h.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        length = resp.getheader("Content-Length")
        if no_body:
            resp.read()
            self._send_head(h, resp.status, out_headers)
            return
        if length is None:  # chunked upstream: small documents, buffer them
            data = resp.read()
            out_headers.append(("Content-Length", str(len(data))))
            src = io.BytesIO(data)
            length = len(data)
        else:
            src = resp
            length = int(length)
        self._send_head(h, resp.status, out_headers)
        self._stream(h, rec, src, length, fault)
        if resp.will_close or src is not resp:
            resp.read()
        if resp.will_close:
            self._drop_upstream(h)

    @staticmethod
    def _send_upstream(conn, method, target, headers, body):
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        return conn.getresponse()

    @staticmethod
    def _send_head(h, status, headers):
        h.send_response_only(status)
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()

    def _stream(self, h, rec, src, length, fault):
        p = fault.params if fault else {}
        action = fault.action if fault else None
        flip = None
        if action == "corrupt":
            off = p["offset"] if p["offset"] is not None else max(0, length // 2 - p["count"] // 2)
            flip = (off, off + p["count"])
        stop_at = p["after"] if action == "drop" else None
        hold_at = p["after"] if action == "hold" else None
        rate = p.get("rate") if action == "slow" else None
        chunk = 64 * 1024 if not rate else max(1, min(64 * 1024, int(rate / 20)))
        pos = 0
        started = time.monotonic()
        if hold_at == 0:
            p["gate"]._wait(self._stopping)
            hold_at = None
        while pos < length:
            want = min(chunk, length - pos)
            if stop_at is not None:
                want = min(want, stop_at - pos)
            if hold_at is not None:
                want = min(want, hold_at - pos)
            data = src.read(want) if want > 0 else b""
            if want > 0 and not data:
                raise OSError(f"upstream ended after {pos} of {length} bytes")
            if flip and data:
                lo, hi = max(flip[0], pos), min(flip[1], pos + len(data))
                if lo < hi:
                    buf = bytearray(data)
                    for i in range(lo - pos, hi - pos):
                        buf[i] ^= 0xFF
                    data = bytes(buf)
            if data:
                h.wfile.write(data)
            pos += len(data)
            rec.sent = pos
            if stop_at is not None and pos >= stop_at:
                h.close_connection = True
                self._drop_upstream(h)
                _abort(h.connection, reset=p["reset"])
                return
            if hold_at is not None and pos >= hold_at:
                p["gate"]._wait(self._stopping)
                hold_at = None
            if rate:
                ahead = pos / rate - (time.monotonic() - started)
                if ahead > 0:
                    self._stopping.wait(ahead)

    def _oversize(self, h, rec, size, chunked):
        pad = size - len(_json_bytes(_oversize_doc("")))
        doc = _json_bytes(_oversize_doc("x" * max(0, pad)))
        rec.status = 200
        headers = [("Content-Type", MT_OCI_MANIFEST),
                   ("Docker-Content-Digest", "sha256:" + sha256_hex(doc)),
                   ("Docker-Distribution-Api-Version", "registry/2.0")]
        h.send_response_only(200)
        for k, v in headers:
            h.send_header(k, v)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(len(doc)))
        h.end_headers()
        if h.command == "HEAD":
            return
        if chunked:
            for i in range(0, len(doc), 64 * 1024):
                part = doc[i:i + 64 * 1024]
                h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                rec.sent += len(part)
            h.wfile.write(b"0\r\n\r\n")
        else:
            h.wfile.write(doc)
            rec.sent = len(doc)


def _oversize_doc(pad):
    return {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "size": 2,
                       "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
            "layers": [], "annotations": {"pad": pad}}


def _abort(sock, reset=False):
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# addresses that do not work


class DeadAddress:
    """A port on 127.0.0.1 where nothing listens: connecting is refused at
    once. The port stays bound (not listening) until close(), so nothing
    else takes it meanwhile. host, port, url."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"

    def close(self):
        self._sock.close()

    stop = close


class Blackhole(DeadAddress):
    """A port on 127.0.0.1 that completes TCP handshakes and never answers
    (connections wait in the backlog, never accepted): for timeouts."""

    def __init__(self):
        super().__init__()
        self._sock.listen(64)
