# SPDX-License-Identifier: Apache-2.0
"""kilnd's first breath: start, answer /v1/info, refuse a second instance,
listen on unix and TCP+mTLS, log like logrus, stop cleanly on signals.

Every test runs real daemons in temporary directories; the `daemons` fixture
kills whatever it started, whatever happens. Readiness is polled with a
deadline, never assumed after a sleep.
"""
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time

import pytest

import kilnhelpers as H
from kilnhelpers import SANITIZER_MARKERS, TIMEOUT, free_port

LOGRUS_LINE = re.compile(r'^time="[0-9T:.+-]+Z?[0-9:+-]*" level=(\w+) msg=')


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX socket."""

    def __init__(self, path, timeout=5.0):
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


def unix_request(sock, method="GET", path="/v1/info", body=None):
    conn = UnixHTTPConnection(sock)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class Daemon(H.Daemon):
    def wait_until(self, ready, what):
        return super().wait_until(ready, what,
                                  errors=(OSError, http.client.HTTPException, ssl.SSLError))

    def wait_unix(self, sock):
        return self.wait_until(lambda: unix_request(sock)[0] == 200, f"{sock} to answer")


@pytest.fixture
def sockdir():
    """A short directory for sockets: sun_path holds only 107 bytes, and
    pytest's tmp_path can be longer than that with a parametrised name."""
    d = tempfile.mkdtemp(prefix="kiln-", dir="/tmp")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemons(kilnd, tmp_path, sockdir):
    """start(*args, config=None, root=None, addr=None, wait=True) runs
    build/kilnd with --root and --addr defaulting into tmp dirs and the config
    text given (none at all by default); every daemon started is killed at
    teardown."""
    started = []

    def start(*args, config=None, root=None, addr=None, sock=None, wait=True, name=None,
              cwd=None):
        n = len(started)
        name = name or f"kilnd{n}"
        sock = pathlib.Path(sock) if sock else sockdir / f"{name}.sock"
        root = pathlib.Path(root) if root else tmp_path / f"root-{name}"
        # Never the host's /etc/buildkit/buildkitd.toml: "--config=" reads no file.
        argv = ["--config="]
        if config is not None:
            cfg = tmp_path / f"{name}.toml"
            cfg.write_text(config)
            argv = ["--config", cfg]
        argv += ["--root", root]
        argv += ["--addr", addr if addr else f"unix://{sock}"]
        argv += list(args)
        d = Daemon(kilnd, argv, tmp_path / f"{name}.log", cwd=cwd)
        d.sock, d.root = sock, root
        d.config = tmp_path / f"{name}.toml" if config is not None else None
        started.append(d)
        if wait and addr is None:
            d.wait_unix(sock)
        return d

    yield start
    for d in started:
        d.kill()
    # Under ASan/UBSan builds, a report in any daemon's output fails the test.
    for d in started:
        log = d.log()
        for marker in SANITIZER_MARKERS:
            assert marker not in log, f"{marker} in {d.log_path}:\n{log}"


def info(sock):
    status, headers, body = unix_request(sock)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


MIRROR_CONFIG = """\
[worker.oci]
  max-parallelism = 4
  networkMode = "host"
  platforms = ["linux/amd64", "linux/arm64"]

[registry."docker.io"]
  mirrors = ["127.0.0.1:5000", "mirror.gcr.io"]

[registry."127.0.0.1:5000"]
  http = true
"""


