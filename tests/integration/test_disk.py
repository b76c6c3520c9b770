# SPDX-License-Identifier: Apache-2.0
"""kiln du, kiln prune and the daemon's garbage collector, end to end: the
records du lists add up to what is on disk under the builder's root, prune
frees them (and the next build is a cold one that still works), a prune
never breaks a build that runs meanwhile, and a builder whose maxUsedSpace
is tiny stays under it.

Uses the builder of test_build.py (a docker.io mirror on a local
docker-registry, runc)."""
import json
import os
import re
import subprocess
import time

from kilnhelpers import TIMEOUT, check_sanitizers, wait_for
from test_build import BUILD_TIMEOUT, builder, cached, steps  # noqa: F401 (fixture)

UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}

# A step whose output is big enough to stand out from the metadata.
BIG = ('FROM alpine\n'
       'RUN head -c 3000000 /dev/urandom > /big && echo made\n'
       'RUN echo "hello world"\n')


def human(text):
    """docker's units.HumanSize back to bytes (four significant digits)."""
    m = re.fullmatch(r"([0-9.]+)([kMGT]?B)\*?", text)
    assert m, f"not a size: {text!r}"
    return float(m.group(1)) * UNITS[m.group(2)]


def du(b, *args):
    p = b.cli.run("du", *args)
    check_sanitizers(p.stderr, "kiln du")
    assert p.returncode == 0, p.stderr
    return p.stdout


def table(out):
    """The rows of du's table as dicts, and the footer as {key: bytes}."""
    lines = out.splitlines()
    assert re.match(r"^ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED$", lines[0]), lines[0]
    rows, footer = [], {}
    for line in lines[1:]:
        m = re.match(r"^(Shared|Private|Reclaimable|Total):\t+(\S+)$", line)
        if m:
            footer[m.group(1)] = human(m.group(2))
            continue
        cells = re.split(r"\s{3,}", line.rstrip())
        rows.append({"id": cells[0], "reclaimable": cells[1] == "true",
                     "size": human(cells[2]), "shared": cells[2].endswith("*"),
                     "last": cells[3] if len(cells) > 3 else ""})
    return rows, footer


def disk_bytes(root):
    """Allocated bytes under root, as du counts them, without the cache
    metadata (meta.db and its journal: BuildKit does not count its metadata
    databases either)."""
    p = subprocess.run(["du", "-s", "--block-size=1", "--exclude=meta.db*", str(root)],
                       capture_output=True, text=True, check=True)
    return int(p.stdout.split()[0])


def prune(b, *args):
    p = b.cli.run("prune", *args)
    check_sanitizers(p.stderr, "kiln prune")
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_du_adds_up_to_the_disk(builder, tmp_path):
    b = builder()
    b.build(tmp_path, BIG)
    rows, footer = table(du(b))
    assert footer["Total"] > 3e6
    # the rows add up to the total (each rounded to four digits)
    assert abs(sum(r["size"] for r in rows) - footer["Total"]) <= 0.01 * footer["Total"]
    on_disk = disk_bytes(b.root)
    assert abs(footer["Total"] - on_disk) <= 0.15 * on_disk + 512 * 1024, \
        f"du says {footer['Total']:.0f} bytes, the disk {on_disk}\n" + du(b, "--verbose")
    # after a build nothing is in use
    assert footer["Reclaimable"] > 0.9 * footer["Total"] - 64 * 1024
    assert all(r["last"].endswith(" ago") for r in rows)

    verbose = du(b, "--verbose")
    assert re.search(r"^Description:  \[2/3\] RUN head -c 3000000", verbose, re.M), verbose
    assert re.search(r"^Type:         regular$", verbose, re.M)
    assert re.search(r"^Created at:   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC$",
                     verbose, re.M)
    # a filter: only what matches, and no footer
    only = du(b, "--filter", "description~=RUN head")
    rows, footer = table(only)
    assert len(rows) == 1 and footer == {} and rows[0]["size"] > 3e6


