# SPDX-License-Identifier: Apache-2.0
"""kiln build, end to end: a builder made from a buildkitd.toml whose
docker.io is mirrored to a local docker-registry, RUN steps in runc, the
build cache, max-parallelism, cache and secret mounts, hostile layers and
cancellation.

Every test has its own KILN_CONFIG and HOME; at teardown the builder is
removed and any kilnd left below the state directory is killed. Nothing
leaves 127.0.0.1.
"""
import gzip
import io
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

import pytest

import registries as R
from kilnhelpers import TIMEOUT, Kiln, check_sanitizers, kilnd_pids, terminate, wait_for

BUILD_TIMEOUT = TIMEOUT * 6


def _require_root_and_runc():
    if os.geteuid() != 0:
        pytest.skip("kiln build runs containers: needs root")
    if not shutil.which("runc"):
        pytest.fail("runc is missing: scripts/install-deps installs it")


class Builder:
    """A kiln client whose current builder mirrors docker.io to reg."""

    def __init__(self, cli, state, reg, extra_toml=""):
        self.cli = cli
        self.state = state
        self.reg = reg
        self.config = state.parent / "buildkitd.toml"
        self.config.write_text(
            "debug = true\n" + extra_toml +
            f'\n[registry."docker.io"]\n  mirrors = ["{reg.host}"]\n')
        cli.ok("create", "--name", "b", "--config", self.config, "--use")

    @property
    def root(self):
        return self.cli.dir("b") / "root"

    def log(self):
        p = self.cli.dir("b") / "kilnd.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def build(self, context, dockerfile=None, *args, check=True, env=None):
        argv = self.cli.argv("build", "--progress", "plain", *map(str, args))
        if dockerfile is not None:
            argv += ["-f", "-"]
        argv.append(str(context))
        p = subprocess.run(argv, input=dockerfile, capture_output=True, text=True,
                           env=dict(self.cli.env, **(env or {})), timeout=BUILD_TIMEOUT)
        check_sanitizers(p.stderr, f"kiln build {context}")
        if check:
            assert p.returncode == 0, f"kiln build failed:\n{p.stderr}\n--- kilnd.log\n" + \
                R.tail(self.cli.dir("b") / "kilnd.log", 40)
        return p


@pytest.fixture
def builder(kiln, registry, seed, dead):
    _require_root_and_runc()
    short = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bld-", dir="/tmp"))
    state = short / "k"
    home = short / "home"
    home.mkdir()
    cli = Kiln(kiln, state, home)
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        cli.env.pop(var, None)
    cli.env.update({var: dead.url for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                                "https_proxy")})
    cli.env.update(DOCKER_CONFIG=str(home), KILN_REGISTRY_RETRY_BASE_MS="50")
    reg = registry()
    seed(reg, "library/alpine:latest")
    made = []

    def make(extra_toml=""):
        b = Builder(cli, state, reg, extra_toml)
        made.append(b)
        return b

    yield make
    try:
        if (state / "builders").exists():
            cli.run("rm", "--force", "b")
        assert not kilnd_pids(state), "kiln rm left a kilnd running"
    finally:
        terminate(kilnd_pids(state))
        for log in state.glob("builders/*/kilnd.log"):
            check_sanitizers(log.read_text(errors="replace"), log)
        shutil.rmtree(short, ignore_errors=True)


def steps(stderr):
    """Plain progress as {step name: [its lines]} plus the order of names."""
    names, lines = {}, {}
    for line in stderr.splitlines():
        m = re.match(r"^#(\d+) (.*)$", line)
        if not m:
            continue
        n, rest = m.groups()
        if n not in names:
            names[n] = rest
            lines[rest] = []
        else:
            lines[names[n]].append(rest)
    return lines


def step(lines, prefix):
    found = [name for name in lines if name.startswith(prefix)]
    assert len(found) == 1, f"no single step named {prefix!r} in {list(lines)}"
    return lines[found[0]]


def cached(lines, prefix):
    return "CACHED" in step(lines, prefix)


def logs_of(lines, prefix):
    """The output lines of a step, without their relative timestamps."""
    out = []
    for rest in step(lines, prefix):
        m = re.match(r"^\d+\.\d+ (.*)$", rest)
        if m:
            out.append(m.group(1))
    return out


