# SPDX-License-Identifier: Apache-2.0
"""Builder instances: kiln create, use, ls, inspect, stop, rm and logs, with
the local driver (kilnd as a background process per builder) and the remote
driver (a kilnd that runs already, on a unix socket or on TCP with mutual
TLS), the implicit `default` builder, and the errors a script can trust.

Every test has its own KILN_CONFIG. The `k` fixture kills every kilnd whose
--root lies in that directory when the test ends, whatever happened; the
`remote` fixture does the same for the daemons a test starts itself.
Readiness and exits are waited for with a deadline, never after a sleep.
"""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest

# Generous: the suite also runs under AddressSanitizer.
TIMEOUT = float(os.environ.get("KILN_TEST_TIMEOUT", "20"))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
# A unix socket path holds at most 107 bytes; builders/<name>/kilnd.sock is
# appended to KILN_CONFIG.
MAX_STATE_DIR = 60


def wait_for(cond, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def alive(pid):
    """A process that runs: zombies have an empty cmdline."""
    return bool(cmdline(pid)[:1] and cmdline(pid)[0])


def kilnd_pids(root_prefix):
    """kilnd processes whose --root is below root_prefix."""
    prefix = str(root_prefix).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cmd = cmdline(entry)
        if not cmd or not cmd[0].endswith(b"kilnd"):
            continue
        for i, arg in enumerate(cmd[:-1]):
            if arg == b"--root" and cmd[i + 1].startswith(prefix):
                found.append(int(entry))
    return found


def terminate(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Kiln:
    """Runs build/kiln with its own KILN_CONFIG."""

    def __init__(self, binary, state, home):
        self.binary = binary
        self.state = state
        self.env = dict(os.environ, KILN_CONFIG=str(state), HOME=str(home))
        self.env.pop("KILN_BUILDER", None)

    def run(self, *args, check=False, env=None, cwd=None, timeout=TIMEOUT * 3):
        p = subprocess.run(
            [str(self.binary), *map(str, args)], capture_output=True, text=True,
            timeout=timeout, env=dict(self.env, **(env or {})), cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        for marker in SANITIZER_MARKERS:
            assert marker not in p.stderr, p.stderr
        if check:
            assert p.returncode == 0, f"kiln {' '.join(map(str, args))}:\n{p.stderr}"
        return p

    def ok(self, *args, **kw):
        return self.run(*args, check=True, **kw)

    def fails(self, *args, **kw):
        p = self.run(*args, **kw)
        assert p.returncode == 1, f"kiln {' '.join(map(str, args))} exited {p.returncode}"
        assert p.stderr.startswith("ERROR: ") or "\nERROR: " in p.stderr, p.stderr
        return p

    def dir(self, name):
        return self.state / "builders" / name

    def pid(self, name):
        return int((self.dir(name) / "kilnd.pid").read_text())

    def ls(self):
        """kiln ls --format json, by builder name."""
        out = self.ok("ls", "--format", "json").stdout
        return {b["Name"]: b for b in map(json.loads, out.splitlines())}

    def status(self, name):
        return self.ls()[name]["Nodes"][0]["Status"]

    def inspect(self, *args):
        """kiln inspect, as a dict of its "Key: value" lines (the node's
        lines win over the builder's)."""
        out = self.ok("inspect", *args).stdout
        fields = {}
        for line in out.splitlines():
            m = re.match(r"^\s*([A-Za-z][A-Za-z .-]*):\s+(.*)$", line)
            if m:
                fields[m.group(1).strip()] = m.group(2).strip()
        fields["_text"] = out
        return fields


@pytest.fixture
def k(kiln, tmp_path):
    """A kiln with its own state directory; at teardown every kilnd started
    for it is stopped, and their logs are checked for sanitizer reports."""
    short = None
    if len(str(tmp_path)) <= MAX_STATE_DIR:
        state = tmp_path / "k"
    else:
        short = pathlib.Path(tempfile.mkdtemp(prefix="kiln-", dir="/tmp"))
        state = short / "k"
    cli = Kiln(kiln, state, tmp_path)
    yield cli
    terminate(kilnd_pids(state))
    for log in state.glob("builders/*/kilnd.log"):
        text = log.read_text(errors="replace")
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"{marker} in {log}:\n{text}"
    if short:
        shutil.rmtree(short, ignore_errors=True)


class Daemon:
    """A kilnd the test runs itself, for the remote driver."""

    def __init__(self, kilnd, args, log_path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([str(kilnd), *map(str, args)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return pathlib.Path(self.log_path).read_text(errors="replace")

    def wait_log(self, needle):
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"kilnd exited with {self.proc.returncode}:\n{self.log()}")
            return needle in self.log()
        wait_for(ready, f"'{needle}' in the kilnd log")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def remote(kilnd, tmp_path):
    started = []
    dirs = []

    def start(*args, addr):
        n = len(started)
        d = pathlib.Path(tempfile.mkdtemp(prefix="kiln-r-", dir="/tmp"))
        dirs.append(d)
        daemon = Daemon(kilnd, ["--root", d / "root", "--addr", addr, *args],
                        tmp_path / f"remote{n}.log")
        daemon.root = d / "root"
        started.append(daemon)
        daemon.wait_log("running server on")
        return daemon

    def sock():
        d = pathlib.Path(tempfile.mkdtemp(prefix="kiln-s-", dir="/tmp"))
        dirs.append(d)
        return d / "kilnd.sock"

    start.sock = sock
    yield start
    for daemon in started:
        daemon.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    for daemon in started:
        for marker in SANITIZER_MARKERS:
            assert marker not in daemon.log(), daemon.log()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    (d / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr",
            cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-signkey", f"{name}.key", "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


def make_cert(d, name, ca, usage, san="IP:127.0.0.1"):
    ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    ext += f"extendedKeyUsage={usage}\n"
    if usage == "serverAuth":
        ext += f"subjectAltName={san}\n"
    (d / f"{name}.ext").write_text(ext)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr",
            cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
            cwd=d)


@pytest.fixture
def pki(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d, "ca")
    make_cert(d, "server", "ca", "serverAuth")
    make_cert(d, "client", "ca", "clientAuth")
    make_ca(d, "other-ca")
    make_cert(d, "stranger", "other-ca", "clientAuth")
    make_cert(d, "named", "ca", "serverAuth", san="DNS:kilnd.test")
    return d


MIRROR_CONFIG = """\
debug = true

[registry."docker.io"]
  mirrors = ["127.0.0.1:5000"]
"""


# ---- the command line ----


def test_help_version_and_usage_errors(k):
    h = k.ok("--help").stdout
    for verb in ("create", "use", "ls", "inspect", "stop", "rm", "logs", "version"):
        assert re.search(rf"^  {verb} +\S", h, re.M), h
    assert "--builder string" in h
    c = k.ok("create", "--help").stdout
    assert c.startswith("\nUsage:  kiln create [OPTIONS] [ENDPOINT]\n")
    for flag in ("--name string", "--driver string", "--config string", "--buildkitd-flags string",
                 "--driver-opt stringArray", "--use", "--bootstrap", "--append"):
        assert flag in c, c
    assert '"local", "remote"' in c
    assert "--builder" in k.ok("inspect", "--help").stdout
    assert re.match(r"^kiln github\.com/kiln \d+\.\d+\.\d+\n$", k.ok("version").stdout)

    p = k.fails("frobnicate")
    assert 'unknown command: "frobnicate"' in p.stderr
    p = k.fails("ls", "--bogus")
    assert "unknown flag: --bogus" in p.stderr and "kiln ls --help" in p.stderr
    p = k.fails("inspect", "a", "b")
    assert "requires at most 1 argument" in p.stderr
    p = k.fails("create", "--name")
    assert "flag needs an argument: --name" in p.stderr
    assert not (k.state / "builders").exists() or not os.listdir(k.state / "builders")


# ---- the default builder ----


def test_implicit_default_builder(k):
    builders = k.ls()
    assert list(builders) == ["default"]
    d = builders["default"]
    assert d["Current"] is True and d["Driver"] == "local"
    assert d["Nodes"][0]["Status"] == "inactive"
    assert not k.dir("default").exists(), "ls must not create anything"

    table = k.ok("ls").stdout.splitlines()
    assert re.match(r"^NAME/NODE\s+DRIVER/ENDPOINT\s+STATUS\s+BUILDKIT\s+PLATFORMS$", table[0])
    assert re.match(r"^default\*\s+local$", table[1]), table
    assert re.match(r"^ \\_ default0\s+ \\_ unix://\S+/builders/default/kilnd\.sock\s+inactive$",
                    table[2]), table

    info = k.inspect("--bootstrap")
    assert info["Name"] == "default0" and info["Driver"] == "local"
    assert info["Status"] == "running"
    pid = int(info["PID"])
    assert alive(pid)
    # No --config and no buildkitd.default.toml: an empty configuration,
    # never the host's /etc/buildkit/buildkitd.toml.
    config = k.dir("default") / "etc" / "buildkit" / "buildkitd.toml"
    assert info["Config File"] == str(config)
    assert "Config Source" not in info
    assert all(l.startswith("#") for l in config.read_text().splitlines())

    assert k.status("default") == "running"
    k.ok("stop")
    wait_for(lambda: not alive(pid), "the default builder's kilnd to exit")
    assert k.status("default") == "stopped"


def test_default_builder_takes_buildkitd_default_toml(k):
    k.state.mkdir(parents=True)
    (k.state / "buildkitd.default.toml").write_text("[worker.oci]\nmax-parallelism = 5\n")
    info = k.inspect("--bootstrap")
    assert info["Max Parallelism"] == "5"
    assert info["Config Source"] == str(k.state / "buildkitd.default.toml")
    k.ok("create", "--name", "other", "--bootstrap")
    assert k.inspect("other")["Max Parallelism"] == "5"
    # the default builder is listed last, written to disk or not
    assert list(k.ls()) == ["other", "default"]


# ---- local builders ----


def test_local_builder_lifecycle(k):
    p = k.ok("create", "--name", "mybuilder", "--use", "--bootstrap")
    assert p.stdout == "mybuilder\n"

    builders = k.ls()
    assert list(builders) == ["mybuilder", "default"]
    assert builders["mybuilder"]["Current"] and not builders["default"]["Current"]
    node = builders["mybuilder"]["Nodes"][0]
    assert node["Status"] == "running"
    assert node["Name"] == "mybuilder0"
    assert node["Endpoint"] == f"unix://{k.dir('mybuilder')}/kilnd.sock"
    assert node["Version"] and node["Platforms"]
    table = k.ok("ls").stdout
    assert re.search(r"^mybuilder\*\s+local$", table, re.M), table
    assert re.search(r"^ \\_ mybuilder0\s+ \\_ unix://\S+\s+running\s+\d+\.\d+\.\d+\s+linux/",
                     table, re.M), table

    # inspect, of the current builder: where everything is
    d = k.dir("mybuilder")
    info = k.inspect()
    assert info["Driver"] == "local"
    assert info["Status"] == "running"
    assert info["Config File"] == str(d / "etc/buildkit/buildkitd.toml")
    assert info["Certs Directory"] == str(d / "etc/buildkit/certs")
    assert info["Root"] == str(d / "root")
    assert info["Log"] == str(d / "kilnd.log")
    pid = int(info["PID"])
    assert pid == k.pid("mybuilder")
    assert info["Network Mode"] == "auto"
    assert info["Max Parallelism"] == "unlimited"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    # The daemon runs on exactly the files inspect names.
    cmd = [a.decode() for a in cmdline(pid)]
    assert cmd[1:7] == ["--config", str(d / "etc/buildkit/buildkitd.toml"), "--root",
                        str(d / "root"), "--addr", f"unix://{d}/kilnd.sock"]

    # logs: the daemon's own log
    logs = k.ok("logs").stdout
    assert 'msg="starting kilnd"' in logs and f"pid={pid}" in logs

    # stop: SIGTERM, waited for
    k.ok("stop", "mybuilder")
    assert not alive(pid)
    assert not (d / "kilnd.sock").exists()
    assert k.status("mybuilder") == "stopped"
    assert "msg=stopped" in k.ok("logs", "mybuilder").stdout
    k.ok("stop", "mybuilder")  # stopping a stopped builder is fine

    # a command that needs the daemon starts it again
    info = k.inspect("--bootstrap", "mybuilder")
    assert info["Status"] == "running"
    pid2 = int(info["PID"])
    assert pid2 != pid
    assert k.ok("logs", "mybuilder").stdout.count('msg="starting kilnd"') == 2

    # rm stops it, removes everything and resets the current builder
    p = k.ok("rm", "mybuilder")
    assert "mybuilder removed" in p.stderr
    assert not alive(pid2)
    assert not d.exists()
    builders = k.ls()
    assert list(builders) == ["default"] and builders["default"]["Current"]


def test_create_generates_a_name(k):
    name = k.ok("create").stdout.strip()
    assert re.fullmatch(r"[a-z]+_[a-z]+", name), name
    assert name in k.ls()
    assert json.loads((k.dir(name) / "builder.json").read_text())["name"] == name
    other = k.ok("create").stdout.strip()
    assert other != name or re.fullmatch(r"[a-z]+_[a-z]+\d", other)


def test_names_are_checked_and_lowercased(k):
    assert k.ok("create", "--name", "MyBuilder").stdout == "mybuilder\n"
    assert k.inspect("MYBUILDER")["Name"] == "mybuilder0"
    p = k.fails("create", "--name", "1bad")
    assert "invalid name 1bad" in p.stderr
    p = k.fails("create", "--name", "default")
    assert "default is a reserved name" in p.stderr
    p = k.fails("create", "--name", "mybuilder")
    assert 'existing instance for "mybuilder" but no append mode' in p.stderr
    p = k.fails("create", "--append", "--name", "ghost")
    assert 'failed to find instance "ghost" for append' in p.stderr
    p = k.fails("create", "--append")
    assert "append requires a builder name" in p.stderr


def test_buildkitd_flags_reach_the_daemon(k):
    k.ok("create", "--name", "flags", "--bootstrap", "--buildkitd-flags",
         "--oci-max-parallelism 3 --debug --oci-worker-net 'host'")
    info = k.inspect("flags")
    assert info["Max Parallelism"] == "3"
    assert info["Network Mode"] == "host"
    assert info["BuildKit daemon flags"] == "--oci-max-parallelism 3 --debug --oci-worker-net host"
    assert json.loads((k.dir("flags") / "builder.json").read_text())["flags"] == [
        "--oci-max-parallelism", "3", "--debug", "--oci-worker-net", "host"]
    # --debug: the daemon logs our requests
    wait_for(lambda: "level=debug msg=request" in k.ok("logs", "flags").stdout,
             "a debug line in the log")

    # --append changes them; the running daemon keeps the old ones until restarted
    p = k.ok("create", "--append", "--name", "flags", "--buildkitd-flags",
             "--oci-max-parallelism=2")
    assert "new settings may not be used until builder is restarted" in p.stderr
    assert k.inspect("flags")["Max Parallelism"] == "3"
    k.ok("stop", "flags")
    assert k.inspect("--bootstrap", "flags")["Max Parallelism"] == "2"


def test_bad_buildkitd_flags_fail_create(k):
    p = k.fails("create", "--name", "typo", "--buildkitd-flags", "--oci-max-paralelism 3")
    assert 'builder "typo"' in p.stderr
    assert "--oci-max-paralelism" in p.stderr and "--oci-max-parallelism" in p.stderr
    p = k.fails("create", "--name", "quote", "--buildkitd-flags", "--debug 'oops")
    assert "unterminated single quote" in p.stderr
    assert "typo" not in k.ls() and "quote" not in k.ls()
    assert not k.dir("typo").exists() and not k.dir("quote").exists()


def test_daemon_dying_at_start_shows_its_log(k):
    # Valid flags, an impossible root: kilnd starts and exits at once.
    k.ok("create", "--name", "doomed", "--buildkitd-flags", "--root /proc/kiln/nope")
    p = k.fails("inspect", "--bootstrap", "doomed")
    assert 'builder "doomed"' in p.stderr
    assert "kilnd exited with status 1" in p.stderr
    assert "/proc/kiln/nope" in p.stderr, "the end of the log is shown"
    assert k.status("doomed") != "running"
    assert kilnd_pids(k.state) == []


def test_sigkilled_daemon_is_stopped_and_restarted(k):
    k.ok("create", "--name", "victim", "--bootstrap")
    pid = k.pid("victim")
    sock = k.dir("victim") / "kilnd.sock"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), "the killed kilnd to be gone")
    assert sock.exists(), "SIGKILL leaves the socket file behind"

    assert k.status("victim") == "stopped"
    assert re.search(r"victim0 .* stopped", k.ok("ls").stdout)
    assert k.inspect("victim")["Status"] == "stopped"

    info = k.inspect("--bootstrap", "victim")
    assert info["Status"] == "running"
    assert int(info["PID"]) != pid and alive(int(info["PID"]))
    assert "removed stale socket" in k.ok("logs", "victim").stdout


def test_concurrent_bootstraps_start_one_daemon(k):
    k.ok("create", "--name", "race")
    procs = [subprocess.Popen([str(k.binary), "inspect", "--bootstrap", "race"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=k.env) for _ in range(3)]
    outs = [p.communicate(timeout=TIMEOUT * 3) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert not any(marker in err for marker in SANITIZER_MARKERS), err
    pids = {re.search(r"^PID:\s+(\d+)$", out, re.M).group(1) for out, _ in outs}
    assert len(pids) == 1
    assert kilnd_pids(k.dir("race")) == [int(pids.pop())]


def test_logs_follow(k):
    k.ok("create", "--name", "chatty", "--bootstrap")
    pid = k.pid("chatty")
    out = tempfile.TemporaryFile(mode="w+")
    # A shell's background job ignores SIGINT, and children inherit that:
    # the interrupt this test sends must be the default one, as at a terminal.
    follow = subprocess.Popen([str(k.binary), "logs", "-f", "chatty"], stdout=out,
                              stderr=subprocess.PIPE, env=k.env,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def seen(needle):
            out.seek(0)
            return needle in out.read()
        wait_for(lambda: seen('msg="starting kilnd"'), "the log so far")
        k.ok("stop", "chatty")
        wait_for(lambda: seen("msg=stopped"), "lines written after -f started")
        k.ok("inspect", "--bootstrap", "chatty")
        wait_for(lambda: seen(f"pid={k.pid('chatty')}"), "the restarted daemon's lines")
        assert k.pid("chatty") != pid
        assert follow.poll() is None, "-f follows until interrupted"
    finally:
        follow.send_signal(signal.SIGINT)
        try:
            assert follow.wait(timeout=TIMEOUT) == -signal.SIGINT
        finally:
            follow.kill()
            follow.wait()
            out.close()


def test_logs_of_a_builder_that_never_ran(k):
    k.ok("create", "--name", "quiet")
    assert k.ok("logs", "quiet").stdout == ""


def test_rm_keep_state(k):
    k.ok("create", "--name", "keeper", "--bootstrap")
    root = k.dir("keeper") / "root"
    marker = root / "marker"
    marker.write_text("state")
    k.ok("rm", "--keep-state", "keeper")
    assert "keeper" not in k.ls()
    assert marker.read_text() == "state"
    assert sorted(os.listdir(k.dir("keeper"))) == ["root"]
    assert kilnd_pids(k.dir("keeper")) == []

    # A new builder of that name takes the state over.
    k.ok("create", "--name", "keeper", "--bootstrap")
    assert marker.read_text() == "state"
    assert k.inspect("keeper")["Root"] == str(root)
    k.ok("rm", "keeper")
    assert not k.dir("keeper").exists()


def test_use_builder_flag_and_env(k):
    k.ok("create", "--name", "one")
    k.ok("create", "--name", "two")
    assert k.ls()["default"]["Current"]

    k.ok("use", "one")
    assert k.ls()["one"]["Current"]
    assert (k.state / "current").read_text() == "one\n"
    assert k.inspect()["Name"] == "one0"
    # --builder and KILN_BUILDER choose for one command only
    assert k.inspect("--builder", "two")["Name"] == "two0"
    assert k.ok("--builder", "two", "inspect").stdout.count("Name:") == 2
    assert "two0" in k.ok("--builder=two", "inspect").stdout
    assert "two0" in k.ok("inspect", env={"KILN_BUILDER": "two"}).stdout
    assert k.ls()["one"]["Current"]
    p = k.fails("inspect", env={"KILN_BUILDER": "nope"})
    assert 'no builder "nope" found' in p.stderr

    # --default: the builder to fall back to when the current one goes away
    k.ok("use", "--default", "two")
    assert k.ls()["two"]["Current"]
    k.ok("create", "--name", "three", "--use")
    assert k.ls()["three"]["Current"]
    k.ok("rm", "three")
    assert k.ls()["two"]["Current"]
    k.ok("use", "default")
    assert k.ls()["default"]["Current"]
    k.ok("use", "--default", "default")
    k.ok("use", "one")
    k.ok("rm", "one")
    assert k.ls()["default"]["Current"]

    p = k.fails("use", "nope")
    assert 'no builder "nope" found' in p.stderr
    p = k.fails("use")
    assert "requires exactly 1 argument" in p.stderr


def test_unknown_builder_errors(k):
    for verb in ("inspect", "stop", "rm", "logs"):
        p = k.fails(verb, "nope")
        assert 'no builder "nope" found' in p.stderr, (verb, p.stderr)
    p = k.fails("rm", "nope")
    assert "failed to remove nope" in p.stderr


def test_broken_builder_json(k):
    k.ok("create", "--name", "good")
    k.ok("create", "--name", "bad")
    (k.dir("bad") / "builder.json").write_text("{")
    p = k.ok("ls")
    assert re.search(r"^bad\s+error$", p.stdout, re.M), p.stdout
    assert "Cannot load builder bad: " in p.stderr and "builder.json" in p.stderr
    assert k.status("good") == "inactive"
    p = k.fails("inspect", "bad")
    assert "builder.json" in p.stderr
    # it can still be removed
    p = k.ok("rm", "bad")
    assert "bad removed" in p.stderr
    assert not k.dir("bad").exists()


@pytest.mark.parametrize("driver", ["docker-container", "kubernetes", "docker", "lambda"])
def test_unknown_driver(k, driver):
    p = k.fails("create", "--name", "x", "--driver", driver)
    assert f'"{driver}"' in p.stderr
    assert '"local", "remote"' in p.stderr
    assert not k.dir("x").exists()


def test_bad_config_fails_with_position_and_leaves_nothing(k, tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('debug = true\n[worker.oci]\nmax-parallelism = "4"\n')
    p = k.fails("create", "--name", "broken", "--config", conf)
    assert re.search(re.escape(str(conf)) + r":3:\d+: error", p.stderr), p.stderr
    assert 'builder "broken"' in p.stderr
    assert not k.dir("broken").exists()
    assert "broken" not in k.ls()

    missing = tmp_path / "missing.toml"
    p = k.fails("create", "--name", "broken", "--config", missing)
    assert str(missing) in p.stderr
    assert not k.dir("broken").exists()


def test_config_warnings_are_shown_and_create_succeeds(k, tmp_path):
    conf = tmp_path / "warn.toml"
    conf.write_text("[worker.oci]\nmaxParallelism = 4\n")
    p = k.ok("create", "--name", "warned", "--config", conf)
    assert re.search(re.escape(str(conf)) + r":2:\d+: warning", p.stderr), p.stderr
    assert p.stdout == "warned\n"


def test_documented_mirror_config(k, tmp_path):
    conf = tmp_path / "buildkitd.toml"
    conf.write_text(MIRROR_CONFIG)
    assert k.ok("create", "--use", "--bootstrap", "--name", "mybuilder", "--driver", "local",
                "--config", conf).stdout == "mybuilder\n"
    info = k.inspect()
    assert info["Config Source"] == str(conf)
    assert info["docker.io"] == "mirrors=127.0.0.1:5000"
    assert info["Log Level"] == "debug"
    copy = pathlib.Path(info["Config File"])
    assert copy.read_text() == MIRROR_CONFIG
    wait_for(lambda: re.search(r'^time="[^"]+" level=debug msg=', k.ok("logs", "mybuilder").stdout,
                               re.M), "logrus debug lines in kiln logs")


def test_socket_path_too_long(kiln, tmp_path):
    state = tmp_path / ("x" * 100)
    p = Kiln(kiln, state, tmp_path).run("create", "--name", "deep")
    assert p.returncode == 1
    assert "longer than 107 bytes" in p.stderr and "KILN_CONFIG" in p.stderr
    assert not (state / "builders" / "deep").exists()


# ---- remote builders ----


def test_remote_over_unix_socket(k, remote):
    sock = remote.sock()
    d = remote(addr=f"unix://{sock}")
    # an endpoint alone means the remote driver
    assert k.ok("create", "--name", "far", f"unix://{sock}").stdout == "far\n"
    k.ok("create", "--name", "far2", "--driver", "remote", f"unix://{sock}", "--bootstrap")
    node = k.ls()["far"]["Nodes"][0]
    assert node["Status"] == "running" and node["Endpoint"] == f"unix://{sock}"
    info = k.inspect("far")
    assert info["Driver"] == "remote"
    assert int(info["PID"]) == d.pid
    assert info["Root"] == str(d.root)
    assert "Log" not in info and "Config File" not in info

    p = k.fails("logs", "far")
    assert "remote driver" in p.stderr
    # stop and rm leave a daemon kiln did not start alone, as buildx does
    k.ok("stop", "far")
    k.ok("rm", "far")
    assert d.proc.poll() is None
    assert k.status("far2") == "running"

    d.kill()
    assert k.status("far2") == "inactive"
    p = k.fails("inspect", "--bootstrap", "--timeout", "1s", "far2")
    assert 'builder "far2"' in p.stderr and str(sock) in p.stderr


def test_remote_tcp_mutual_tls(k, remote, pki, tmp_path):
    port = free_port()
    d = remote("--tlscert", pki / "server.crt", "--tlskey", pki / "server.key",
               "--tlscacert", pki / "ca.crt", addr=f"tcp://127.0.0.1:{port}")
    ep = f"tcp://127.0.0.1:{port}"

    # Copies of the client's files, as the docker CLI keeps a context's TLS
    # files: the originals may go away.
    client = tmp_path / "client"
    client.mkdir()
    for f in ("ca.crt", "client.crt", "client.key"):
        shutil.copy(pki / f, client / f)
    opts = f"cacert={client}/ca.crt,cert={client}/client.crt,key={client}/client.key"
    assert k.ok("create", "--name", "tls", "--driver", "remote", "--driver-opt", opts, ep,
                "--bootstrap").stdout == "tls\n"
    shutil.rmtree(client)
    tls = k.dir("tls") / "tls"
    assert sorted(os.listdir(tls)) == ["ca.pem", "cert.pem", "key.pem"]
    assert stat.S_IMODE(os.stat(tls / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
    info = k.inspect("tls")
    assert info["Status"] == "running"
    assert int(info["PID"]) == d.pid
    assert info["TLS Directory"] == str(tls)
    assert f'cacert="{client}/ca.crt"' in info["Driver Options"]
    assert k.status("tls") == "running"

    # Without a client certificate the daemon refuses, and kiln says so.
    k.ok("create", "--name", "nocert", "--driver", "remote", "--driver-opt",
         f"cacert={pki}/ca.crt", ep)
    p = k.fails("inspect", "--bootstrap", "nocert")
    assert 'builder "nocert"' in p.stderr
    assert ep in p.stderr
    assert "client certificate" in p.stderr
    assert k.status("nocert") == "inactive"
    assert '"pid"' not in p.stdout

    # A certificate from another CA is refused too.
    k.ok("create", "--name", "stranger", "--driver", "remote", "--driver-opt",
         f"cacert={pki}/ca.crt,cert={pki}/stranger.crt,key={pki}/stranger.key", ep)
    p = k.fails("inspect", "--bootstrap", "stranger")
    assert 'builder "stranger"' in p.stderr
    assert k.status("stranger") == "inactive"

    # A daemon certificate that is not trusted fails on the client side.
    k.ok("create", "--name", "untrusting", "--driver", "remote", "--driver-opt",
         f"cacert={pki}/other-ca.crt,cert={pki}/client.crt,key={pki}/client.key", ep)
    p = k.fails("inspect", "--bootstrap", "untrusting")
    assert 'builder "untrusting"' in p.stderr

    # --append refreshes the TLS copies.
    k.ok("create", "--append", "--name", "nocert", "--driver-opt",
         f"cacert={pki}/ca.crt,cert={pki}/client.crt,key={pki}/client.key")
    assert k.inspect("--bootstrap", "nocert")["Status"] == "running"
    assert d.proc.poll() is None


def test_remote_tcp_servername(k, remote, pki):
    # A daemon whose certificate names a host, not the address kiln dials.
    port = free_port()
    remote("--tlscert", pki / "named.crt", "--tlskey", pki / "named.key",
           "--tlscacert", pki / "ca.crt", addr=f"tcp://127.0.0.1:{port}")
    ep = f"tcp://127.0.0.1:{port}"
    tls = f"cacert={pki}/ca.crt,cert={pki}/client.crt,key={pki}/client.key"
    k.ok("create", "--name", "byaddr", "--driver-opt", tls, ep)
    p = k.fails("inspect", "--bootstrap", "byaddr")
    assert 'builder "byaddr"' in p.stderr
    k.ok("create", "--name", "byname", "--driver-opt", tls + ",servername=kilnd.test", ep)
    assert k.inspect("--bootstrap", "byname")["Status"] == "running"


def test_remote_option_errors(k, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("debug = true\n")
    cases = [
        (["--driver", "remote"], "no remote endpoint provided"),
        (["--driver", "remote", "http://127.0.0.1:1"], 'invalid endpoint "http://127.0.0.1:1"'),
        (["--driver", "remote", "--config", conf, "unix:///x.sock"],
         "setting config file is not supported for remote driver"),
        (["--driver", "remote", "--buildkitd-flags", "--debug", "unix:///x.sock"],
         "setting buildkit flags is not supported for remote driver"),
        (["--driver", "remote", "--driver-opt", "cert=/a.pem", "tcp://127.0.0.1:1"],
         "tls enabled, but missing keys cacert, key"),
        (["--driver", "remote", "--driver-opt", "cacert=/a.pem", "unix:///x.sock"],
         "need a tcp:// endpoint"),
        (["--driver", "remote", "--driver-opt", "color=blue", "unix:///x.sock"],
         "invalid driver option color for remote driver"),
        (["--driver", "remote", "--driver-opt", "nonsense", "unix:///x.sock"],
         'invalid value "nonsense", expecting k=v'),
        (["--driver", "remote", "--driver-opt", f"cacert={tmp_path}/none.pem",
          "tcp://127.0.0.1:1"], "none.pem"),
        (["--driver-opt", "a=b"], "invalid driver option a for local driver"),
        (["--driver", "local", "unix:///x.sock"], "the local driver takes no endpoint"),
    ]
    for args, message in cases:
        p = k.fails("create", "--name", "r", *args)
        assert message in p.stderr, (args, p.stderr)
        assert not k.dir("r").exists(), args
