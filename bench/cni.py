#!/usr/bin/env python3
"""'make bench', network part: what a CNI network costs a RUN step.

Two builders in one run, in a network namespace this script makes (so the
bridge and veths never touch the machine's network): one with host
networking, one with networkMode = "cni" (Debian's plugins from
/usr/lib/cni: bridge, host-local, firewall, loopback) and a warm pool. Each
builds the same Dockerfile of 50 RUN steps with --no-cache (FROM scratch
plus a static busybox, no registry involved); hyperfine times both. The
per-step cost of CNI is (cni - host) / 50.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("KILN_BUILD_DIR", REPO / "build"))
RUNS = int(os.environ.get("KILN_BENCH_RUNS", "10"))
STEPS = 50
PLUGINS = pathlib.Path("/usr/lib/cni")


def main():
    if os.geteuid() != 0 or not (PLUGINS / "bridge").exists() or not shutil.which("hyperfine"):
        print("cni: skipped (needs root, containernetworking-plugins and hyperfine)")
        return
    work = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-cni-", dir="/tmp"))
    netns = f"kilnbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    enter = ["nsenter", f"--net=/run/netns/{netns}"]
    env = dict(os.environ, KILN_CONFIG=str(work / "k"), HOME=str(work))
    kiln = [*enter, str(BUILD / "kiln")]
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        ctx = work / "ctx"
        ctx.mkdir()
        shutil.copy("/bin/busybox", ctx / "busybox")
        dockerfile = work / "Dockerfile"
        dockerfile.write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n' +
            "".join(f"RUN echo step {i}\n" for i in range(STEPS)))
        conf = work / "net.conflist"
        conf.write_text(
            '{"cniVersion":"1.0.0","name":"kilnbench","plugins":['
            '{"type":"bridge","bridge":"kbench0","isGateway":true,"ipMasq":true,'
            f'"ipam":{{"type":"host-local","dataDir":"{work / "leases"}",'
            '"ranges":[[{"subnet":"10.78.0.0/24"}]]}},{"type":"firewall"}]}')
        for name, net in (("host", 'networkMode = "host"\n'),
                          ("cni", f'networkMode = "cni"\ncniConfigPath = "{conf}"\n'
                                  f'cniBinaryPath = "{PLUGINS}"\ncniPoolSize = 4\n')):
            toml = work / f"{name}.toml"
            toml.write_text("[worker.oci]\n" + net)
            subprocess.run([*kiln, "create", "--name", name, "--config", toml, "--bootstrap"],
                           check=True, env=env, capture_output=True)
            # warm: the pool filled, the base steps cached
            subprocess.run([*kiln, "build", "--builder", name, "--progress", "quiet", "-f",
                            dockerfile, ctx], check=True, env=env, capture_output=True)
        out = work / "h.json"
        cmds = []
        for name in ("host", "cni"):
            cmds += ["-n", name, " ".join([*kiln, "build", "--builder", name, "--no-cache",
                                           "--progress", "quiet", "-f", str(dockerfile),
                                           str(ctx)])]
        subprocess.run(["hyperfine", "--runs", str(RUNS), "--export-json", str(out), *cmds],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        r = {x["command"]: x["median"] for x in json.load(open(out))["results"]}
        per_step = (r["cni"] - r["host"]) / STEPS * 1000
        print(f"{STEPS} RUN steps, --no-cache: host {r['host'] * 1000:.0f} ms, "
              f"cni (warm pool) {r['cni'] * 1000:.0f} ms -> CNI costs "
              f"{per_step:+.1f} ms per step")
    finally:
        for name in ("host", "cni"):
            subprocess.run([*kiln, "rm", "--force", name], env=env, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
