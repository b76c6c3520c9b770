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
import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from kilnhelpers import (SANITIZER_MARKERS, TIMEOUT, Daemon, Kiln, alive, check_sanitizers,
                         cmdline, free_port, kilnd_pids, make_pki, terminate, wait_for)

REPO = pathlib.Path(__file__).resolve().parents[2]
# A unix socket path holds at most 107 bytes; builders/<name>/kilnd.sock is
# appended to KILN_CONFIG.
MAX_STATE_DIR = 60


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
        if log.is_file() and not log.is_symlink():  # a test may plant a FIFO or a link
            check_sanitizers(log.read_text(errors="replace"), log)
    if short:
        shutil.rmtree(short, ignore_errors=True)


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
        check_sanitizers(daemon.log(), daemon.log_path)


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


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
    # what networkMode = "auto" resolved to: no CNI config here, so host
    assert info["Network Mode"] == "host"
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
        (["--driver", "remote", "http://127.0.0.1:1"],
         "invalid remote endpoint: invalid address 'http://127.0.0.1:1': unknown scheme"),
        (["--driver", "remote", "tcp://127.0.0.1:99999"], "bad port '99999'"),
        (["--driver", "remote", "tcp://127.0.0.1"], "expected tcp://HOST:PORT"),
        (["--driver", "remote", "tcp://:1234"], "no host to connect to"),
        (["--driver", "remote", "tcp://127.0.0.1:0"], "port 0 cannot be connected to"),
        (["--driver", "remote", "tcp://::1:1234"], "an IPv6 host must be in brackets"),
        (["--driver", "remote", "unix://"], "empty path"),
        (["--driver", "remote", "unix:///" + "s" * 120], "socket path longer than"),
        (["--driver", "remote", "fd://3"], "scheme not supported by kiln"),
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


def test_remote_unix_endpoint_is_stored_absolute(k, remote):
    sock = remote.sock()
    d = remote(addr=f"unix://{sock}")
    # Given relative to where create runs; used later from anywhere else.
    k.ok("create", "--name", "rel", f"unix://{sock.name}", cwd=sock.parent)
    assert json.loads((k.dir("rel") / "builder.json").read_text())["endpoint"] == f"unix://{sock}"
    node = k.ls()["rel"]["Nodes"][0]
    assert node["Endpoint"] == f"unix://{sock}"
    assert node["Status"] == "running"
    assert int(k.inspect("rel")["PID"]) == d.pid


# ---- what create leaves behind, whatever happens ----


def holds_open(pid, path):
    """Whether process pid has path open (it waits for the lock on it)."""
    fds = f"/proc/{pid}/fd"
    try:
        entries = os.listdir(fds)
    except OSError:
        return False
    for fd in entries:
        try:
            if os.readlink(f"{fds}/{fd}") == str(path):
                return True
        except OSError:
            pass
    return False


def staging_dirs(k):
    builders = k.state / "builders"
    return sorted(p.name for p in builders.glob(".new-*")) if builders.exists() else []


