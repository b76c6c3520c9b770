# SPDX-License-Identifier: Apache-2.0
"""CNI networking for RUN steps, end to end, with the real plugins of
containernetworking-plugins.

Each test makes a network namespace of its own and runs the kiln client,
and so the kilnd it starts, inside it: the bridge, the veths, the iptables
rules and the test's own servers live only there, and the machine's
network is never touched. The base image is a scratch stage with Debian's
static busybox copied in, so no registry is needed. The plugins are called
through small wrapper scripts that log each call, so the tests can count
CNI ADDs; IPAM leases go to a directory of the test.
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from kilnhelpers import TIMEOUT, Kiln, check_sanitizers, kilnd_pids, terminate, wait_for

BUILD_TIMEOUT = TIMEOUT * 6
PLUGINS = pathlib.Path("/usr/lib/cni")
BUSYBOX = pathlib.Path("/bin/busybox")


def _require():
    if os.geteuid() != 0:
        pytest.skip("CNI networking makes network namespaces: needs root")
    for tool, package in (("runc", "runc"), ("ip", "iproute2"), ("iptables", "iptables"),
                          ("nsenter", "util-linux")):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: scripts/install-deps installs {package}")
    if not (PLUGINS / "bridge").exists():
        pytest.fail("CNI plugins are missing: scripts/install-deps installs "
                    "containernetworking-plugins")
    if not BUSYBOX.exists():
        pytest.fail("busybox is missing: scripts/install-deps installs busybox-static")


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=TIMEOUT)


def in_netns(netns, argv):
    """argv run in the network namespace netns. nsenter, not `ip netns
    exec`, which also remounts /sys and so hides the cgroup hierarchies
    runc needs."""
    return ["nsenter", f"--net=/run/netns/{netns}", *map(str, argv)]


class NetKiln(Kiln):
    """kiln run inside the test's network namespace."""

    def __init__(self, binary, state, home, netns):
        super().__init__(binary, state, home)
        self.netns = netns

    def argv(self, *args):
        return in_netns(self.netns, super().argv(*args))


class Net:
    def __init__(self, cli, short, netns, subnet):
        self.cli = cli
        self.short = short
        self.netns = netns
        self.subnet = subnet  # "10.77.0.0/24"
        self.gateway = subnet.rsplit(".", 1)[0] + ".1"
        self.leases = short / "leases"
        self.calls = short / "cni-calls.log"
        self.bin = short / "cni-bin"
        self.bin.mkdir()
        # Wrappers that log "<COMMAND> <type> <CONTAINERID>" and run the real
        # plugin; host-local is found through CNI_PATH, so it is wrapped too.
        for p in ("bridge", "host-local", "loopback", "firewall"):
            w = self.bin / p
            w.write_text("#!/bin/sh\n"
                         f'echo "$CNI_COMMAND {p} $CNI_CONTAINERID" >> {self.calls}\n'
                         f'exec {PLUGINS / p} "$@"\n')
            w.chmod(0o755)
        self.context = short / "ctx"
        self.context.mkdir()
        shutil.copy(BUSYBOX, self.context / "busybox")

    def create(self, conflist=None, pool=2, extra="", flags=False):
        """A builder with networkMode = "cni": from its buildkitd.toml, or
        (flags) from --buildkitd-flags as the documentation shows."""
        conf = self.short / "net.conflist"
        conf.write_text(conflist or (
            '{"cniVersion":"1.0.0","name":"kilncni","plugins":['
            '{"type":"bridge","bridge":"kb0","isGateway":true,"ipMasq":true,'
            f'"ipam":{{"type":"host-local","dataDir":"{self.leases}",'
            f'"ranges":[[{{"subnet":"{self.subnet}"}}]]}}}},'
            '{"type":"firewall"}]}'))
        toml = self.short / "buildkitd.toml"
        if flags:
            toml.write_text("debug = true\n" + extra)
            self.cli.ok("create", "--name", "n", "--config", toml, "--use", "--buildkitd-flags",
                        f"--oci-worker-net=cni --oci-cni-config-path={conf} "
                        f"--oci-cni-binary-dir={self.bin} --oci-cni-pool-size={pool}")
        else:
            toml.write_text(
                "debug = true\n[worker.oci]\n"
                '  networkMode = "cni"\n'
                f'  cniConfigPath = "{conf}"\n'
                f'  cniBinaryPath = "{self.bin}"\n'
                f"  cniPoolSize = {pool}\n" + extra)
            self.cli.ok("create", "--name", "n", "--config", toml, "--use")
        self.cli.ok("inspect", "--bootstrap", "n")

    @property
    def root(self):
        return self.cli.dir("n") / "root"

    def log(self):
        p = self.cli.dir("n") / "kilnd.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def adds(self):
        """CNI ADDs of the configured network so far."""
        if not self.calls.exists():
            return 0
        return sum(1 for line in self.calls.read_text().splitlines()
                   if line.startswith("ADD bridge "))

    def build(self, dockerfile, *args, check=True, wait=True, context=None):
        argv = self.cli.argv("build", "--progress", "plain", "-f", "-", *map(str, args),
                             context or self.context)
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.cli.env)
        p.stdin.write(dockerfile)
        p.stdin.close()
        p.stdin = None  # written whole: communicate() has nothing to send
        if not wait:
            return p
        return self.finish(p, check)

    def finish(self, p, check=True):
        try:
            out, err = p.communicate(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"kiln build timed out:\n{err}\n--- kilnd.log\n{self.log()[-4000:]}")
        check_sanitizers(err, "kiln build")
        if check:
            assert p.returncode == 0, f"kiln build failed:\n{err}\n--- kilnd.log\n" + \
                self.log()[-4000:]
        return p.returncode, out, err

    def leftovers(self):
        """What a stopped kilnd must not leave: namespace files, veths, leases."""
        state = self.root / "net" / "cni"
        files = sorted(p.name for p in state.iterdir()) if state.exists() else []
        veths = ip("-n", self.netns, "-o", "link", "show", "type", "veth").stdout.strip()
        leases = []
        net = self.leases / "kilncni"
        if net.exists():
            leases = [p.name for p in net.iterdir()
                      if re.match(r"^\d+\.\d+\.\d+\.\d+$", p.name)]
        return files, veths, leases


