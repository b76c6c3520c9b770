#!/usr/bin/env python3
"""'make bench', build part: kiln build beside buildah and dockerd's built-in
BuildKit, in one run, on the same Dockerfiles and contexts:

    cold     FROM busybox + RUN echo, nothing cached (the base image is
             pulled from a local registry and unpacked)
    cached   the same build again
    copy     FROM busybox + COPY . of 5,000 files (40 MB), cold and cached
    export   an image whose layers add up to 100 MB (FROM busybox + COPY of
             100 MB of this machine's /usr/lib: shared libraries, text and
             data, which gzip to about a third), built beforehand (untimed),
             then written out with gzip-compressed layers, every layer
             compressed anew: each run starts from fresh state, and the
             build that fills it is the untimed --prepare. Two forms:
               push  to an empty local registry (the sink is emptied before
                     each run, so every tool compresses and uploads every
                     layer): kiln build --push (all steps cached), docker
                     push (dockerd compresses at push time: its BuildKit
                     stores layers uncompressed), buildah push;
               oci   an OCI archive: kiln build -o type=oci,dest=FILE (all
                     steps cached), buildah push IMAGE oci-archive:FILE.
                     dockerd 20.10 has no OCI or compressed export (docker
                     save writes uncompressed layers): not comparable, so
                     not measured.
    pull     FROM a ~100 MB, 6-layer image + COPY of one small file, nothing
             cached: the image pulled from a local registry and unpacked by
             each tool (the COPY needs its file system)

Prints the medians, kiln's ratio to each peer (peer time / kiln time: above
1 is kiln faster), and the peak RSS of each daemon (kilnd, dockerd with its
BuildKit, the highest of the daemons that ran the last run of each case;
buildah has no daemon: the peak of one build). A peer that cannot run here
is reported and skipped. KILN_BENCH_RUNS (10) and KILN_BENCH_HEAVY_RUNS (5,
export and pull) set the number of runs; KILN_BENCH_CASES (a comma-separated
list of words such as "RUN,COPY") runs only the cases whose names contain
one of them.

Cold runs start every tool on fresh state: a new builder for kiln, a
restarted dockerd on a new data root, a new buildah root. The old state is
moved aside, not deleted, until the end: on a file system without a
journal, ext4 scans past recently deleted inodes when it allocates new
ones, so deleting 10,000 files right before a timed run would measure that
instead of the tool.
Only 127.0.0.1 is contacted; dockerd runs with --iptables=false
--bridge=none and its builds with --network none.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import registries as R  # noqa: E402

BUILD = pathlib.Path(os.environ.get("KILN_BUILD_DIR", REPO / "build"))
RUNS = int(os.environ.get("KILN_BENCH_RUNS", "10"))
HEAVY_RUNS = int(os.environ.get("KILN_BENCH_HEAVY_RUNS", "5"))
CASES = [w for w in os.environ.get("KILN_BENCH_CASES", "").split(",") if w]


def selected(case):
    return not CASES or any(w in case for w in CASES)
EXPORT_BYTES = 100 * 1000 * 1000
DOCKER = "/usr/bin/docker"  # Debian's client, which drives dockerd 20.10's BuildKit


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def running(pid):
    """Whether pid runs (a zombie, which this process may have to reap, does
    not)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def vm_hwm(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def make_copy_context(d):
    """5,000 files of 8 KiB in 50 directories: 40 MB."""
    d.mkdir()
    for i in range(50):
        sub = d / f"d{i:02d}"
        sub.mkdir()
        for j in range(100):
            (sub / f"f{j:03d}").write_bytes(os.urandom(8192))


def make_export_context(d, source=pathlib.Path("/usr/lib")):
    """d/data: the first 100 MB of source's regular files in sorted order,
    with their directories (binaries, shared libraries, text: what images
    hold)."""
    total = 0
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            src = pathlib.Path(root) / name
            if src.is_symlink() or not src.is_file():
                continue
            size = src.stat().st_size
            if size == 0 or size > 16 * 1024 * 1024:
                continue
            dest = d / "data" / src.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            total += size
            if total >= EXPORT_BYTES:
                return total
    return total


class Kiln:
    def __init__(self, work, reg):
        self.env = dict(os.environ, KILN_CONFIG=str(work / "kiln"), HOME=str(work))
        self.toml = work / "buildkitd.toml"
        self.toml.write_text("")
        self.kiln = BUILD / "kiln"
        self.fresh()

    def fresh(self):
        """A new builder: empty cache and store, daemon started; the old
        builder's state is moved to the graveyard."""
        state = pathlib.Path(self.env["KILN_CONFIG"]) / "builders" / "bench"
        if state.exists():
            subprocess.run([self.kiln, "rm", "--force", "--keep-state", "bench"],
                           env=self.env, capture_output=True)
            state.rename(graveyard(pathlib.Path(self.env["HOME"])))
        sh(f"{self.kiln} create --name bench --config {self.toml} --use --bootstrap",
           env=self.env, stdout=subprocess.DEVNULL)

    def prepare_cold(self):
        return f"KILN_CONFIG={self.env['KILN_CONFIG']} HOME={self.env['HOME']} " \
               f"{sys.executable} {__file__} --kiln-fresh"

    def build(self, ctx, dockerfile, extra=""):
        return f"KILN_CONFIG={self.env['KILN_CONFIG']} {self.kiln} build --progress quiet " \
               f"-f {dockerfile} {extra} {ctx} >/dev/null"

    def prepare_image(self, ctx, dockerfile, ref):
        """Fresh state, then the image built into the cache."""
        return f"{self.prepare_cold()} && {self.build(ctx, dockerfile)}"

    def push(self, ctx, dockerfile, ref):
        return self.build(ctx, dockerfile, f"--push -t {ref}")

    def oci(self, ctx, dockerfile, ref, out):
        return self.build(ctx, dockerfile, f"-o type=oci,dest={out}")

    def pid(self):
        return int((pathlib.Path(self.env["KILN_CONFIG"]) / "builders" / "bench" /
                    "kilnd.pid").read_text())


class Docker:
    def __init__(self, work):
        self.work = work
        self.dir = work / "docker"
        self.dir.mkdir(exist_ok=True)
        self.sock = self.dir / "docker.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_BUILDKIT="1",
                        HOME=str(work))

    def start(self):
        """dockerd on a fresh data root, detached (cold runs restart it)."""
        with open(self.dir / "dockerd.log", "ab") as log:
            proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--bridge=none", "--data-root",
                 str(self.dir / "data"), "--exec-root", str(self.dir / "exec"), "--pidfile",
                 str(self.dir / "dockerd.pid"), "-H", f"unix://{self.sock}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        R.wait_for(lambda: subprocess.run([DOCKER, "version"], env=self.env,
                                          capture_output=True).returncode == 0,
                   "dockerd to answer", timeout=60, proc=proc)

    def fresh(self):
        self.stop()
        if (self.dir / "data").exists():
            (self.dir / "data").rename(graveyard(self.work))
        self.start()

    def prepare_cold(self):
        return f"HOME={self.work} {sys.executable} {__file__} --docker-fresh"

    def build(self, ctx, dockerfile, extra=""):
        return f"DOCKER_HOST=unix://{self.sock} DOCKER_BUILDKIT=1 {DOCKER} build -q " \
               f"--network none -f {dockerfile} {extra} {ctx} >/dev/null"

    def prepare_image(self, ctx, dockerfile, ref):
        return f"{self.prepare_cold()} && {self.build(ctx, dockerfile, f'-t {ref}')}"

    def push(self, ctx, dockerfile, ref):
        return f"DOCKER_HOST=unix://{self.sock} {DOCKER} push {ref} >/dev/null"

    def oci(self, ctx, dockerfile, ref, out):
        return None  # no OCI or compressed export in dockerd 20.10 (see above)

    def pid(self):
        return int((self.dir / "dockerd.pid").read_text())

    def stop(self):
        try:
            pid = self.pid()
            os.kill(pid, 15)
        except (OSError, ValueError):
            return
        R.wait_for(lambda: not running(pid), "dockerd to stop", timeout=60)


