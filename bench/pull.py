#!/usr/bin/env python3
"""'make bench', registry part: pull a ~100 MB, 6-layer image from a local
docker-registry into kiln's content store, beside skopeo copy (to an OCI
directory) and curl fetching the same blobs in parallel. Prints the means
and the ratios, and kiln's peak RSS."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import registries as R  # noqa: E402

BUILD = pathlib.Path(os.environ.get("KILN_BUILD_DIR", REPO / "build"))


def main():
    tool = next(BUILD.rglob("registry-tool"), None)
    if not tool:
        sys.exit(f"registry-tool not found under {BUILD}: run make first")
    work = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-", dir="/var/tmp"))
    stack = R.Stack()
    try:
        pki = R.Pki(work / "pki")
        reg = R.Registry(pki, work / "registry", name="bench")
        stack.push(reg.stop)
        seeder = R.Seeder(R.Images(work / "images"), work / "skopeo")
        seeder(reg, "bench/big:latest", kind="big")
        ref = f"{reg.host}/bench/big:latest"
        image = seeder.images.get("big")
        blobs = [image.manifest["config"]["digest"]] + [l["digest"] for l in image.layers]
        total = sum(l["size"] for l in image.layers)
        print(f"image: {len(image.layers)} layers, {total / 1e6:.0f} MB, registry {reg.host}")

        cfg = work / "buildkitd.toml"
        cfg.write_text("")
        root, oci, dl = work / "root", work / "oci", work / "curl"
        # 5 = kiln's own ceiling per host: 4 layer transfers (the default
        # max_concurrency) plus one for metadata such as the config blob.
        curl = ["curl", "-s", "--fail", "--parallel", "--parallel-max", "5"]
        for d in blobs:
            curl += ["-o", str(dl / d.replace(":", "-")), f"{reg.url}/v2/bench/big/blobs/{d}"]
        kiln_cmd = f"{tool} --config {cfg} --root {root} pull {ref} >/dev/null"
        skopeo_cmd = (f"skopeo --policy {seeder.policy} copy -q --src-tls-verify=false "
                      f"docker://{ref} oci:{oci}:big")
        curl_cmd = " ".join(map(str, curl))
        out = work / "hyperfine.json"
        subprocess.run(["hyperfine", "--warmup", "1", "--runs", "10", "--export-json", str(out),
                        "--prepare", f"rm -rf {root} {oci} {dl}; mkdir -p {dl}; sync",
                        "-n", "kiln", kiln_cmd, "-n", "skopeo", skopeo_cmd,
                        "-n", "curl", curl_cmd],
                       check=True, stdout=subprocess.DEVNULL, env=seeder.env)
        res = {r["command"]: r["mean"] for r in json.loads(out.read_text())["results"]}
        k, s, c = res["kiln"], res["skopeo"], res["curl"]
        print(f"pull into the store: kiln {k * 1e3:.0f} ms, skopeo copy {s * 1e3:.0f} ms, "
              f"curl (blobs only, parallel) {c * 1e3:.0f} ms")
        print(f"  kiln is {s / k:.2f}x skopeo's speed and takes {k / c:.2f}x curl's time")
        shutil.rmtree(root, ignore_errors=True)
        rss = subprocess.run(["/usr/bin/time", "-f", "%M", "sh", "-c", kiln_cmd],
                             capture_output=True, text=True, check=True)
        print(f"  kiln peak RSS during the pull: {int(rss.stderr.split()[-1]) / 1024:.1f} MB")

        # The same pull through a builder's daemon: kiln pull -> kilnd.
        kiln = str(BUILD / "kiln")
        env = {**os.environ, "KILN_CONFIG": str(work / "kiln"), "HOME": str(work)}
        subprocess.run([kiln, "create", "--name", "bench", "--bootstrap"], env=env, check=True,
                       capture_output=True)
        stack.push(lambda: subprocess.run([kiln, "rm", "bench"], env=env, capture_output=True))
        pid = int((work / "kiln/builders/bench/kilnd.pid").read_text().split()[0])
        t = time.monotonic()
        subprocess.run([kiln, "--builder", "bench", "pull", ref], env=env, check=True,
                       capture_output=True)
        took = time.monotonic() - t
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
        hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
        print(f"through kilnd (kiln pull, one cold pull): {took * 1e3:.0f} ms, "
              f"kilnd peak RSS {hwm / 1024:.1f} MB")
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
