# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the kiln and kilnd integration tests.

    TIMEOUT, SANITIZER_MARKERS    how long to wait; what a sanitizer report
                                  looks like in a process's output
    wait_for(cond, what)          polls cond with a deadline, never a bare sleep
    cmdline(pid) alive(pid)       a process as /proc shows it
    kilnd_pids(prefix)            the kilnds whose --root lies below prefix
    terminate(pids)               SIGTERM, then SIGKILL after 5s
    Kiln                          runs build/kiln with its own KILN_CONFIG
    Daemon                        a kilnd a test runs itself
    free_port()                   a TCP port nothing listens on
    require(tool)                 fails (never skips) when a declared
                                  dependency is missing
    openssl make_ca make_cert make_pki   a test PKI, made with openssl
"""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

# Generous: the suites also run under AddressSanitizer.
TIMEOUT = float(os.environ.get("KILN_TEST_TIMEOUT", "20"))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


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


def check_sanitizers(text, where):
    for marker in SANITIZER_MARKERS:
        assert marker not in text, f"{marker} in {where}:\n{text}"


class Kiln:
    """Runs build/kiln with its own KILN_CONFIG (state) and HOME."""

    def __init__(self, binary, state, home):
        self.binary = binary
        self.state = state
        self.env = dict(os.environ, KILN_CONFIG=str(state), HOME=str(home))
        self.env.pop("KILN_BUILDER", None)

    def argv(self, *args):
        return [str(self.binary), *map(str, args)]

    def run(self, *args, check=False, env=None, cwd=None, timeout=TIMEOUT * 3):
        p = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout,
            env=dict(self.env, **(env or {})), cwd=cwd, stdin=subprocess.DEVNULL,
        )
        check_sanitizers(p.stderr, f"kiln {' '.join(map(str, args))}")
        if check:
            assert p.returncode == 0, f"kiln {' '.join(map(str, args))}:\n{p.stderr}"
        return p

    def popen(self, *args, **kw):
        """kiln in the background; SIGINT has its default action, as at a
        terminal (a shell's background job would ignore it)."""
        return subprocess.Popen(
            self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=dict(self.env, **kw.pop("env", {})),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)

    def ok(self, *args, **kw):
        return self.run(*args, check=True, **kw)

    def fails(self, *args, **kw):
        p = self.run(*args, **kw)
        assert p.returncode == 1, f"kiln {' '.join(map(str, args))} exited {p.returncode}"
        assert p.stderr.startswith("ERROR: ") or "\nERROR: " in p.stderr, p.stderr
        return p

    def dir(self, name):
        return self.state / "builders" / name

    def buildkit_dir(self, name):
        return self.dir(name) / "etc" / "buildkit"

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


class Daemon:
    """A kilnd the test runs itself; kill() at teardown."""

    def __init__(self, kilnd, args, log_path, cwd=None):
        # absolute, because a test may run it from another directory
        self.args = [os.path.abspath(kilnd), *map(str, args)]
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=cwd)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return pathlib.Path(self.log_path).read_text(errors="replace")

    def wait_until(self, ready, what, errors=(OSError,)):
        """Polls ready() until it returns a true value; fails early, with the
        log, when the daemon exits. The exceptions in errors count as "not
        yet"."""
        deadline = time.monotonic() + TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"kilnd exited with {self.proc.returncode} while waiting for "
                            f"{what}:\n{self.log()}")
            try:
                value = ready()
                if value:
                    return value
            except errors as e:
                last = e
            time.sleep(0.02)
        pytest.fail(f"timed out waiting for {what} (last error: {last!r}):\n" + self.log())

    def wait_log(self, needle):
        return self.wait_until(lambda: needle in self.log(), f"'{needle}' in the kilnd log")

    def wait_exit(self):
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("kilnd did not exit:\n" + self.log())

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self.wait_exit()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(tool):
    """A declared dependency (scripts/install-deps): missing is a failure."""
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed: run scripts/install-deps")
    return path


def openssl(*args, cwd):
    subprocess.run([require("openssl"), *map(str, args)], cwd=cwd, check=True,
                   capture_output=True)


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


def make_pki(d):
    """In d: ca, server (for 127.0.0.1), client, named (a server
    certificate for kilnd.test), and stranger (a client of other-ca)."""
    d.mkdir()
    make_ca(d, "ca")
    make_cert(d, "server", "ca", "serverAuth")
    make_cert(d, "client", "ca", "clientAuth")
    make_cert(d, "named", "ca", "serverAuth", san="DNS:kilnd.test")
    make_ca(d, "other-ca")
    make_cert(d, "stranger", "other-ca", "clientAuth")
    return d