HELLO = 'FROM alpine\nRUN echo "hello world"\n'


def test_documented_hello_world_through_the_mirror(builder, tmp_path):
    b = builder()
    p = b.build(tmp_path, HELLO)
    lines = steps(p.stderr)
    assert "hello world" in logs_of(lines, "[2/2] RUN echo")
    assert any(n.startswith("[1/2] FROM docker.io/library/alpine:latest@sha256:")
               for n in lines), list(lines)
    # BuildKit's internal steps, in its order
    names = [n for n in lines if not n.startswith("building with ")]
    assert names[:3] == ["[internal] load build definition from Dockerfile",
                         "[internal] load metadata for docker.io/library/alpine:latest",
                         "[internal] load .dockerignore"], names
    assert f"transferring dockerfile: {len(HELLO)}B done" in \
        step(lines, "[internal] load build definition")
    # the mirror served the pull: requests carried ?ns=docker.io
    layer = [e for e in b.reg.access_log() if e.method == "GET" and
             re.fullmatch(r"/v2/library/alpine/blobs/sha256:[0-9a-f]{64}\?ns=docker\.io", e.uri)]
    assert layer and all(e.user_agent.startswith("kiln/") for e in layer)
    assert "ns=docker.io" in b.log()


def test_rebuild_is_fully_cached(builder, tmp_path):
    b = builder()
    b.build(tmp_path, HELLO)
    p = b.build(tmp_path, HELLO)
    lines = steps(p.stderr)
    assert cached(lines, "[2/2] RUN echo")
    assert logs_of(lines, "[2/2] RUN echo") == []


def test_multi_stage_with_copy_from_args_env_workdir_and_user(builder, tmp_path):
    b = builder()
    (tmp_path / "greeting.txt").write_text("hi from the context\n")
    dockerfile = """\
ARG BASE=alpine
FROM ${BASE} AS build
ARG NAME=world
ENV OUT=/work/out
WORKDIR /work
COPY greeting.txt .
RUN echo "hello $NAME" > "$OUT" && cat greeting.txt >> "$OUT"

FROM alpine
RUN echo "app:x:1234:1234::/home/app:/bin/sh" >> /etc/passwd && echo "app:x:1234:" >> /etc/group
COPY --from=build --chown=app /work/out /home/app/out
USER app
WORKDIR /home/app
RUN id -u && pwd && ls -n out && cat out
"""
    p = b.build(tmp_path, dockerfile, "--build-arg", "NAME=kiln")
    out = logs_of(steps(p.stderr), "[stage-1 5/5] RUN id -u")
    assert out[0] == "1234"
    assert out[1] == "/home/app"
    assert re.match(r"^-\S+\s+\d+\s+1234\s+1234\s", out[2]), out[2]
    assert out[3:] == ["hello kiln", "hi from the context"]


def test_changed_file_reruns_only_the_steps_after_its_copy(builder, tmp_path):
    b = builder()
    (tmp_path / "a.txt").write_text("a1\n")
    (tmp_path / "b.txt").write_text("b1\n")
    dockerfile = ("FROM alpine\nCOPY a.txt /a.txt\nRUN cat /a.txt\n"
                  "COPY b.txt /b.txt\nRUN cat /b.txt\n")
    first = steps(b.build(tmp_path, dockerfile).stderr)
    assert logs_of(first, "[5/5] RUN cat /b.txt") == ["b1"]
    (tmp_path / "b.txt").write_text("b2\n")
    again = steps(b.build(tmp_path, dockerfile).stderr)
    assert cached(again, "[2/5] COPY a.txt")
    assert cached(again, "[3/5] RUN cat /a.txt")
    assert not cached(again, "[4/5] COPY b.txt")
    assert logs_of(again, "[5/5] RUN cat /b.txt") == ["b2"]
    # a third build of the unchanged context sends only the digest of its list
    unchanged = b.log().count("context unchanged since its last transfer")
    third = steps(b.build(tmp_path, dockerfile).stderr)
    assert cached(third, "[5/5] RUN cat /b.txt")
    assert b.log().count("context unchanged since its last transfer") == unchanged + 1


