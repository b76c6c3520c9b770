# SPDX-License-Identifier: Apache-2.0
"""Fixtures for real registries and what sits around them (see registries.py).

All of them are factories or objects whose processes, threads, ports and
temporary directories are gone when the test ends, whether it passed or not;
when it failed, the tails of their logs are printed first (they appear in
pytest's "Captured stderr teardown").

    pki                 session: test CA, server/client/stranger/token certs
    images              session: OCI layouts of the test images
    registry(...)       a docker-registry; options tls, mtls, auth, token, config
    seed(reg, name, kind="small") -> manifest digest, pushed with skopeo
    nginx_mirror(upstream, prefix="mirror")
    faulty(upstream, tls=False)
    dead                a refused 127.0.0.1 address
    blackhole           a 127.0.0.1 address that never answers
    big_image           session: path of the ~100 MB 6-layer OCI layout
    dockerd             a Docker engine started by hand (skips when it cannot start)
"""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import registries as R


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
               for w in ("setup", "call"))


@pytest.fixture(scope="session")
def _session_dir():
    d = R.make_tempdir("kiln-reg-session-")
    yield d
    R.remove_tree(d)


@pytest.fixture(scope="session")
def pki(_session_dir):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    return R.Pki(_session_dir / "pki")


@pytest.fixture(scope="session")
def images(_session_dir):
    return R.Images(_session_dir / "images")


@pytest.fixture(scope="session")
def big_image():
    """The ~100 MB, 6-layer OCI layout (tag 'big'), cached under
    /var/tmp/kiln-test-cache across sessions."""
    return R.big_image_layout()


class _Scope:
    """Per-test owner: a temporary directory and a cleanup stack."""

    def __init__(self, prefix):
        self.dir = R.make_tempdir(prefix)
        self.stack = R.Stack()
        self.stack.push(R.remove_tree, self.dir)
        self.logs = []
        self.n = 0

    def subdir(self, name):
        self.n += 1
        d = self.dir / f"{self.n:02d}-{name}"
        d.mkdir()
        return d

    def close(self, failed):
        if failed:
            for p in self.logs:
                print(f"----- {p} (tail) -----\n{R.tail(p, 60)}", file=sys.stderr)
        self.stack.close()


@pytest.fixture
def _scope(request):
    s = _Scope("kiln-reg-")
    yield s
    s.close(_failed(request))


def _skip_without(path, package):
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is missing: install {package} (scripts/install-deps)")


@pytest.fixture
def registry(pki, _scope):
    """registry(tls=False, mtls=False, auth=None|'htpasswd'|'token',
    username=None, password=None, token=None (TokenServer options:
    expires_in, get_status, post_status, anonymous, users, service, issuer,
    tls), config=None (dict merged into config.yml), name=None) -> Registry.

    Registry: host url port scheme tls mtls auth ca_path cert key username
    password creds token_server certs_dir dir data_dir config_path log_path
    access_log_path pid; log(), access_log(), wait_access(pred), request(),
    curl_args(), skopeo_args(role), docker_auth(), stop()."""
    _skip_without(R.DOCKER_REGISTRY, "docker-registry")
    count = [0]

    def start(tls=False, mtls=False, auth=None, name=None, **kw):
        count[0] += 1
        name = name or f"registry{count[0]}"
        if auth == "htpasswd" and not shutil.which("htpasswd"):
            pytest.skip("htpasswd is missing: install apache2-utils")
        reg = R.Registry(pki, _scope.subdir(name), tls=tls, mtls=mtls, auth=auth, name=name,
                         **kw)
        _scope.stack.push(reg.stop)
        _scope.logs += [reg.log_path, reg.access_log_path]
        return reg

    return start


@pytest.fixture
def seed(images, _scope):
    """seed(registry, 'library/alpine[:tag]', kind='small') -> digest of the
    pushed manifest (of the index for kind 'index'). Kinds: small (alias
    alpine), v2s2, index, layers12, big. seed.images is the Images object
    (expected layers and manifests: seed.images.get(kind)); seed.inspect(reg,
    'repo:tag') runs skopeo inspect --raw."""
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is missing: install skopeo")
    s = R.Seeder(images, _scope.subdir("skopeo"))
    return s