def test_info_reflects_config_file(daemons, kilnd):
    d = daemons(config=MIRROR_CONFIG)
    got = info(d.sock)
    version = subprocess.run([kilnd, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[-1] == got["version"]
    assert got["pid"] == d.pid
    assert got["root"] == str(d.root)
    cfg = got["config"]
    assert cfg["configFile"] == str(d.config)
    assert cfg["addresses"] == [f"unix://{d.sock}"]
    oci = cfg["worker"]["oci"]
    assert oci["max-parallelism"] == 4
    assert oci["networkMode"] == "host"
    assert oci["platforms"] == ["linux/amd64", "linux/arm64"]
    regs = cfg["registries"]
    assert regs["docker.io"]["mirrors"] == ["127.0.0.1:5000", "mirror.gcr.io"]
    assert regs["127.0.0.1:5000"]["http"] is True
    assert "containerd" not in cfg["worker"]


def test_flags_override_config_file(daemons):
    # bridge: a CNI pool with kiln's own chain, made lazily (no namespace
    # and no bridge exist until a RUN step needs one).
    d = daemons("--oci-max-parallelism", "7", "--oci-worker-net", "bridge",
                "--oci-cni-binary-dir", "/usr/lib/cni", config=MIRROR_CONFIG)
    got = info(d.sock)
    oci = got["config"]["worker"]["oci"]
    assert oci["max-parallelism"] == 7
    assert oci["networkMode"] == "bridge"
    if os.geteuid() == 0:
        assert got["network"] == {"mode": "cni", "pool": {"idle": 0, "inUse": 0, "created": 0,
                                                          "released": 0}}


def test_defaults_without_config_file(daemons, tmp_path):
    # With no file at all, every value is buildkitd's default.
    d = daemons()
    got = info(d.sock)
    assert "configFile" not in got["config"]
    oci = got["config"]["worker"]["oci"]
    assert oci["max-parallelism"] == 0
    assert oci["networkMode"] == "auto"
    assert oci["platforms"], "detected platforms expected"
    assert got["config"]["registries"] == {}


def test_unknown_path_and_wrong_method(daemons):
    d = daemons()
    status, headers, body = unix_request(d.sock, path="/v1/nope")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert "error" in json.loads(body)

    # A body is read before the answer, so the connection stays usable.
    conn = UnixHTTPConnection(d.sock)
    try:
        conn.request("POST", "/v1/info", body=b"x" * 100000)
        resp = conn.getresponse()
        assert resp.status == 405
        assert "GET" in resp.getheader("Allow")
        assert "error" in json.loads(resp.read())
        conn.request("GET", "/v1/info")
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["pid"] == d.pid
    finally:
        conn.close()


def test_request_body_limit(daemons):
    d = daemons()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect(str(d.sock))
        s.sendall(b"POST /v1/info HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413 ")
    finally:
        s.close()

    # A chunked body announces no length: past the limit, kilnd hangs up.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect(str(d.sock))
        s.sendall(b"POST /v1/info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        with pytest.raises(OSError):
            for _ in range(64):  # 4 MiB, past KILN_LIMIT_API_REQUEST
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
            if not s.recv(100):
                raise ConnectionResetError("closed")
    finally:
        s.close()
    assert info(d.sock)["pid"] == d.pid


def test_socket_mode_and_root(daemons, tmp_path, sockdir):
    sock = sockdir / "sub" / "dir" / "kilnd.sock"  # parents are created
    root = tmp_path / "a" / "b" / "root"
    d = daemons(sock=sock, root=root)
    st = os.stat(d.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    lock = root / "kilnd.lock"
    assert lock.read_text().strip() == str(d.pid)


def test_group_owns_socket(daemons, sockdir):
    if os.geteuid() != 0:
        pytest.skip("changing a socket's group to another one needs root")
    sock = sockdir / "grp" / "kilnd.sock"
    d = daemons("--group", "65534", sock=sock)
    st = os.stat(d.sock)
    assert st.st_gid == 65534
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert os.stat(sock.parent).st_gid == 65534, "a created parent belongs to the group too"
    # The group may reach the socket but not replace it.
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o750


def test_relative_root_is_made_absolute(daemons, tmp_path):
    d = daemons(root="./x/../state//kiln/", cwd=tmp_path)
    assert info(d.sock)["root"] == str(tmp_path / "state" / "kiln")
    assert (tmp_path / "state" / "kiln" / "kilnd.lock").exists()


def test_second_daemon_on_same_root_fails_fast(daemons):
    first = daemons(name="first")
    second = daemons(root=first.root, name="second", wait=False)
    rc = second.wait_exit()
    assert rc != 0
    log = second.log()
    assert str(first.root / "kilnd.lock") in log
    assert f"pid {first.pid}" in log
    assert not second.sock.exists()
    # the first one is undisturbed
    assert info(first.sock)["pid"] == first.pid


def test_live_socket_is_address_in_use(daemons):
    first = daemons(name="first")
    second = daemons(sock=first.sock, name="second", wait=False)
    assert second.wait_exit() != 0
    assert "address already in use" in second.log()
    # the second daemon must not have removed the first one's socket
    assert info(first.sock)["pid"] == first.pid


def test_stale_socket_is_replaced(daemons, sockdir):
    path = sockdir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # like a crashed daemon: the file stays, nobody listens
    assert path.exists()
    d = daemons(sock=path)
    assert info(d.sock)["pid"] == d.pid
    assert "removed stale socket" in d.log()


def test_non_socket_file_is_not_replaced(daemons, sockdir):
    path = sockdir / "precious"
    path.write_text("data")
    d = daemons(sock=path, wait=False)
    assert d.wait_exit() != 0
    assert "is not a socket" in d.log()
    assert path.read_text() == "data"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(daemons, sig):
    d = daemons()
    assert d.stop(sig) == 0
    assert not os.path.lexists(d.sock)
    lock = d.root / "kilnd.lock"
    assert lock.exists(), "the lock file stays, as buildkitd's"
    log = d.log()
    assert re.search(r"level=info msg=stopping .*signal=" + sig.name, log), log
    assert "level=info msg=stopped" in log
    # the lock was released: a new daemon takes the same root at once
    again = daemons(root=d.root, sock=d.sock, name="again")
    assert info(again.sock)["pid"] == again.pid


def test_start_is_logged(daemons):
    d = daemons(config="")
    log = d.log()
    start = next(l for l in log.splitlines() if "msg=\"starting kilnd\"" in l)
    assert LOGRUS_LINE.match(start)
    assert "level=info" in start
    assert f"pid={d.pid}" in start
    assert f"root={d.root}" in start
    assert f"config={d.config}" in start
    assert re.search(r"version=\d", start)
    assert f'msg="running server on {d.sock}"' in log


def _request_lines(log, level="debug"):
    return [
        l
        for l in log.splitlines()
        if f"level={level} msg=request" in l and "path=/v1/info" in l and "status=200" in l
    ]


def test_debug_flag_logs_requests_logrus_style(daemons):
    d = daemons("--debug")
    info(d.sock)
    lines = d.wait_until(lambda: _request_lines(d.log()), "the request log line")
    assert LOGRUS_LINE.match(lines[0]), lines[0]
    assert re.search(r" method=GET path=/v1/info status=200$", lines[0]), lines[0]
    for line in d.log().splitlines():
        assert LOGRUS_LINE.match(line), line


def test_debug_true_in_config_logs_requests(daemons):
    d = daemons(config="debug = true\n")
    info(d.sock)
    d.wait_until(lambda: _request_lines(d.log()), "the request log line")


def test_info_level_does_not_log_requests(daemons):
    d = daemons()
    info(d.sock)
    d.stop()
    assert "level=debug" not in d.log()


def test_json_log_format(daemons):
    d = daemons("--log-format", "json", "--debug")
    info(d.sock)
    d.stop()
    entries = [json.loads(l) for l in d.log().splitlines() if l.strip()]
    assert entries
    for e in entries:
        assert {"level", "msg", "time"} <= set(e), e
    assert any(e["msg"] == "starting kilnd" and e["pid"] == str(d.pid) for e in entries)
    assert any(
        e["msg"] == "request" and e["level"] == "debug" and e["path"] == "/v1/info"
        for e in entries
    )
    assert entries[-1]["msg"] == "stopped"


def test_config_warnings_are_logged(daemons):
    d = daemons(config="[worker.oci]\nmaxParallelism = 4\n")
    log = d.log()
    warn = [l for l in log.splitlines() if "level=warning" in l]
    assert any(re.search(re.escape(str(d.config)) + r":\d+:\d+: ", l) for l in warn), log


def test_containerd_worker_warned_once(daemons):
    d = daemons(config="[worker.containerd]\nenabled = true\n")
    lines = [l for l in d.log().splitlines() if "[worker.containerd]" in l]
    assert len(lines) == 1, lines
    assert "level=warning" in lines[0]
    assert info(d.sock)["config"]["worker"]["containerd"] == {"enabled": True, "supported": False}


def test_tcp_without_tls_refused(daemons):
    port = free_port()
    d = daemons(addr=f"tcp://127.0.0.1:{port}")
    assert d.wait_exit() != 0
    log = d.log()
    assert "--tlscert" in log and "TLS" in log, log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_bad_address_refused(daemons):
    d = daemons(addr="http://127.0.0.1:1")
    assert d.wait_exit() != 0
    assert "http://127.0.0.1:1" in d.log()
    assert not os.path.exists(d.root), "nothing is created for a bad address"


@pytest.fixture
def pki(tmp_path):
    return H.make_pki(tmp_path / "pki")


def start_tls(daemons, pki, *extra):
    port = free_port()
    d = daemons(
        "--tlscert", pki / "server.crt", "--tlskey", pki / "server.key", *extra,
        addr=f"tcp://127.0.0.1:{port}",
    )
    deadline = time.monotonic() + TIMEOUT
    while "running server on" not in d.log():
        if d.proc.poll() is not None:
            if "TLS is not supported" in d.log():
                pytest.skip("this libmicrohttpd was built without TLS support")
            pytest.fail("kilnd exited:\n" + d.log())
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the TCP listener:\n" + d.log())
        time.sleep(0.02)
    return d, port


def curl(port, pki, *args):
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", pki / "ca.crt", *args,
         f"https://127.0.0.1:{port}/v1/info"],
        capture_output=True, text=True,
    )


def test_tcp_mutual_tls(daemons, pki):
    d, port = start_tls(daemons, pki, "--tlscacert", pki / "ca.crt")

    ok = curl(port, pki, "--cert", pki / "client.crt", "--key", pki / "client.key")
    assert ok.returncode == 0, ok.stderr + d.log()
    got = json.loads(ok.stdout)
    assert got["pid"] == d.pid
    assert got["config"]["addresses"] == [f"tcp://127.0.0.1:{port}"]

    anonymous = curl(port, pki)
    assert anonymous.returncode != 0, anonymous.stdout
    assert '"pid"' not in anonymous.stdout

    stranger = curl(port, pki, "--cert", pki / "stranger.crt", "--key", pki / "stranger.key")
    assert stranger.returncode != 0, stranger.stdout
    assert '"pid"' not in stranger.stdout

    # Python's ssl agrees: no certificate, no answer.
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/v1/info")
            conn.getresponse().read()
        finally:
            conn.close()

    assert d.stop() == 0


def test_tcp_tls_without_client_ca(daemons, pki):
    d, port = start_tls(daemons, pki)
    ok = curl(port, pki)
    assert ok.returncode == 0, ok.stderr + d.log()
    assert json.loads(ok.stdout)["pid"] == d.pid


def test_tls_on_unix_socket_is_warned(daemons, pki):
    d = daemons("--tlscert", pki / "server.crt", "--tlskey", pki / "server.key")
    assert re.search(r'level=warning msg="TLS is disabled for unix://', d.log()), d.log()


def test_version_and_help(kilnd):
    v = subprocess.run([kilnd, "--version"], capture_output=True, text=True, timeout=TIMEOUT)
    assert v.returncode == 0
    assert re.match(r"^kilnd github\.com/kiln \S+\n$", v.stdout), v.stdout
    h = subprocess.run([kilnd, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert h.returncode == 0
    assert "--addr" in h.stdout and "--validate" in h.stdout


def test_validate(kilnd, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(MIRROR_CONFIG + "\n[worker.oci.extra]\n")
    r = subprocess.run([kilnd, "--validate", "--config", good, "--oci-max-parallelism", "2"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    effective = json.loads(r.stdout)
    assert effective["worker"]["oci"]["max-parallelism"] == 2
    assert effective["registry"]["docker.io"]["mirrors"] == ["127.0.0.1:5000", "mirror.gcr.io"]
    assert r.stdout.startswith("{\n"), "pretty-printed"
    assert f"{good}:" in r.stderr and "warning" in r.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[worker.oci]\nmax-parallelism = "4"\n')
    r = subprocess.run([kilnd, "--validate", "--config", bad], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 1
    assert r.stdout == ""
    assert re.search(re.escape(str(bad)) + r":2:\d+: error", r.stderr), r.stderr


def test_unusable_config_refuses_to_start(daemons):
    d = daemons(config='[worker.oci]\nmax-parallelism = "4"\n', wait=False)
    assert d.wait_exit() != 0
    assert re.search(re.escape(str(d.config)) + r":2:\d+: ", d.log()), d.log()
    assert not d.sock.exists()