PARALLEL = """\
FROM alpine AS s1
RUN sleep 1 && echo 1 > /x
FROM alpine AS s2
RUN sleep 1 && echo 2 > /x
FROM alpine AS s3
RUN sleep 1 && echo 3 > /x
FROM alpine AS s4
RUN sleep 1 && echo 4 > /x
FROM alpine
COPY --from=s1 /x /1
COPY --from=s2 /x /2
COPY --from=s3 /x /3
COPY --from=s4 /x /4
"""


def run_intervals(b, context):
    """(started, completed) of each RUN vertex, from rawjson progress."""
    argv = b.cli.argv("build", "--progress", "rawjson", "-f", "-", str(context))
    p = subprocess.run(argv, input=PARALLEL, capture_output=True, text=True, env=b.cli.env,
                       timeout=BUILD_TIMEOUT)
    assert p.returncode == 0, p.stderr
    vertexes = {}
    for line in p.stderr.splitlines():
        if not line.startswith("{"):
            continue
        for v in json.loads(line).get("vertexes") or []:
            vertexes.setdefault(v["digest"], {}).update(v)
    runs = [v for v in vertexes.values() if " RUN sleep 1" in v.get("name", "")]
    assert len(runs) == 4, [v.get("name") for v in vertexes.values()]

    def ts(s):  # RFC 3339 nano -> float seconds, enough for ordering
        m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?", s)
        base = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
        return base + float("0." + (m.group(2) or "0"))

    return sorted((ts(v["started"]), ts(v["completed"])) for v in runs)


def test_max_parallelism_one_runs_steps_one_after_another(builder, tmp_path):
    b = builder("[worker.oci]\n  max-parallelism = 1\n")
    iv = run_intervals(b, tmp_path)
    for (s0, e0), (s1, e1) in zip(iv, iv[1:]):
        assert s1 >= e0, f"steps overlap with max-parallelism = 1: {iv}"


def test_max_parallelism_four_runs_independent_steps_together(builder, tmp_path):
    b = builder("[worker.oci]\n  max-parallelism = 4\n")
    iv = run_intervals(b, tmp_path)
    latest_start = max(s for s, _ in iv)
    earliest_end = min(e for _, e in iv)
    assert latest_start < earliest_end, f"the four steps did not run together: {iv}"


def test_cache_mount_survives_across_builds(builder, tmp_path):
    b = builder()
    dockerfile = ("FROM alpine\nARG N\n"
                  "RUN --mount=type=cache,target=/cache echo \"run $N\" >> /cache/log "
                  "&& cat /cache/log\n")
    b.build(tmp_path, dockerfile, "--build-arg", "N=1")
    p = b.build(tmp_path, dockerfile, "--build-arg", "N=2")
    out = logs_of(steps(p.stderr), "[stage-0 2/2] RUN --mount=type=cache")
    assert out == ["run 1", "run 2"]


def test_secret_is_readable_in_run_and_kept_nowhere(builder, tmp_path):
    b = builder()
    secret = "kiln-secret-" + os.urandom(8).hex()
    src = tmp_path.parent / f"{tmp_path.name}-secret"
    src.write_text(secret)
    dockerfile = ("FROM alpine\n"
                  "RUN --mount=type=secret,id=token "
                  "test \"$(cat /run/secrets/token)\" = \"$EXPECTED\" && echo secret-ok\n")
    dockerfile = dockerfile.replace("$EXPECTED", secret[:12] + "\"\"" + secret[12:])
    p = b.build(tmp_path, dockerfile, "--secret", f"id=token,src={src}")
    assert "secret-ok" in logs_of(steps(p.stderr), "[stage-0 2/2] RUN --mount=type=secret")
    # (a RUN --mount makes BuildKit count a scratch stage: hence "stage-0")
    # never in a snapshot, the cache database or a log (the Dockerfile holds
    # the expected value split in two, so only the secret itself could match)
    needle = secret.encode()
    offenders = []
    for dirpath, _, files in os.walk(b.root):
        for f in files:
            path = pathlib.Path(dirpath) / f
            try:
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    offenders.append(str(path))
            except OSError:
                pass
    assert offenders == [], offenders
    assert secret not in b.log()
    assert secret not in p.stderr


