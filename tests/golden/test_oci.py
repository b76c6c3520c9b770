# SPDX-License-Identifier: Apache-2.0
"""Golden tests of src/content/ (image documents) through oci-check.

Over ../shared/testdata/oci (README.md there):
- image-spec/cases.tsv: every row is validated as its media type and must be
  accepted or refused as `expect` says, classified as the kind its file name
  gives; rows whose note carries a sha256 digest (the Docker v2 vectors) must
  hash to it; every spec example is listed.
- buildkit-compat-goldens: for each (exporter, case, version) combination,
  found with upstream's lookup rule (common/ first), the manifest and config
  parse as the media types BuildKit wrote, the manifest points at the config
  by digest and size, and both serialise back to the exact golden bytes.

KILN_TESTDATA overrides the testdata folder, KILN_BUILD_DIR the build dir.
Missing testdata makes the tests SKIP, never pass.
"""

import csv
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("KILN_TESTDATA") or REPO.parent / "shared" / "testdata")
BUILD = Path(os.environ.get("KILN_BUILD_DIR") or REPO / "build")
OCI = TESTDATA / "oci"
SPEC = OCI / "image-spec"
GOLDENS = OCI / "buildkit-compat-goldens"
TIMEOUT = 10

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

KIND_BY_SUFFIX = {
    "manifest": "manifest",
    "index": "index",
    "config": "config",
    "descriptor": "descriptor",
    "oci-layout": "oci-layout",
}
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def _checker():
    p = BUILD / "tests" / "oci-check"
    if p.is_file():
        return p
    pytest.fail(f"oci-check not found under {BUILD}: build it first (ninja -C {BUILD})")


def check(path, media_type=None):
    args = [str(_checker())]
    if media_type:
        args += ["-t", media_type]
    res = subprocess.run(args + [str(path)], capture_output=True, timeout=TIMEOUT)
    info = json.loads(res.stdout) if res.returncode == 0 else None
    return res.returncode, info, res.stderr.decode(errors="replace")


def _params(items, what):
    # One placeholder when the data is missing, so the test reports SKIPPED.
    return items or [pytest.param(None, marks=pytest.mark.skip(reason=f"{what} not found"))]


# ---- image-spec ----


def _rows():
    tsv = SPEC / "cases.tsv"
    if not tsv.is_file():
        return []
    with tsv.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _rows()
DIGEST_ROWS = [r for r in ROWS if DIGEST_RE.search(r.get("note") or "")]


def _kind_of(file):
    m = re.search(r"\.([a-z-]+)\.json$", file)
    if m and m.group(1) in KIND_BY_SUFFIX:
        return KIND_BY_SUFFIX[m.group(1)]
    return None


def test_spec_examples_listed():
    """cases.tsv lists every spec example, and 13 of them (README counts)."""
    examples = SPEC / "spec-examples"
    if not examples.is_dir():
        pytest.skip(f"{examples} not found")
    listed = {r["file"] for r in ROWS if r["file"].startswith("spec-examples/")}
    on_disk = {f"spec-examples/{p.name}" for p in examples.glob("*.json")}
    assert listed == on_disk
    assert len(on_disk) == 13


