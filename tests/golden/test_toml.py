# SPDX-License-Identifier: Apache-2.0
"""Golden tests of the TOML parser through build/tests/toml-decoder.

Runs every case of ../shared/testdata/toml-test (valid: decode and compare
with the expected tagged JSON by toml-test's rules; invalid: must exit 1
with a "line:col: message" on stderr), and decodes the buildkitd.toml
samples of ../shared/testdata/buildkitd-config against expected/*.json.

KILN_TESTDATA overrides the testdata folder, KILN_BUILD_DIR the build dir.
Missing testdata makes the tests SKIP, never pass.
"""

import datetime
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("KILN_TESTDATA") or REPO.parent / "shared" / "testdata")
BUILD = Path(os.environ.get("KILN_BUILD_DIR") or REPO / "build")
DECODER = BUILD / "tests" / "toml-decoder"
TOML_TEST = TESTDATA / "toml-test"
BUILDKITD = TESTDATA / "buildkitd-config"
TIMEOUT = 10  # seconds per decoder run; upstream allows 1 s, slack for loaded CI and valgrind

ERROR_RE = re.compile(rb"^\d+:\d+: \S")


def _cases(root, pattern):
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob(pattern))


def _params(names, marker):
    # One placeholder when the data is missing, so the test reports SKIPPED.
    return names or [pytest.param(marker, marks=pytest.mark.skip(reason=f"{marker} not found"))]


VALID = _cases(TOML_TEST, "valid/**/*.toml")
INVALID = _cases(TOML_TEST, "invalid/**/*.toml")
BUILDKITD_CASES = _cases(BUILDKITD, "*.toml")


def _decode(data):
    if not DECODER.is_file():
        pytest.fail(f"{DECODER} not found: build it first (ninja -C {BUILD})")
    return subprocess.run([str(DECODER)], input=data, capture_output=True, timeout=TIMEOUT)


# ---- toml-test comparison rules (upstream json.go, CompareJSON) ----

_DT_RE = re.compile(
    r"^(?:(\d{4})-(\d{2})-(\d{2}))?"  # date
    r"(?:T?(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?)?"  # time
    r"(Z|[+-]\d{2}:\d{2})?$"  # offset
)


def _parse_datetime(kind, text):
    text = text.replace(" ", "T").replace("t", "T").replace("z", "Z")
    m = _DT_RE.match(text)
    if not m or not text:
        raise ValueError(f"bad {kind} {text!r}")
    y, mo, d, h, mi, s, frac, off = m.groups()
    # Only millisecond precision is compared; extra digits are truncated.
    ms = int((frac or "0")[:3].ljust(3, "0"))
    has_date, has_time = y is not None, h is not None
    expect = {
        "datetime": (True, True, True),
        "datetime-local": (True, True, False),
        "date-local": (True, False, False),
        "time-local": (False, True, False),
    }[kind]
    if (has_date, has_time, off is not None) != expect:
        raise ValueError(f"bad {kind} {text!r}")
    if kind == "time-local":
        return (int(h), int(mi), int(s), ms)
    if kind == "date-local":
        return datetime.date(int(y), int(mo), int(d))
    tz = None
    if off == "Z":
        tz = datetime.timezone.utc
    elif off:
        sign = -1 if off[0] == "-" else 1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    # Second 60 (leap second) has no datetime representation: fold it into the next minute.
    sec = int(s)
    base = datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), min(sec, 59), ms * 1000, tz)
    return base + datetime.timedelta(seconds=max(sec - 59, 0))


def _is_tagged(v):
    return isinstance(v, dict) and set(v) == {"type", "value"} and all(isinstance(x, str) for x in v.values())


def _compare_tagged(path, e, a):
    if e["type"] != a["type"]:
        return f"{path}: type {a['type']!r}, expected {e['type']!r}"
    t, ev, av = e["type"], e["value"], a["value"]
    if t == "float":
        ev, av = ev.lower(), av.lower()
        if ev.endswith("nan") or av.endswith("nan"):
            ok = ev.lstrip("+-") == av.lstrip("+-")
        else:
            try:
                ok = float(ev) == float(av)
            except ValueError:
                ok = False
    elif t in ("datetime", "datetime-local", "date-local", "time-local"):
        try:
            ok = _parse_datetime(t, ev) == _parse_datetime(t, av)
        except ValueError as exc:
            return f"{path}: {exc}"
    elif t == "bool":
        ok = ev.lower() == av.lower()
    else:  # string, integer
        ok = ev == av
    return None if ok else f"{path}: {t} {av!r}, expected {ev!r}"