def _push_image_with_layer(seed, reg, name, entries, tmp_path):
    """Pushes a busybox image plus one hostile layer built from tar entries."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    layer = (gzip.compress(raw.getvalue(), mtime=0), "sha256:" + R.sha256_hex(raw.getvalue()))
    oci = R.OciLayout(tmp_path / "hostile-oci")
    desc, _ = oci.add_image([R.make_layer(R.busybox_entries()), layer])
    oci.tag(desc, "hostile")
    argv = ["skopeo", "--policy", str(seed.policy), "copy", "-q", *reg.skopeo_args("dest"),
            f"oci:{oci.path}:hostile", f"docker://{reg.host}/{name}"]
    R.run(argv, env=seed.env, timeout=120)


def _file(name, data=b"x", **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data


def test_layer_escaping_the_snapshot_is_refused(builder, seed, tmp_path):
    b = builder()
    victim = pathlib.Path(tempfile.mkdtemp(prefix="kiln-victim-", dir="/tmp"))
    try:
        rel = "../" * 40 + str(victim.relative_to("/")) + "/dotdot"
        _push_image_with_layer(seed, b.reg, "library/dotdot:latest", [_file(rel)], tmp_path)
        p = b.build(tmp_path, "FROM dotdot\nRUN true\n", check=False)
        assert p.returncode == 1
        assert "ERROR:" in p.stderr and "dotdot" in p.stderr, p.stderr
        assert "escape" in p.stderr or "outside" in p.stderr, p.stderr
        assert list(victim.iterdir()) == []

        link = tarfile.TarInfo("evil")
        link.type = tarfile.SYMTYPE
        link.linkname = str(victim)
        _push_image_with_layer(seed, b.reg, "library/symlink:latest",
                               [(link, None), _file("evil/pwned")], tmp_path)
        p = b.build(tmp_path, "FROM symlink\nRUN true\n", check=False)
        # refused, or confined to the snapshot: never written through the link
        assert list(victim.iterdir()) == [], p.stderr
    finally:
        shutil.rmtree(victim, ignore_errors=True)


def _container_processes(*argv):
    """Processes whose command line is exactly argv."""
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd == want:
                found.append(int(entry))
    return found


def test_cancelled_build_leaves_nothing_behind(builder, tmp_path):
    b = builder()
    b.build(tmp_path, HELLO)  # the daemon runs and alpine is unpacked
    marker = "31" + str(os.getpid() % 1000).zfill(3) + "7"
    dockerfile = tmp_path.parent / f"{tmp_path.name}.Dockerfile"
    dockerfile.write_text(f"FROM alpine\nRUN echo started && sleep {marker}\n")
    proc = subprocess.Popen(
        b.cli.argv("build", "--progress", "plain", "-f", dockerfile, str(tmp_path)),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=b.cli.env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: _container_processes("sleep", marker), "the RUN step to start",
                 timeout=BUILD_TIMEOUT)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=BUILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "ERROR: failed to build: failed to solve: Canceled: context canceled" in err, err
    wait_for(lambda: not _container_processes("sleep", marker),
             "the container's process to be gone")
    pid = b.cli.pid("b")
    root = str(b.root)

    def kilnd_mounts():
        text = pathlib.Path(f"/proc/{pid}/mountinfo").read_text()
        return [l for l in text.splitlines() if f"{root}/exec" in l]

    wait_for(lambda: not kilnd_mounts(), "the step's mounts to be gone")
    exec_dir = b.root / "exec"
    wait_for(lambda: not exec_dir.exists() or
             [e.name for e in exec_dir.iterdir() if e.name not in ("runtime",)] == [],
             "the step's bundle to be removed")
    # the runtime keeps no state of the killed container (runc delete ran)
    runtime = exec_dir / "runtime"
    wait_for(lambda: not runtime.exists() or list(runtime.iterdir()) == [],
             "the runtime's state of the container to be deleted")
    # no active snapshot: every snapshot left is a committed one (with its
    # metadata file)
    snapshots = b.root / "snapshots"
    active = [d.name for d in snapshots.iterdir() if d.name.isdigit() and
              not (d / "meta").exists()]
    assert active == [], active
    # the daemon still builds
    b.build(tmp_path, HELLO)


def test_a_client_killed_mid_upload_leaves_the_daemon_working(builder, tmp_path):
    """kilnd applies a context's tar while it arrives: a client gone half
    way fails that build, drops the upload, and the next build of the same
    context works."""
    b = builder()
    empty = tmp_path / "empty"
    empty.mkdir()
    b.build(empty, "FROM scratch\n")  # the daemon runs
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for i in range(12):  # 192 MB: the upload lasts long enough to be cut
        (ctx / f"f{i}").write_bytes(bytes(16 << 20))
    pid = b.cli.pid("b")
    uploads = str(b.root / "local" / "tmp")

    def uploading():
        for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd).startswith(uploads):
                    return True
            except OSError:
                pass
        return False

    dockerfile = tmp_path / "cut.Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY . /ctx/\n")
    proc = subprocess.Popen(b.cli.argv("build", "--progress", "plain", "-f", dockerfile,
                                       str(ctx)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=b.cli.env)
    try:
        wait_for(lambda: uploading() or proc.poll() is not None, "the context upload to start")
        assert proc.poll() is None, "the build ended before its upload could be cut"
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not uploading(), "the cut upload to be dropped")
    out = b.build(ctx, "FROM scratch\nCOPY . /ctx/\n").stderr
    assert "DONE" in out


def test_network_none_for_the_whole_build(builder, tmp_path):
    b = builder()
    p = b.build(tmp_path, "FROM alpine\nRUN cat /proc/net/dev\n", "--network", "none")
    devices = [l.split(":")[0].strip() for l in logs_of(steps(p.stderr), "[2/2] RUN cat")
               if ":" in l]
    assert devices == ["lo"], devices


def test_restart_after_a_killed_daemon_stops_its_containers(builder, tmp_path):
    b = builder()
    b.build(tmp_path, HELLO)
    marker = "32" + str(os.getpid() % 1000).zfill(3) + "9"
    secret = "kiln-secret-" + os.urandom(8).hex()
    dockerfile = tmp_path.parent / f"{tmp_path.name}.Dockerfile"
    dockerfile.write_text("FROM alpine\n"
                          f"RUN --mount=type=secret,id=s,env=S sleep {marker}\n")
    proc = subprocess.Popen(
        b.cli.argv("build", "--progress", "plain", "--secret", "id=s,env=KILN_TEST_SECRET",
                   "-f", dockerfile, str(tmp_path)),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(b.cli.env, KILN_TEST_SECRET=secret))
    try:
        wait_for(lambda: _container_processes("sleep", marker), "the RUN step to start",
                 timeout=BUILD_TIMEOUT)
        os.kill(b.cli.pid("b"), signal.SIGKILL)
        proc.communicate(timeout=BUILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    # the next build starts a new kilnd, which stops what the old one left
    b.build(tmp_path, HELLO)
    assert not _container_processes("sleep", marker)
    exec_dir = b.root / "exec"
    leftovers = [e.name for e in exec_dir.iterdir() if e.name != "runtime"]
    assert leftovers == [], leftovers
    assert list((exec_dir / "runtime").iterdir()) == []


def test_one_cache_mounted_twice_in_a_step_is_one_directory(builder, tmp_path):
    b = builder()
    p = b.build(tmp_path, "FROM alpine\n"
                "RUN --mount=type=cache,id=x,target=/a,sharing=locked "
                "--mount=type=cache,id=x,target=/b,sharing=locked "
                "echo same > /a/f && cat /b/f\n")
    assert logs_of(steps(p.stderr), "[stage-0 2/2] RUN --mount=type=cache") == ["same"]


def test_copy_of_a_missing_file_fails_as_buildkit_says(builder, tmp_path):
    b = builder()
    p = b.build(tmp_path, "FROM alpine\nCOPY nothere /x\n", check=False)
    assert p.returncode == 1
    assert "failed to compute cache key: failed to calculate checksum of ref" in p.stderr, \
        p.stderr
    assert '"/nothere": not found' in p.stderr, p.stderr


def test_crun_runs_steps_on_this_hybrid_cgroup_machine(builder, tmp_path):
    if not shutil.which("crun"):
        pytest.fail("crun is missing: scripts/install-deps installs it")
    b = builder('[worker.oci]\n  binary = "crun"\n')
    p = b.build(tmp_path, "FROM alpine\nRUN echo from crun && id -u\n")
    assert logs_of(steps(p.stderr), "[2/2] RUN echo from crun") == ["from crun", "0"]
    assert "runtime=crun" in b.log()