@pytest.mark.parametrize("row", _params(ROWS, "image-spec/cases.tsv"), ids=lambda r: r and r["file"])
def test_image_spec_case(row):
    code, info, stderr = check(SPEC / row["file"], row["media_type"])
    if row["expect"] == "valid":
        assert code == 0, f"refused a valid {row['media_type']}: {stderr}"
        assert info["media_type"] == row["media_type"]
        kind = _kind_of(row["file"])
        if kind:
            assert info["kind"] == kind
        data = (SPEC / row["file"]).read_bytes()
        assert info["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert info["size"] == len(data)
    else:
        assert code == 1, f"accepted an invalid {row['media_type']} (exit {code})"
        assert stderr.strip(), "no error message"


@pytest.mark.parametrize("row", _params(DIGEST_ROWS, "Docker v2 digest vectors in cases.tsv"),
                         ids=lambda r: r and r["file"])
def test_docker_vector_digest(row):
    """The Docker v2 vectors: parse as their own (Docker) media types, and
    the digest of the exact bytes is the one cases.tsv gives."""
    expected = DIGEST_RE.search(row["note"]).group(0)
    data = (SPEC / row["file"]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == expected
    doc = json.loads(data)
    docker_type = doc.get("mediaType") if isinstance(doc, dict) else None
    if not docker_type and "rootfs" in doc:
        docker_type = DOCKER_CONFIG
    code, info, stderr = check(SPEC / row["file"], docker_type)
    assert code == 0, stderr
    assert info["digest"] == expected


def test_spec_classification():
    """What the examples are: an image, artifacts, nested indexes."""
    ex = SPEC / "spec-examples"
    if not ex.is_dir():
        pytest.skip(f"{ex} not found")
    _, m1, _ = check(ex / "manifest-1.manifest.json", OCI_MANIFEST)
    assert m1["image"] is True and m1["layers"] == 3
    for n in (3, 4, 5):
        _, art, err = check(ex / f"manifest-{n}.manifest.json", OCI_MANIFEST)
        assert art and art["image"] is False, err
    _, idx, _ = check(ex / "image-index-1.index.json")
    assert idx["kind"] == "index" and idx["platforms"] == ["linux/ppc64le", "linux/amd64"]
    _, idx2, _ = check(ex / "image-index-2.index.json")
    assert idx2["platforms"] == ["linux/ppc64le", None]
    _, empty, _ = check(ex / "manifest-2.descriptor.json", "application/vnd.oci.descriptor.v1+json")
    assert empty["target_media_type"] == "application/vnd.oci.empty.v1+json"


def test_wrong_media_type_refused(tmp_path):
    """A manifest handed over as an index (or an unknown type) is refused,
    and the message says what is supported."""
    ex = SPEC / "spec-examples" / "manifest-1.manifest.json"
    if not ex.is_file():
        pytest.skip(f"{ex} not found")
    code, _, err = check(ex, "application/vnd.oci.image.index.v1+json")
    assert code == 1 and "mediaType" in err
    code, _, err = check(ex, "application/x-unknown")
    assert code == 1 and "supported:" in err and OCI_MANIFEST in err


# ---- BuildKit compatibility goldens ----

EXPORTERS = ("image", "oci")
FORCED_OCI = {"oci-mediatypes", "zstd-oci-types", "provenance-attestation"}


def _golden(exporter, case, version, name):
    common = GOLDENS / "common" / case / f"v{version}" / name
    return common if common.is_file() else GOLDENS / exporter / case / f"v{version}" / name


def _combos():
    if not (GOLDENS / "common").is_dir():
        return []
    cases = sorted(p.name for p in (GOLDENS / "common").iterdir() if p.is_dir())
    out = []
    for exporter in EXPORTERS:
        for case in cases:
            for version in (10, 20, 30):
                if _golden(exporter, case, version, "manifest.json").is_file():
                    out.append((exporter, case, version))
    return out


COMBOS = _combos()


def test_golden_combination_count():
    if not COMBOS:
        pytest.skip(f"{GOLDENS} not found")
    assert len(COMBOS) == 48


@pytest.mark.parametrize("combo", _params(COMBOS, "buildkit-compat-goldens"),
                         ids=lambda c: c and f"{c[0]}-{c[1]}-v{c[2]}")
def test_buildkit_golden(combo):
    exporter, case, version = combo
    manifest_path = _golden(exporter, case, version, "manifest.json")
    config_path = _golden(exporter, case, version, "config.json")

    docker = exporter == "image" and version in (10, 20) and case not in FORCED_OCI
    code, m, err = check(manifest_path)
    assert code == 0, err
    assert m["kind"] == "manifest"
    assert m["media_type"] == (DOCKER_MANIFEST if docker else OCI_MANIFEST)
    assert m["config_media_type"] == (DOCKER_CONFIG if docker else OCI_CONFIG)
    assert m["image"] is True
    assert m["roundtrip"] is True, "serialising the manifest did not give the golden bytes"

    code, c, err = check(config_path, m["config_media_type"])
    assert code == 0, err
    assert c["kind"] == "config"
    assert c["digest"] == m["config_digest"]
    assert c["size"] == m["config_size"]
    assert c["platform"] == "linux/amd64"
    assert c["diff_ids"] == m["layers"]
    assert c["roundtrip"] is True, "serialising the config did not give the golden bytes"