@pytest.fixture
def nginx_mirror(_scope):
    """nginx_mirror(upstream, prefix='mirror') -> NginxMirror with host, url,
    prefix, mirror ('127.0.0.1:PORT/prefix'), access_log(), wait_access(),
    log_path, pid, stop()."""
    _skip_without(R.NGINX, "nginx-light")

    def start(upstream, prefix="mirror"):
        m = R.NginxMirror(upstream, _scope.subdir("nginx"), prefix=prefix)
        _scope.stack.push(m.stop)
        _scope.logs += [m.log_path, m.access_log_path]
        return m

    return start


@pytest.fixture
def faulty(_scope):
    """faulty(upstream, tls=False) -> FaultyProxy in front of `upstream` (a
    Registry, NginxMirror or another proxy): corrupt() drop() close()
    status() oversize() slow() hold() faults; requests, active, max_active,
    total, connections; find(), wait_requests(), reset_counters(), stop()."""
    def start(upstream, tls=False):
        p = R.FaultyProxy(upstream, tls=tls, pki=getattr(upstream, "pki", None))
        _scope.stack.push(p.stop)
        return p

    return start


@pytest.fixture
def dead():
    """A 127.0.0.1 address that refuses connections: host, port, url."""
    d = R.DeadAddress()
    yield d
    d.close()


@pytest.fixture
def blackhole():
    """A 127.0.0.1 address that accepts TCP connections and never answers."""
    b = R.Blackhole()
    yield b
    b.close()


class Dockerd:
    """A dockerd the test starts by hand: its own data root, exec root,
    pidfile and unix socket under a temporary directory, no iptables, no
    bridge (nothing leaves the machine). host is the DOCKER_HOST value, env
    the environment for a docker client talking to it; docker(*args) runs
    that client."""

    def __init__(self, dir):
        self.dir = dir
        self.sock = dir / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.log_path = dir / "dockerd.log"
        self.client = shutil.which("docker")
        self.env = dict(os.environ, DOCKER_HOST=self.host, DOCKER_CONFIG=str(dir / "client"),
                        HOME=str(dir))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--bridge=none", "--data-root",
                 str(dir / "data"), "--exec-root", str(dir / "exec"), "--pidfile",
                 str(dir / "dockerd.pid"), "-H", self.host],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def answers(self):
        return subprocess.run([self.client, "version"], env=self.env, capture_output=True,
                              timeout=R.TIMEOUT).returncode == 0

    def docker(self, *args, check=True, timeout=None):
        p = subprocess.run([self.client, *map(str, args)], env=self.env, capture_output=True,
                           text=True, timeout=timeout or 4 * R.TIMEOUT)
        if check:
            assert p.returncode == 0, f"docker {' '.join(map(str, args))}:\n{p.stderr}"
        return p

    def stop(self):
        """SIGTERM to dockerd (it stops its containerd), SIGKILL to the whole
        session after 30s; then whatever is still mounted below dir is
        unmounted."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        prefix = str(self.dir) + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture
def dockerd(_scope):
    """A Docker engine of the test's own (Dockerd: host, env, docker(...),
    log_path), stopped and its state removed at teardown even when the test
    failed. Skips, with the reason, when dockerd or the docker client is
    missing, when not root, or when dockerd does not answer within 60s."""
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    if not shutil.which("dockerd") or not shutil.which("docker"):
        pytest.skip("dockerd or docker is missing: install docker.io (scripts/install-deps)")
    # a short directory: the socket's path must fit in 107 bytes
    d = pathlib.Path(tempfile.mkdtemp(prefix="kiln-dockerd-", dir="/tmp"))
    _scope.stack.push(R.remove_tree, d)
    engine = Dockerd(d)
    _scope.stack.push(engine.stop)
    _scope.logs.append(engine.log_path)
    deadline = time.monotonic() + 60
    while not engine.answers():
        if engine.proc.poll() is not None or time.monotonic() > deadline:
            reason = R.tail(engine.log_path, 5).strip().replace("\n", " | ")
            pytest.skip(f"dockerd cannot start here: {reason}")
        time.sleep(0.2)
    return engine