def test_prune_all_frees_everything_and_the_next_build_is_cold(builder, tmp_path):
    b = builder()
    b.build(tmp_path, BIG)
    before = disk_bytes(b.root)
    out = prune(b, "--all", "--force")
    lines = out.splitlines()
    assert re.match(r"^ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED$", lines[0]), out
    m = re.match(r"^Total:\t+(\S+)$", lines[-1])
    assert m, out
    freed = human(m.group(1))
    assert freed > 3e6
    after = disk_bytes(b.root)
    assert before - after >= 0.8 * freed, (before, after, freed)
    _, footer = table(du(b))
    assert footer["Reclaimable"] == 0

    p = b.build(tmp_path, BIG)
    lines = steps(p.stderr)
    assert not cached(lines, "[2/3] RUN head")
    assert not cached(lines, "[3/3] RUN echo")
    # and the cache works again after it
    p = b.build(tmp_path, BIG)
    assert cached(steps(p.stderr), "[3/3] RUN echo")


def test_prune_without_all_asks_first(builder, tmp_path):
    b = builder()
    b.build(tmp_path, BIG)
    p = subprocess.run(b.cli.argv("prune"), input="n\n", capture_output=True, text=True,
                       env=b.cli.env, timeout=TIMEOUT)
    assert p.returncode == 0
    assert p.stdout == ("WARNING! This will remove all dangling build cache. "
                        "Are you sure you want to continue? [y/N] ")
    rows, _ = table(du(b))
    assert any(r["size"] > 3e6 for r in rows)
    p = subprocess.run(b.cli.argv("prune", "--filter", "until=1h"), input="y\n",
                       capture_output=True, text=True, env=b.cli.env, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    # everything was used within the hour: nothing goes
    assert p.stdout.endswith("Total:\t\t0B\n") or p.stdout.endswith("Total:\t0B\n"), p.stdout


def test_prune_during_a_build_does_not_break_it(builder, tmp_path):
    b = builder()
    b.build(tmp_path, BIG)  # something to prune
    slow = ('FROM alpine\n'
            'RUN --mount=type=cache,target=/c echo start && sleep 4 && echo kept > /c/f && '
            'echo slept > /slept\n'
            'RUN cat /slept\n')
    argv = b.cli.argv("build", "--progress", "plain", "-f", "-", str(tmp_path))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=b.cli.env)
    proc.stdin.write(slow)
    proc.stdin.close()
    try:
        # the RUN is running: its log line has come
        deadline = time.monotonic() + BUILD_TIMEOUT
        seen = ""
        while "start" not in seen:
            line = proc.stderr.readline()
            assert line or time.monotonic() < deadline, "the build never started its RUN"
            seen += line
        prune(b, "--all", "--force")
        rest = proc.stderr.read()
        assert proc.wait(timeout=BUILD_TIMEOUT) == 0, seen + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "slept" in rest
    # the cache mount it used was skipped, not emptied under it
    rows, _ = table(du(b, "--filter", "type=exec.cachemount"))
    assert len(rows) == 1 and not rows[0]["id"].startswith("sha256:"), rows
    # what that build made is cached, so it survived the prune
    p = b.build(tmp_path, slow)
    lines = steps(p.stderr)
    cat = [name for name in lines if name.endswith("3/3] RUN cat /slept")]
    assert len(cat) == 1 and "CACHED" in lines[cat[0]], lines


def test_gc_keeps_the_store_under_max_used_space(builder, tmp_path):
    def small():
        _, footer = table(du(b))
        return footer["Total"] <= 1024 * 1024 and footer

    def cleaned():
        return "gc cleaned up" in b.log()

    # gc = false: nothing is collected, whatever the limits
    b = builder('[worker.oci]\n  gc = false\n  maxUsedSpace = "1MB"\n')
    b.build(tmp_path, BIG)
    time.sleep(2)
    _, footer = table(du(b))
    assert footer["Total"] > 3e6
    assert not cleaned()

    # gc on: the daemon collects once at start
    b.cli.ok("stop", "b")
    toml = b.cli.dir("b") / "etc" / "buildkit" / "buildkitd.toml"
    toml.write_text(toml.read_text().replace("gc = false", ""))
    b.cli.ok("inspect", "--bootstrap", "b")
    footer = wait_for(small, "the garbage collector at start", timeout=30)
    wait_for(cleaned, "the collector's log line")
    assert re.search(r'level=debug msg="gc cleaned up \d+ bytes"', b.log())
    # what stays is what is in use (unnamed blobs a build may still name)
    assert footer["Reclaimable"] == 0

    # and a second after a build (the start and the build's kicks fold
    # into one run); the build itself still works from a cold cache
    b.cli.ok("stop", "b")
    p = b.build(tmp_path, BIG)
    assert not cached(steps(p.stderr), "[2/3] RUN head")
    wait_for(small, "the garbage collector after a build", timeout=30)