def compare(e, a, path="$"):
    """Returns None when actual a matches expected e, else a description."""
    if _is_tagged(e) or _is_tagged(a):
        if not (_is_tagged(e) and _is_tagged(a)):
            return f"{path}: got {json.dumps(a)[:80]}, expected {json.dumps(e)[:80]}"
        return _compare_tagged(path, e, a)
    if isinstance(e, dict):
        if not isinstance(a, dict):
            return f"{path}: got {type(a).__name__}, expected a table"
        if set(e) != set(a):
            return f"{path}: missing keys {sorted(set(e) - set(a))}, extra keys {sorted(set(a) - set(e))}"
        for k in e:
            diff = compare(e[k], a[k], f"{path}.{k}")
            if diff:
                return diff
        return None
    if isinstance(e, list):
        if not isinstance(a, list):
            return f"{path}: got {type(a).__name__}, expected an array"
        if len(e) != len(a):
            return f"{path}: {len(a)} elements, expected {len(e)}"
        for i, (x, y) in enumerate(zip(e, a)):
            diff = compare(x, y, f"{path}[{i}]")
            if diff:
                return diff
        return None
    return None if e == a else f"{path}: got {a!r}, expected {e!r}"


def _check_valid(toml_path, json_path):
    data = toml_path.read_bytes()
    expected = json.loads(json_path.read_bytes())
    res = _decode(data)
    assert res.returncode == 0, f"decoder rejected valid input: {res.stderr.decode(errors='replace')}"
    actual = json.loads(res.stdout)
    diff = compare(expected, actual)
    assert diff is None, diff


# ---- the self-check of the comparison ----


def test_compare_rules():
    f = lambda v: {"type": "float", "value": v}  # noqa: E731
    dt = lambda t, v: {"type": t, "value": v}  # noqa: E731
    assert compare(f("1e+06"), f("1000000.0")) is None
    assert compare(f("-0"), f("0")) is None
    assert compare(f("nan"), f("-nan")) is None
    assert compare(f("inf"), f("-inf")) is not None
    assert compare(dt("datetime", "1987-07-05T17:45:00Z"), dt("datetime", "1987-07-05T10:45:00-07:00")) is None
    assert compare(dt("datetime", "1987-07-05 17:45:00z"), dt("datetime", "1987-07-05T17:45:00Z")) is None
    assert compare(dt("time-local", "00:32:00.9999"), dt("time-local", "00:32:00.999")) is None
    assert compare(dt("time-local", "00:32:00.998"), dt("time-local", "00:32:00.999")) is not None
    assert compare(dt("datetime-local", "1987-07-05T17:45:00"), dt("datetime", "1987-07-05T17:45:00Z")) is not None
    assert compare({"a": f("1")}, {"a": f("1"), "b": f("2")}) is not None
    assert compare([f("1")], {"type": "string", "value": "1"}) is not None
    assert compare({"type": "integer", "value": "1"}, {"type": "integer", "value": "01"}) is not None


# ---- toml-test ----


def test_toml_case_list():
    """The walked cases are exactly the .toml files upstream lists for TOML 1.0."""
    listing = TOML_TEST / "files-toml-1.0.0"
    if not listing.is_file():
        pytest.skip(f"{listing} not found")
    listed = sorted(
        line[: -len(".toml")] for line in listing.read_text().splitlines() if line.endswith(".toml")
    )
    assert sorted(VALID + INVALID) == listed


@pytest.mark.parametrize("case", _params(VALID, "toml-test valid cases"))
def test_toml_valid(case):
    _check_valid(TOML_TEST / f"{case}.toml", TOML_TEST / f"{case}.json")


@pytest.mark.parametrize("case", _params(INVALID, "toml-test invalid cases"))
def test_toml_invalid(case):
    res = _decode((TOML_TEST / f"{case}.toml").read_bytes())
    assert res.returncode == 1, (
        f"decoder exited {res.returncode} (want 1): "
        f"stdout={res.stdout[:200]!r} stderr={res.stderr[:200]!r}"
    )
    assert ERROR_RE.match(res.stderr), f"stderr is not 'line:col: message': {res.stderr[:200]!r}"
    assert res.stdout == b""


# ---- buildkitd.toml samples ----


@pytest.mark.parametrize("case", _params(BUILDKITD_CASES, "buildkitd-config samples"))
def test_buildkitd_config(case):
    _check_valid(BUILDKITD / f"{case}.toml", BUILDKITD / "expected" / f"{case}.json")