def test_fifo_inputs_fail_at_once(k, tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    # Nobody ever writes to the FIFO: a kiln that opened it for reading
    # would wait here forever (the short timeout fails the test).
    p = k.fails("create", "--name", "f", "--config", fifo, timeout=TIMEOUT)
    assert str(fifo) in p.stderr and "not a regular file" in p.stderr, p.stderr
    p = k.fails("create", "--name", "f", "--driver", "remote", "--driver-opt", f"cacert={fifo}",
                "tcp://127.0.0.1:1", timeout=TIMEOUT)
    assert "driver option cacert" in p.stderr and "not a regular file" in p.stderr, p.stderr
    conf = tmp_path / "bk.toml"
    conf.write_text(f'[registry."h"]\nca = ["{fifo}"]\n')
    p = k.fails("create", "--name", "f", "--config", conf, timeout=TIMEOUT)
    assert 'registry."h".ca[0]' in p.stderr and "not a regular file" in p.stderr, p.stderr
    assert not k.dir("f").exists()
    assert staging_dirs(k) == []
    assert "f" not in k.ls()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_interrupted_create_leaves_no_builder(k, tmp_path, sig):
    (tmp_path / "ca.pem").write_text("CA\n")
    conf = tmp_path / "bk.toml"
    conf.write_text('[registry."h"]\nca = ["ca.pem"]\n')
    # Another kiln busy with the builder's lock: create has made the whole
    # builder in its staging directory and waits to publish it.
    locks = k.state / "locks"
    locks.mkdir(parents=True, mode=0o700)
    lock = locks / "victim.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        p = k.popen("create", "--name", "victim", "--config", conf)
        try:
            wait_for(lambda: holds_open(p.pid, lock), "create to wait for the builder lock")
            [staged] = staging_dirs(k)
            assert (k.state / "builders" / staged / "builder.json").exists()
            assert not k.dir("victim").exists()
            # The store lock is not held meanwhile: other builders come and go.
            k.ok("create", "--name", "bystander")
            k.ok("rm", "bystander")
            p.send_signal(sig)
            assert p.wait(timeout=TIMEOUT) == -sig
        finally:
            p.kill()
            out, err = p.communicate()
    check_sanitizers(err, "kiln create")
    assert out == ""
    assert not k.dir("victim").exists()
    assert "victim" not in k.ls()
    if sig == signal.SIGKILL:
        # Nothing runs in a killed process: its staging directory stays,
        # unlocked, until the next kiln that makes a builder clears it.
        assert staging_dirs(k) == [staged]
        k.ok("create", "--name", "other")
    assert staging_dirs(k) == []
    k.ok("create", "--name", "victim", "--config", conf)
    assert (k.buildkit_dir("victim") / "certs" / "h" / "ca.pem").read_text() == "CA\n"


def test_bootstrap_of_a_builder_removed_meanwhile_starts_nothing(k):
    k.ok("create", "--name", "gone")
    lock = k.state / "locks" / "gone.lock"
    lock.parent.mkdir(mode=0o700, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        p = k.popen("inspect", "--bootstrap", "gone")
        try:
            wait_for(lambda: holds_open(p.pid, lock), "inspect to wait for the builder lock")
            # What `kiln rm --keep-state gone` does while it holds the lock.
            for entry in k.dir("gone").iterdir():
                if entry.name != "root":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            lock.unlink()
        except BaseException:
            p.kill()
            raise
    out, err = p.communicate(timeout=TIMEOUT * 3)
    check_sanitizers(err, "kiln inspect")
    assert p.returncode == 1, err
    assert 'no builder "gone" found' in err
    assert kilnd_pids(k.state) == []
    assert not (k.dir("gone") / "kilnd.log").exists()
    assert not lock.exists(), "the lock of a builder that is gone is removed"


def test_lock_files_go_with_their_builder(k):
    k.ok("create", "--name", "locked", "--bootstrap")
    k.ok("create", "--name", "kept", "--bootstrap")
    locks = k.state / "locks"
    assert sorted(os.listdir(locks)) == ["kept.lock", "locked.lock"]
    k.ok("rm", "locked")
    k.ok("rm", "--keep-state", "kept")
    assert os.listdir(locks) == []
    k.fails("create", "--name", "bad", "--buildkitd-flags", "--nope")
    assert os.listdir(locks) == []


# ---- the store ----


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_store_is_private_and_checked(k):
    old = os.umask(0)
    try:
        k.ok("create", "--name", "private")
    finally:
        os.umask(old)
    for d in (k.state, k.state / "builders", k.state / "locks", k.dir("private")):
        assert mode(d) == 0o700, d

    for d, bad in ((k.state, 0o770), (k.state / "builders", 0o702), (k.state / "locks", 0o720)):
        os.chmod(d, bad)
        for args in (["ls"], ["create", "--name", "other"], ["rm", "private"], ["logs"]):
            p = k.fails(*args)
            assert f"refusing builder store '{d}'" in p.stderr, (args, p.stderr)
            assert "writable by group or others" in p.stderr and f"{bad:04o}" in p.stderr
        os.chmod(d, 0o700)
    if os.geteuid() == 0:
        os.chown(k.state, 4242, -1)
        p = k.fails("ls")
        assert f"refusing builder store '{k.state}': it is owned by uid 4242" in p.stderr
        os.chown(k.state, 0, -1)
    assert list(k.ls()) == ["private", "default"]
    assert not k.dir("other").exists()


def test_state_files_are_never_followed(k, tmp_path):
    k.ok("create", "--name", "linked")
    victim = tmp_path / "victim"
    victim.write_text("not kiln's\n")
    (k.dir("linked") / "kilnd.log").symlink_to(victim)
    p = k.fails("inspect", "--bootstrap", "linked")
    assert "kilnd.log" in p.stderr
    p = k.fails("logs", "linked")
    assert "kilnd.log" in p.stderr
    assert victim.read_text() == "not kiln's\n"
    assert kilnd_pids(k.state) == []

    (k.dir("linked") / "kilnd.log").unlink()
    os.mkfifo(k.dir("linked") / "kilnd.log")
    p = k.fails("inspect", "--bootstrap", "linked", timeout=TIMEOUT)
    assert "not a regular file" in p.stderr
    p = k.fails("logs", "linked", timeout=TIMEOUT)
    assert "not a regular file" in p.stderr


def test_unreadable_current_is_an_error(k):
    k.ok("create", "--name", "one", "--use")
    current = k.state / "current"
    current.unlink()
    current.mkdir()
    for args in (["ls"], ["inspect"], ["rm"]):
        p = k.fails(*args)
        assert f"read '{current}': Is a directory" in p.stderr, (args, p.stderr)
    current.rmdir()
    current.write_text("1bad\n")
    p = k.fails("ls")
    assert f"read '{current}': invalid name 1bad" in p.stderr, p.stderr
    current.write_text("one\n")
    assert k.ls()["one"]["Current"]


# ---- the implicit default builder is left alone ----


def test_fresh_store_stop_logs_ls_write_nothing(k):
    k.ok("stop")
    k.ok("stop", "default")
    p = k.ok("logs")
    assert p.stdout == ""
    assert 'builder "default" has not been started: no log yet' in p.stderr
    assert list(k.ls()) == ["default"]
    assert not k.state.exists(), "looking at a fresh store writes nothing"


def test_rm_of_the_implicit_default_builder_fails(k):
    for args in (["rm", "default"], ["rm"], ["--builder", "default", "rm"]):
        p = k.fails(*args)
        assert "failed to remove default: the default builder has nothing to remove" in p.stderr
        assert "default removed" not in p.stderr
    assert not k.state.exists()
    # Once written, it is removed like any other, and implicit again.
    k.ok("inspect")
    assert k.dir("default").exists()
    assert "default removed" in k.ok("rm", "default").stderr
    assert not k.dir("default").exists()
    assert list(k.ls()) == ["default"]


# ---- ls ----


def test_ls_asks_builders_in_parallel_within_one_timeout(k, blackhole):
    names = [f"hole{i}" for i in range(6)]
    for name in names:
        k.ok("create", "--name", name, "--driver", "remote", f"tcp://127.0.0.1:{blackhole.port}")
    start = time.monotonic()
    out = k.ok("ls", "--format", "json", "--timeout", "2s").stdout
    builders = {b["Name"]: b for b in map(json.loads, out.splitlines())}
    elapsed = time.monotonic() - start
    for name in names:
        assert builders[name]["Nodes"][0]["Status"] == "inactive"
    # One after the other, six silent daemons would take 12s.
    assert 1.9 <= elapsed < 6, elapsed


# ---- --buildkitd-flags ----


def test_relative_paths_in_buildkitd_flags_are_made_absolute(k, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "other.toml").write_text("[worker.oci]\nmax-parallelism = 7\n")
    k.ok("create", "--name", "spaced", "--buildkitd-flags", "--config other.toml", cwd=work)
    k.ok("create", "--name", "joined", "--buildkitd-flags", "--debug -config=./other.toml",
         cwd=work)
    flags = lambda name: json.loads((k.dir(name) / "builder.json").read_text())["flags"]
    assert flags("spaced") == ["--config", str(work / "other.toml")]
    assert flags("joined") == ["--debug", f"-config={work}/./other.toml"]
    # kilnd runs in "/": it finds the file only by its absolute path.
    assert k.inspect("--bootstrap", "spaced")["Max Parallelism"] == "7"
    assert k.inspect("--bootstrap", "joined")["Max Parallelism"] == "7"
    # Names looked up in PATH stay names; absolute paths stay as they are.
    k.ok("create", "--name", "names", "--buildkitd-flags",
         "--oci-worker-binary runc --oci-cni-binary-dir /opt/cni/bin --log-level debug", cwd=work)
    assert flags("names") == ["--oci-worker-binary", "runc", "--oci-cni-binary-dir",
                              "/opt/cni/bin", "--log-level", "debug"]


# ---- scripts/demo ----


def test_demo_cleans_up_when_kiln_rm_fails(kiln, kilnd, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "kilnd").symlink_to(kilnd)
    wrapper = fake / "kiln"
    # Every `kiln rm` fails: the demo's own and the one in its cleanup.
    wrapper.write_text("#!/bin/sh\n"
                       'if [ "$1" = rm ]; then\n'
                       '    echo "kiln rm: refused by the test" >&2\n'
                       "    exit 1\n"
                       "fi\n"
                       f'exec "{kiln}" "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ, KILN_BUILD_DIR=str(fake), KILN_DEMO_TIMEOUT=str(int(TIMEOUT)))
    env.pop("KILN_CONFIG", None)
    p = subprocess.run([str(REPO / "scripts" / "demo")], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=TIMEOUT * 6)
    m = re.search(r"KILN_CONFIG=(/tmp/kiln-demo\.[^/\s]+)/kiln holds", p.stdout)
    assert m, p.stdout + p.stderr
    tmp = m.group(1)
    try:
        assert p.returncode != 0
        assert "kiln rm: refused by the test" in p.stderr
        assert kilnd_pids(tmp) == [], "the builder's kilnd outlives the demo"
        assert not os.path.exists(tmp), "the demo's temporary directory is left"
    finally:
        terminate(kilnd_pids(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