_counter = [0]


@pytest.fixture
def net(kiln):
    _require()
    _counter[0] += 1
    name = f"kilncni{os.getpid()}x{_counter[0]}"
    short = pathlib.Path(tempfile.mkdtemp(prefix="kiln-cni-", dir="/tmp"))
    home = short / "home"
    home.mkdir()
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        cli = NetKiln(kiln, short / "k", home, name)
        yield Net(cli, short, name, f"10.77.{_counter[0] % 200}.0/24")
    finally:
        state = short / "k"
        try:
            if (state / "builders").exists():
                cli.run("rm", "--force", "n")
        finally:
            terminate(kilnd_pids(state))
            for log in state.glob("builders/*/kilnd.log"):
                check_sanitizers(log.read_text(errors="replace"), log)
            ip("netns", "del", name, check=False)
            shutil.rmtree(short, ignore_errors=True)


BASE = """FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def addresses(text, tag):
    """The eth0 addresses a step printed after tag (`ip -4 -o addr` lines)."""
    return re.findall(tag + r" \d+: eth0\s+inet (\d+\.\d+\.\d+\.\d+)/", text)


def test_steps_get_their_own_addresses_and_none_has_only_loopback(net):
    """Two RUN steps running at once get different addresses of the subnet;
    --network=none has only lo; the warm pool makes no new CNI ADD."""
    net.create(pool=2)
    wait_for(lambda: net.adds() >= 2, "the pool filled")
    # The two stages meet in a shared cache mount, so both steps are
    # surely running (and holding a namespace) at the same time.
    rendezvous = (
        'RUN --mount=type=cache,id=rv,target=/rv,sharing=shared sh -c '
        '\'touch /rv/{me}; i=0; while [ ! -f /rv/{other} ] && [ $i -lt 300 ]; do '
        'sleep 0.1; i=$((i+1)); done; ip -4 -o addr show eth0 | sed "s/^/{me}-addr /"\'\n')
    dockerfile = (BASE + "FROM base AS a\n" + rendezvous.format(me="a", other="b") +
                  "FROM base AS b\n" + rendezvous.format(me="b", other="a") +
                  "FROM base\nCOPY --from=a /bin/busybox /a\nCOPY --from=b /bin/busybox /b\n"
                  "RUN --network=none sh -c 'ip -o link | sed \"s/^/none-link /\"'\n")
    _, _, err = net.build(dockerfile)
    a, b = addresses(err, "a-addr"), addresses(err, "b-addr")
    assert a and b, err
    prefix = net.subnet.rsplit(".", 1)[0] + "."
    assert a[0].startswith(prefix) and b[0].startswith(prefix), (a, b)
    assert a[0] != b[0]
    none = re.findall(r"none-link \d+: (\S+):", err)
    assert none == ["lo"], err
    # Two namespaces were in use at once: the pool of two covered them.
    assert net.adds() == 2, net.calls.read_text()
    info = net.cli.inspect("n")
    assert info["Network Mode"] == "cni", info["_text"]
    assert info["CNI Pool"] == "2 idle, 0 in use (2 set up, 0 released)", info["_text"]


def test_concurrent_builds_listen_on_one_port(net):
    """Two builds at once each listen on port 8080 in a RUN step: with host
    networking the second would fail with "address in use"."""
    net.create(pool=0)
    listen = (BASE + 'RUN --mount=type=cache,id=port,target=/rv,sharing=shared sh -c '
              '\'nc -l -p 8080 >/dev/null & pid=$!; i=0; '
              'until netstat -ltn | grep -q ":8080 "; do [ $i -lt 200 ] || exit 7; '
              'sleep 0.05; i=$((i+1)); done; touch /rv/{me}; i=0; '
              'while [ ! -f /rv/{other} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; '
              '[ -f /rv/{other} ] || exit 8; kill $pid; echo {me}-listened\'\n')
    # Two projects: a second build of the same context directory waits
    # for the first one's context to be stable, which would serialise them.
    other = net.short / "ctx2"
    shutil.copytree(net.context, other)
    p1 = net.build(listen.format(me="one", other="two"), wait=False)
    p2 = net.build(listen.format(me="two", other="one"), wait=False, context=other)
    _, _, e1 = net.finish(p1)
    _, _, e2 = net.finish(p2)
    assert "one-listened" in e1 and "two-listened" in e2


def test_step_reaches_a_server_on_the_gateway(net):
    """A RUN step reaches a server the test runs on the bridge's gateway;
    the builder's network comes from --buildkitd-flags."""
    net.create(pool=1, flags=True)
    wait_for(lambda: ip("-n", net.netns, "-4", "addr", "show", "kb0", check=False).returncode
             == 0 and net.gateway in ip("-n", net.netns, "-4", "addr", "show", "kb0").stdout,
             "the bridge has its gateway address")
    served = net.short / "served"
    served.mkdir()
    (served / "hello.txt").write_text("hello from the gateway\n")
    server = subprocess.Popen(
        in_netns(net.netns, [BUSYBOX, "httpd", "-f", "-p", f"{net.gateway}:8081", "-h", served]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _, _, err = net.build(
            BASE + f"RUN wget -q -O - http://{net.gateway}:8081/hello.txt\n")
        assert "hello from the gateway" in err
    finally:
        server.kill()
        server.wait()


def test_nothing_left_after_stop_and_after_sigkill(net):
    """kilnd releases every namespace at stop; after a SIGKILL, the next
    start releases what the dead one left: no namespace file, no veth, no
    IPAM lease."""
    net.create(pool=2)
    wait_for(lambda: net.adds() >= 2, "the pool filled")
    net.build(BASE + "RUN ip -4 -o addr show eth0\n")
    assert net.leftovers()[2], "the pool holds leases while kilnd runs"
    net.cli.ok("stop", "n")
    assert net.leftovers() == ([], "", [])

    net.cli.ok("inspect", "--bootstrap", "n")
    wait_for(lambda: net.adds() >= 4, "the pool filled again")
    pid = net.cli.pid("n")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "kilnd gone")
    files, _, leases = net.leftovers()
    assert files and leases, "a killed kilnd leaves its namespaces' files and leases"
    net.cli.ok("inspect", "--bootstrap", "n")
    wait_for(lambda: not set(files) & set(p.name for p in (net.root / "net" / "cni").iterdir()),
             "the dead daemon's namespaces released")
    net.cli.ok("stop", "n")
    assert net.leftovers() == ([], "", [])


def test_broken_config_fails_the_build_with_the_plugins_message(net):
    """A configuration the bridge plugin rejects fails the build with the
    plugin's name and message; kilnd itself keeps running."""
    net.create(conflist=(
        '{"cniVersion":"1.0.0","name":"kilncni","plugins":['
        '{"type":"bridge","bridge":"kb0","isGateway":true,'
        f'"ipam":{{"type":"host-local","dataDir":"{net.leases}",'
        '"ranges":[[{"subnet":"10.77.0.0/33"}]]}}]}'), pool=0)
    code, _, err = net.build(BASE + "RUN true\n", check=False)
    assert code == 1
    assert 'plugin type="bridge" name="kilncni" failed (add)' in err, err
    assert "10.77.0.0/33" in err, err
    assert net.leftovers()[0] == []


def test_bridge_mode_brings_its_own_chain_and_removes_its_bridge(net):
    """networkMode = "bridge": no CNI file to write; steps get addresses of
    bridgeSubnet on bridgeName, which kilnd made and removes at stop."""
    leases = pathlib.Path("/var/lib/cni/networks/buildkit")
    # the first directory of that path the plugins will create, if any
    created = next((p for p in (leases.parents[1], leases.parents[0], leases)
                    if not p.exists()), None)
    toml = net.short / "bridge.toml"
    toml.write_text('[worker.oci]\n  networkMode = "bridge"\n'
                    f'  cniBinaryPath = "{PLUGINS}"\n'
                    '  bridgeName = "kbr0"\n  bridgeSubnet = "10.79.0.0/24"\n')
    try:
        net.cli.ok("create", "--name", "n", "--config", toml, "--use")
        _, _, err = net.build(BASE + "RUN ip -4 -o addr show eth0 | sed 's/^/br-addr /'\n")
        got = addresses(err, "br-addr")
        assert got and got[0].startswith("10.79.0."), err
        assert ip("-n", net.netns, "link", "show", "kbr0", check=False).returncode == 0
        assert net.cli.inspect("n")["Network Mode"] == "cni"
        net.cli.ok("stop", "n")
        assert ip("-n", net.netns, "link", "show", "kbr0", check=False).returncode != 0
        assert not [p for p in leases.iterdir() if re.match(r"^\d+\.", p.name)]
    finally:
        # host-local keeps the built-in bridge's leases in its default
        # directory: leave the machine as it was.
        if created:
            shutil.rmtree(created, ignore_errors=True)
