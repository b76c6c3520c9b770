# SPDX-License-Identifier: Apache-2.0
"""`kilnd --validate`: checks a buildkitd.toml the way buildkitd reads it,
prints warnings and errors with file:line:col on stderr, the effective
configuration as JSON on stdout, and exits 0 (usable) or 1 (not)."""
import json
import subprocess

import pytest


def validate(kilnd, *args, env=None):
    """Runs kilnd --validate; never reads /etc/buildkit unless asked to."""
    if not any(a == "--config" or a.startswith("--config=") for a in args):
        args = ("--config=",) + args
    p = subprocess.run([str(kilnd), "--validate", *args], capture_output=True, text=True,
                       timeout=30, env=env)
    return p


def ok_json(p):
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def write(tmp_path, text, name="buildkitd.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the real configurations from BuildKit --------------------------------


def test_documented_example(kilnd, testdata):
    path = testdata / "buildkitd-config" / "buildkitd.toml.md-example.toml"
    p = validate(kilnd, "--config", str(path))
    cfg = ok_json(p)

    assert cfg["root"] == "/var/lib/buildkit"
    assert cfg["insecure-entitlements"] == ["network.host", "security.insecure", "device"]
    assert cfg["proxyNetwork"] is True
    assert cfg["log"] == {"format": "text", "level": "info"}
    assert cfg["grpc"]["address"] == ["tcp://0.0.0.0:1234"]
    assert cfg["grpc"]["tls"]["ca"] == "/etc/buildkit/tlsca.crt"
    assert cfg["dns"]["nameservers"] == ["1.1.1.1", "8.8.8.8"]
    assert cfg["history"] == {"maxAge": "48h0m0s", "maxEntries": 50}
    assert cfg["cdi"]["disabled"] is True

    oci = cfg["worker"]["oci"]
    assert oci["max-parallelism"] == 4
    assert oci["cniPoolSize"] == 16
    assert oci["platforms"] == ["linux/amd64", "linux/arm64"]
    assert oci["snapshotter"] == "auto"
    assert oci["reservedSpace"] == "30%"
    assert oci["minFreeSpace"] == 20 * 2**30  # "20GB" is binary, as in buildkitd
    assert oci["labels"] == {"foo": "bar"}
    assert len(oci["gcpolicy"]) == 2
    assert oci["gcpolicy"][0]["reservedSpace"] == 512 * 2**20
    assert oci["gcpolicy"][0]["keepDuration"] == "48h0m0s"
    assert oci["gcpolicy"][1] == {"all": True, "reservedSpace": 1024000000}
    # defaults fill what the file leaves out
    assert oci["networkMode"] == "auto"
    assert oci["cniConfigPath"] == "/etc/buildkit/cni.json"
    assert oci["cniBinaryPath"] == "/opt/cni/bin"

    ctd = cfg["worker"]["containerd"]
    assert ctd["enabled"] is True
    assert ctd["runtime"]["options"] == {"BinaryName": "runc"}

    reg = cfg["registry"]
    assert reg["docker.io"]["mirrors"] == ["yourmirror.local:5000",
                                           "core.harbor.domain/proxy.docker.io"]
    assert reg["docker.io"]["http"] is True
    assert reg["docker.io"]["insecure"] is True
    assert reg["docker.io"]["ca"] == ["/etc/config/myca.pem"]
    assert reg["docker.io"]["keypair"] == [{"key": "/etc/config/key.pem",
                                            "cert": "/etc/config/cert.pem"}]
    assert reg["yourmirror.local:5000"] == {"http": True}
    assert cfg["frontend"]["gateway.v0"] == {"enabled": True, "allowedRepositories": []}
    assert cfg["system"] == {"platformsCacheMaxAge": "1h0m0s", "maxRegistryConcurrency": 4}

    # The documentation's [ghacache.*] tables do not exist in buildkitd's schema.
    lines = p.stderr.splitlines()
    assert lines == [f"{path}:209:2: warning: unknown key 'ghacache'; buildkitd has no "
                     "[ghacache] table (its documentation is wrong); write [cache.gha.sign] "
                     "command = [...] and [cache.gha.verify]"]


def test_compose_example(kilnd, testdata):
    path = testdata / "buildkitd-config" / "hack-composefiles-buildkitd.toml"
    p = validate(kilnd, "--config", str(path))
    cfg = ok_json(p)
    assert p.stderr == ""
    assert cfg["log"]["level"] == "debug"
    assert cfg["grpc"]["debugAddress"] == "0.0.0.0:6060"
    # everything else is buildkitd's defaults (with kiln's root and socket)
    assert cfg["root"] == "/var/lib/kiln"
    assert cfg["grpc"]["address"] == ["unix:///run/kiln/kilnd.sock"]
    assert cfg["worker"]["oci"]["max-parallelism"] == 0
    assert cfg["system"]["maxRegistryConcurrency"] == 4
    assert "registry" not in cfg


def test_flags_override_example(kilnd, testdata):
    path = testdata / "buildkitd-config" / "buildkitd.toml.md-example.toml"
    cfg = ok_json(validate(kilnd, "--config", str(path), "--oci-max-parallelism", "2",
                           "--oci-worker-net=host", "--debug", "--root", "/srv/kiln"))
    assert cfg["worker"]["oci"]["max-parallelism"] == 2
    assert cfg["worker"]["oci"]["networkMode"] == "host"
    assert cfg["log"]["level"] == "debug"
    assert cfg["root"] == "/srv/kiln"
    # what no flag touched stays as in the file
    assert cfg["worker"]["oci"]["cniPoolSize"] == 16
    assert cfg["registry"]["docker.io"]["mirrors"][0] == "yourmirror.local:5000"


# --- configurations that are usable, with warnings --------------------------


def test_mirror_config_from_the_docs(kilnd, tmp_path):
    path = write(tmp_path, 'debug = true\n[registry."docker.io"]\n'
                           '  mirrors = ["mirror.gcr.io"]\n')
    p = validate(kilnd, "--config", str(path))
    cfg = ok_json(p)
    assert cfg["log"]["level"] == "debug"
    assert cfg["debug"] is True
    assert cfg["registry"] == {"docker.io": {"mirrors": ["mirror.gcr.io"]}}
    assert p.stderr.splitlines() == [
        f"{path}:1:9: warning: 'debug' configuration option is deprecated, use "
        "'log.level = \"debug\"' instead"]


def test_unknown_keys_warn_with_did_you_mean(kilnd, tmp_path):
    path = write(tmp_path, "[worker.oci]\n"
                           "maxParallelism = 4\n"
                           "snapshoter = \"native\"\n"
                           "mirrors = [\"x\"]\n"
                           "[systen]\n")
    p = validate(kilnd, "--config", str(path))
    cfg = ok_json(p)
    assert cfg["worker"]["oci"]["max-parallelism"] == 0  # the typo set nothing
    assert p.stderr.splitlines() == [
        f"{path}:2:1: warning: unknown key 'maxParallelism' in [worker.oci]; "
        "did you mean 'max-parallelism'?",
        f"{path}:3:1: warning: unknown key 'snapshoter' in [worker.oci]; "
        "did you mean 'snapshotter'?",
        f"{path}:4:1: warning: unknown key 'mirrors' in [worker.oci]; "
        "did you mean 'mirrors' in [registry.\"<host>\"]?",
        f"{path}:5:2: warning: unknown key 'systen'; did you mean 'system'?",
    ]


def test_keys_match_case_insensitively(kilnd, tmp_path):
    # go-toml falls back to a case-insensitive match, so buildkitd accepts this
    path = write(tmp_path, "[worker.oci]\nMax-Parallelism = 3\n")
    p = validate(kilnd, "--config", str(path))
    cfg = ok_json(p)
    assert cfg["worker"]["oci"]["max-parallelism"] == 3
    assert f"{path}:2:1: warning: key 'Max-Parallelism' in [worker.oci] is read as " \
           "'max-parallelism'" in p.stderr


def test_unquoted_registry_host(kilnd, tmp_path):
    path = write(tmp_path, "[registry.docker.io]\nmirrors = [\"mirror.gcr.io\"]\n")
    p = validate(kilnd, "--config", str(path))
    cfg = ok_json(p)
    assert "docker.io" not in cfg.get("registry", {})
    assert p.stderr.splitlines() == [
        f"{path}:1:18: warning: unquoted registry host: TOML reads [registry.docker.io] as "
        "host 'docker' with a sub-table 'io', which buildkitd silently ignores; "
        "write [registry.\"docker.io\"]"]


def test_missing_default_config_is_empty(kilnd):
    # --config= reads no file at all: buildkitd's defaults
    cfg = ok_json(validate(kilnd))
    assert cfg["log"] == {"format": "text", "level": "info"}
    assert cfg["worker"]["oci"]["snapshotter"] == "auto"
    assert cfg["history"] == {"maxAge": "48h0m0s", "maxEntries": 50}
    assert cfg["system"]["platformsCacheMaxAge"] == "20s"
    assert cfg["worker"]["oci"]["platforms"][0].startswith("linux/")


# --- configurations that are not usable -------------------------------------


def failing(kilnd, *args):
    p = validate(kilnd, *args)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stdout == ""
    return p.stderr.splitlines()


def test_wrong_type(kilnd, tmp_path):
    path = write(tmp_path, "[worker.oci]\nmax-parallelism = \"4\"\n"
                           "[registry.\"docker.io\"]\nmirrors = \"mirror.gcr.io\"\n")
    assert failing(kilnd, "--config", str(path)) == [
        f"{path}:2:19: error: invalid type for 'max-parallelism' in [worker.oci]: expected "
        "integer, got string \"4\"; write max-parallelism = 4 without quotes",
        f"{path}:4:11: error: invalid type for 'mirrors' in [registry.\"docker.io\"]: expected "
        "array of strings, got string \"mirror.gcr.io\"; write mirrors = [\"mirror.gcr.io\"]",
    ]


def test_invalid_toml(kilnd, tmp_path):
    path = write(tmp_path, "[worker.oci]\nmax-parallelism = 4\nnetworkMode = cni\n")
    lines = failing(kilnd, "--config", str(path))
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:3:15: error: invalid TOML: "), lines


def test_negative_and_out_of_range_values(kilnd, tmp_path):
    path = write(tmp_path, "[worker.oci]\n"
                           "max-parallelism = -1\n"
                           "cniPoolSize = -16\n"
                           "reservedSpace = -5\n"
                           "[system]\n"
                           "maxRegistryConcurrency = 0\n"
                           "[history]\n"
                           "maxEntries = -1\n")
    assert failing(kilnd, "--config", str(path)) == [
        f"{path}:2:19: error: invalid value for 'max-parallelism' in [worker.oci]: must be "
        "zero or more, got -1",
        f"{path}:3:15: error: invalid value for 'cniPoolSize' in [worker.oci]: must be zero "
        "or more, got -16",
        f"{path}:4:17: error: invalid value for 'reservedSpace' in [worker.oci]: must not be "
        "negative, got -5",
        f"{path}:6:26: error: invalid value for 'maxRegistryConcurrency' in [system]: must be "
        "at least 1, got 0",
        f"{path}:8:14: error: invalid value for 'maxEntries' in [history]: must be zero or "
        "more, got -1",
    ]


def test_bad_enums_units_and_durations(kilnd, tmp_path):
    path = write(tmp_path, "insecure-entitlements = [\"network.hots\"]\n"
                           "[log]\nlevel = \"verbose\"\n"
                           "[worker.oci]\n"
                           "networkMode = \"cnl\"\n"
                           "snapshotter = \"overlay\"\n"
                           "minFreeSpace = \"20 GiBs\"\n"
                           "[[worker.oci.gcpolicy]]\nkeepDuration = \"2 days\"\n")
    lines = failing(kilnd, "--config", str(path))
    assert lines[0] == (f"{path}:1:26: error: invalid value for 'insecure-entitlements': "
                        "\"network.hots\" is not one of network.host, security.insecure, device; "
                        "did you mean \"network.host\"?")
    assert lines[1].startswith(f"{path}:3:9: error: invalid value for 'level' in [log]: "
                               "unsupported log level \"verbose\"")
    assert lines[2] == (f"{path}:5:15: error: invalid value for 'networkMode' in [worker.oci]: "
                        "\"cnl\" is not one of auto, cni, host, bridge; did you mean \"cni\"?")
    assert lines[3].startswith(f"{path}:6:15: error: invalid value for 'snapshotter' in "
                               "[worker.oci]: unknown snapshotter name \"overlay\"")
    assert lines[4].startswith(f"{path}:7:16: error: invalid value for 'minFreeSpace' in "
                               "[worker.oci]: invalid disk space \"20 GiBs\"")
    assert lines[5].startswith(f"{path}:9:16: error: invalid value for 'keepDuration' in "
                               "[[worker.oci.gcpolicy]] #1: invalid duration \"2 days\"")
    assert len(lines) == 6


def test_all_problems_reported_warnings_too(kilnd, tmp_path):
    path = write(tmp_path, "rooot = \"/x\"\n[worker.oci]\nmax-parallelism = true\n"
                           "gc = \"yes\"\n")
    lines = failing(kilnd, "--config", str(path))
    assert [l.split(": ")[1] for l in lines] == ["warning", "error", "error"]


def test_problems_come_in_file_order_flags_last(kilnd, tmp_path):
    # The snapshotter is checked after the whole file is read; it still
    # comes before the later lines, and the flag's problem comes last.
    path = write(tmp_path, "[worker.oci]\nsnapshotter = \"overlay\"\n"
                           "[system]\nmaxRegistryConcurrency = 0\n")
    lines = failing(kilnd, "--config", str(path), "--oci-worker-net", "bogus")
    assert [l.split(": ")[0] for l in lines] == [f"{path}:2:15", f"{path}:4:26", "error"], lines


def test_missing_explicit_config(kilnd, tmp_path):
    lines = failing(kilnd, "--config", str(tmp_path / "nope.toml"))
    assert any("failed to load config from" in l and "nope.toml" in l for l in lines), lines


# --- flags --------------------------------------------------------------------


def test_flags_override_file(kilnd, tmp_path):
    path = write(tmp_path, "[log]\nlevel = \"warn\"\n"
                           "[worker.oci]\nmax-parallelism = 4\nnetworkMode = \"host\"\n"
                           "cniConfigPath = \"/file/cni.json\"\n")
    cfg = ok_json(validate(kilnd, "--config", str(path)))
    assert cfg["worker"]["oci"]["max-parallelism"] == 4
    assert cfg["log"]["level"] == "warn"

    cfg = ok_json(validate(kilnd, "--config", str(path), "--oci-max-parallelism=1",
                           "--oci-worker-net", "cni", "--oci-cni-config-path",
                           "/flag/cni.json", "--log-level", "debug",
                           "--addr", "unix:///tmp/a.sock", "--addr", "unix:///tmp/b.sock"))
    oci = cfg["worker"]["oci"]
    assert oci["max-parallelism"] == 1
    assert oci["networkMode"] == "cni"
    # buildkitd ignores --oci-cni-config-path (a typo in its source); kiln honours it
    assert oci["cniConfigPath"] == "/flag/cni.json"
    assert cfg["log"]["level"] == "debug"
    assert cfg["grpc"]["address"] == ["unix:///tmp/a.sock", "unix:///tmp/b.sock"]


def test_addresses_the_daemon_cannot_use_are_errors(kilnd, tmp_path):
    # What --validate accepts, kilnd can listen on: the same checks run.
    path = write(tmp_path, "[grpc]\naddress = [\"tcp://127.0.0.1:1234\"]\n")
    lines = failing(kilnd, "--config", str(path))
    assert lines == [f"{path}:2:11: error: listening on 'tcp://127.0.0.1:1234' needs TLS: TCP "
                     "requires [grpc.tls] cert and key (--tlscert and --tlskey)"]
    long_path = "/tmp/" + "s" * 110
    for addr, why in [("fd://3", "scheme not supported by kiln"), ("unix://", "empty path"),
                      ("unix://" + long_path, "socket path longer than 107 bytes"),
                      ("tcp://127.0.0.1:99999", "bad port")]:
        lines = failing(kilnd, "--addr", addr)
        assert len(lines) == 1 and why in lines[0], (addr, lines)


def test_env_log_level(kilnd, tmp_path):
    import os
    env = dict(os.environ, BUILDKITD_LOG_LEVEL="trace")
    cfg = ok_json(validate(kilnd, env=env))
    assert cfg["log"]["level"] == "trace"
    cfg = ok_json(validate(kilnd, "--log-level=error", env=env))
    assert cfg["log"]["level"] == "error"


def test_bad_flags(kilnd, tmp_path):
    assert failing(kilnd, "--max-parallelism", "4") == [
        "error: unknown flag --max-parallelism; did you mean --oci-max-parallelism?"]
    assert failing(kilnd, "--oci-max-parallelism", "-2") == [
        "error: invalid value for --oci-max-parallelism: must be zero or more, got -2"]
    assert failing(kilnd, "--allow-insecure-entitlement", "root") == [
        "error: invalid value for --allow-insecure-entitlement: \"root\" is not one of "
        "network.host, security.insecure, device"]
    assert failing(kilnd, "--oci-worker-net") == ["error: flag needs an argument: "
                                                  "--oci-worker-net"]


def test_flag_and_file_errors_together(kilnd, tmp_path):
    path = write(tmp_path, "[worker.oci]\nmax-parallelism = \"4\"\n")
    lines = failing(kilnd, "--config", str(path), "--oci-worker-net=bogus")
    assert lines[0].startswith(f"{path}:2:19: error: invalid type for 'max-parallelism'")
    assert lines[1].startswith("error: invalid value for --oci-worker-net: \"bogus\"")


def test_help_lists_buildkitd_flags(kilnd):
    p = subprocess.run([str(kilnd), "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    for flag in ("--config", "--debug", "--root", "--addr", "--oci-worker-net",
                 "--oci-worker-binary", "--oci-max-parallelism", "--oci-cni-config-path",
                 "--oci-cni-binary-dir", "--oci-cni-pool-size", "--log-level", "--log-format",
                 "--tlscert", "--tlskey", "--tlscacert", "--validate"):
        assert flag in p.stdout, flag


def test_numbers_for_durations_and_sizes_are_read_as_written(kilnd, tmp_path):
    # buildkitd parses Duration and DiskSpace from the literal text, so
    # 1_000 and 0x10 are not 1000 and 16 there: kiln agrees on every spelling.
    ok = write(tmp_path, "[history]\nmaxAge = 1000\n"
                         "[worker.oci]\nreservedSpace = 1_000\nmaxUsedSpace = 1.5e9\n")
    cfg = ok_json(validate(kilnd, "--config", str(ok)))
    assert cfg["history"]["maxAge"] == "16m40s"
    assert cfg["worker"]["oci"]["reservedSpace"] == 1000
    assert cfg["worker"]["oci"]["maxUsedSpace"] == 1500000000

    bad = write(tmp_path, "[history]\nmaxAge = 1_000\n"
                          "[worker.oci]\nreservedSpace = 0x10\nminFreeSpace = -5\n",
                name="bad.toml")
    lines = failing(kilnd, "--config", str(bad))
    assert lines[0].startswith(f"{bad}:2:10: error: invalid value for 'maxAge' in [history]: "
                               "invalid duration 1_000;"), lines
    assert lines[1].startswith(f"{bad}:4:17: error: invalid value for 'reservedSpace' in "
                               "[worker.oci]: invalid disk space 0x10;"), lines
    assert lines[2] == (f"{bad}:5:16: error: invalid value for 'minFreeSpace' in "
                        "[worker.oci]: must not be negative, got -5"), lines
    assert len(lines) == 3