def test_named_images_are_shared_and_keep_their_blobs(builder, tmp_path):
    b = builder()
    b.build(tmp_path, BIG, "-o", "type=image,name=example.com/disk:1")
    rows, footer = table(du(b))
    steps_rows = [r for r in rows if not r["id"].startswith("sha256:")]
    assert steps_rows and all(r["shared"] for r in steps_rows), rows
    assert footer["Shared"] > 3e6
    # a plain prune keeps what an image needs
    out = prune(b, "--force")
    assert out.splitlines()[-1] in ("Total:\t0B", "Total:\t\t0B"), out
    # --all removes the build cache, never the image's content
    prune(b, "--all", "--force")
    images = json.loads((b.root / "images.json").read_text())
    manifest_digest = images["example.com/disk:1"]["digest"]
    blobs = b.root / "content" / "blobs" / "sha256"
    manifest = json.loads((blobs / manifest_digest.split(":")[1]).read_text())
    for d in [manifest["config"]] + manifest["layers"]:
        assert (blobs / d["digest"].split(":")[1]).is_file(), d
    rows, _ = table(du(b))
    assert all(r["id"].startswith("sha256:") for r in rows), rows


def test_cache_mounts_are_records_of_their_own(builder, tmp_path):
    b = builder()
    dockerfile = ('FROM alpine\n'
                  'RUN --mount=type=cache,target=/cache head -c 2000000 /dev/urandom > '
                  '/cache/blob && echo filled\n')
    b.build(tmp_path, dockerfile)
    verbose = du(b, "--verbose")
    blocks = [blk for blk in verbose.split("\n\n") if "Type:         exec.cachemount" in blk]
    assert len(blocks) == 1, verbose
    assert "Mutable:      true" in blocks[0]
    rows, _ = table(du(b, "--filter", "type=exec.cachemount"))
    assert len(rows) == 1 and rows[0]["id"].endswith("*") and rows[0]["size"] > 1.9e6, rows
    out = prune(b, "--force", "--filter", "type=exec.cachemount")
    assert len(out.splitlines()) == 3, out  # header, the cache mount, Total
    assert out.splitlines()[1].split()[0] == rows[0]["id"]
    rows, _ = table(du(b, "--filter", "type=exec.cachemount"))
    assert rows == []
    # the build cache itself stayed
    assert any(r["size"] > 1e6 for r in table(du(b))[0])


def test_prune_space_limits(builder, tmp_path):
    b = builder()
    b.build(tmp_path, BIG)
    # a reserve larger than the cache: nothing goes
    out = prune(b, "--force", "--reserved-space", "100MB")
    assert out.splitlines() == ["Total:\t0B"], out
    p = b.cli.run("prune", "--force", "--keep-storage", "100MB")
    assert p.returncode == 0 and p.stdout.splitlines() == ["Total:\t0B"], p.stdout
    assert "Flag --keep-storage has been deprecated" in p.stderr
    # a cap: the least recently used records go, one at a time, until the
    # cache fits
    out = prune(b, "--force", "--max-used-space", "2MB")
    assert human(out.splitlines()[-1].split("\t")[-1]) > 3e6, out
    _, footer = table(du(b))
    assert footer["Total"] <= 2 * 1024 * 1024
    p = b.cli.run("prune", "--force", "--max-used-space", "lots")
    assert p.returncode != 0
    assert "invalid argument \"lots\" for \"--max-used-space\" flag" in p.stderr