class Buildah:
    def __init__(self, work):
        self.root = work / "buildah"
        self.args = f"--root {self.root}/root --runroot {self.root}/run --storage-driver overlay"

    def prepare_cold(self):
        return f"mv {self.root} $(mktemp -d -p {self.root.parent / 'graveyard'})/ 2>/dev/null; true"

    def build(self, ctx, dockerfile, extra=""):
        return f"buildah {self.args} bud -q --layers --isolation oci --runtime runc --network none " \
               f"--tls-verify=false -f {dockerfile} {extra} {ctx} >/dev/null"

    def prepare_image(self, ctx, dockerfile, ref):
        return f"{self.prepare_cold()} && {self.build(ctx, dockerfile, f'-t {ref}')}"

    def push(self, ctx, dockerfile, ref):
        return f"buildah {self.args} push -q --tls-verify=false {ref} docker://{ref} >/dev/null"

    def oci(self, ctx, dockerfile, ref, out):
        return f"buildah {self.args} push -q {ref} oci-archive:{out} >/dev/null"


def graveyard(work):
    """A new place under work/graveyard for state that is deleted at the end."""
    (work / "graveyard").mkdir(exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(dir=work / "graveyard")) / "old"


def hyperfine(out, prepare, commands, runs=RUNS):
    """Medians of commands. Dirty data of earlier runs is written out
    first (sync, untimed, also after every --prepare), so that no run pays
    for the writeback of another tool's files."""
    os.sync()
    argv = ["hyperfine", "--runs", str(runs), "--export-json", str(out)]
    for name, (prep, cmd) in commands.items():
        argv += ["--prepare", f"{prep} && sync"] if prepare else []
        argv += ["-n", name, cmd]
    if not prepare:
        argv[1:1] = ["--warmup", "2"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return {r["command"]: r["median"] for r in json.loads(out.read_text())["results"]}


def main():
    if "--kiln-fresh" in sys.argv:  # hyperfine's --prepare for kiln's cold runs
        k = Kiln.__new__(Kiln)
        k.env = dict(os.environ)
        k.kiln = BUILD / "kiln"
        k.toml = pathlib.Path(k.env["HOME"]) / "buildkitd.toml"
        k.fresh()
        return
    if "--docker-fresh" in sys.argv:  # the same for dockerd
        Docker(pathlib.Path(os.environ["HOME"])).fresh()
        return
    if os.geteuid() != 0:
        sys.exit("bench/build.py runs containers: run it as root")
    work = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-build-", dir="/var/tmp"))
    stack = R.Stack()
    try:
        pki = R.Pki(work / "pki")
        reg = R.Registry(pki, work / "registry", name="bench")
        stack.push(reg.stop)
        seeder = R.Seeder(R.Images(work / "images"), work / "skopeo")
        seeder(reg, "library/busybox:latest", kind="small")
        base = f"{reg.host}/library/busybox:latest"
        ctx = work / "ctx"
        ctx.mkdir()
        run_df = work / "Dockerfile.run"
        run_df.write_text(f"FROM {base}\nRUN echo hello\n")
        copy_ctx = work / "copyctx"
        make_copy_context(copy_ctx)
        copy_df = work / "Dockerfile.copy"
        copy_df.write_text(f"FROM {base}\nCOPY . /ctx/\n")
        export_ctx = work / "exportctx"
        export_ctx.mkdir()
        export_size = make_export_context(export_ctx)
        export_df = work / "Dockerfile.export"
        export_df.write_text(f"FROM {base}\nCOPY data/ /data/\n")
        seeder(reg, "bench/big:latest", kind="big")
        # The big image has no shell: a COPY is what makes each tool unpack it.
        pull_ctx = work / "pullctx"
        pull_ctx.mkdir()
        (pull_ctx / "marker").write_text("pulled\n")
        pull_df = work / "Dockerfile.pull"
        pull_df.write_text(f"FROM {reg.host}/bench/big:latest\nCOPY marker /marker\n")
        # The export's destination, emptied before every run.
        sink = R.Registry(pki, work / "sink", name="sink")
        stack.push(sink.stop)
        export_ref = f"{sink.host}/bench/export:latest"
        empty_sink = f"rm -rf {sink.data_dir}/docker {work}/export.tar"

        (work / "graveyard").mkdir()
        tools = {"kiln": Kiln(work, reg)}
        stack.push(lambda: subprocess.run([BUILD / "kiln", "rm", "--force", "bench"],
                                          env=tools["kiln"].env, capture_output=True))
        if shutil.which("dockerd") and os.access(DOCKER, os.X_OK):
            try:
                tools["buildkit"] = Docker(work)
                stack.push(tools["buildkit"].stop)
                tools["buildkit"].start()
            except Exception as e:  # noqa: BLE001
                print(f"dockerd: skipped ({e})")
        else:
            print("dockerd: skipped (install docker.io)")
        if shutil.which("buildah"):
            tools["buildah"] = Buildah(work)
        else:
            print("buildah: skipped (install buildah)")

        results = {}
        peak = {}

        def record_peaks():
            for name in ("kiln", "buildkit"):
                if name in tools:
                    try:
                        peak[name] = max(peak.get(name, 0), vm_hwm(tools[name].pid()))
                    except (OSError, ValueError):
                        pass

        for case, (c, df, cold) in {
            "cold RUN": (ctx, run_df, True),
            "cached RUN": (ctx, run_df, False),
            "COPY 5000 cold": (copy_ctx, copy_df, True),
            "COPY 5000 cached": (copy_ctx, copy_df, False),
        }.items():
            if not selected(case):
                continue
            cmds = {name: (t.prepare_cold(), t.build(c, df)) for name, t in tools.items()}
            results[case] = hyperfine(work / "h.json", cold, cmds)
            record_peaks()

        export_out = work / "export.tar"
        for case, command in {
            "export 100MB push": lambda t: t.push(export_ctx, export_df, export_ref),
            "export 100MB oci": lambda t: t.oci(export_ctx, export_df, export_ref, export_out),
        }.items():
            if not selected(case):
                continue
            cmds = {name: (f"{t.prepare_image(export_ctx, export_df, export_ref)} && "
                           f"{empty_sink}", command(t))
                    for name, t in tools.items() if command(t)}
            results[case] = hyperfine(work / "h.json", True, cmds, runs=HEAVY_RUNS)
            record_peaks()
        if selected("pull 100MB cold"):
            cmds = {name: (t.prepare_cold(), t.build(pull_ctx, pull_df))
                    for name, t in tools.items()}
            results["pull 100MB cold"] = hyperfine(work / "h.json", True, cmds, runs=HEAVY_RUNS)
            record_peaks()

        big = seeder.images.get("big").layers
        print(f"export: {export_size / 1e6:.0f} MB of /usr/lib in one layer over busybox; "
              f"pull: a {len(big)}-layer image of {sum(x['size'] for x in big) / 1e6:.0f} MB")
        peers = [n for n in tools if n != "kiln"]
        print(f"{'case':<20}" + "".join(f"{n:>12}" for n in tools) +
              "".join(f"{n + '/kiln':>16}" for n in peers))
        for case, r in results.items():
            line = f"{case:<20}" + "".join(
                f"{r[n] * 1e3:>10.0f}ms" if n in r else f"{'-':>12}" for n in tools)
            line += "".join(f"{r[n] / r['kiln']:>15.2f}x" if n in r else f"{'-':>16}"
                            for n in peers)
            print(line)
        print(f"peak RSS: kilnd {peak.get('kiln', 0) / 1024:.1f} MB", end="")
        if "buildkit" in tools:
            print(f", dockerd+BuildKit {peak.get('buildkit', 0) / 1024:.1f} MB", end="")
        if "buildah" in tools:
            b = tools["buildah"]
            p = subprocess.run(f"/usr/bin/time -f %M sh -c '{b.build(ctx, run_df)}'",
                               shell=True, capture_output=True, text=True)
            print(f", buildah (one build) {int(p.stderr.split()[-1]) / 1024:.1f} MB", end="")
        print()
    finally:
        stack.close()
        unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)


def unmount_below(path):
    """Unmounts what a tool left mounted below path (a buildah overlay)."""
    prefix = f"{path}/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


if __name__ == "__main__":
    main()
