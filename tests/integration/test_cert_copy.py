# SPDX-License-Identifier: Apache-2.0
"""`kiln create --config FILE`: the certificate copy (DESIGN.md scenario 2).

The builder gets its own etc/buildkit/buildkitd.toml, byte for byte the
user's file except for the registry paths, which name copies in
etc/buildkit/certs/<host>/. On purpose better than buildx: relative paths
resolve against FILE's directory, a missing file fails create (naming the
key, the path and the reason) and leaves no builder, keys are 0600 and
directories 0700, same-named files do not overwrite each other, and a
tlsconfigdir is copied too.

Each test has its own KILN_CONFIG and removes its builders. No daemon is
started: create without --bootstrap only writes files; `kilnd --validate`
checks that the daemon reads the rewritten file as meant.
"""
import json
import os
import stat
import subprocess

import pytest

import kilnhelpers as H
from kilnhelpers import TIMEOUT


class Kiln(H.Kiln):
    """kiln with the builders a test creates removed at the end."""

    def __init__(self, binary, state):
        super().__init__(binary, state, state.parent)
        self.created = []

    def create(self, name, config, *extra, cwd=None, check=True):
        self.created.append(name)
        return self.run("create", "--name", name, "--config", config, *extra, cwd=cwd,
                        check=check)

    def cleanup(self):
        for name in self.created:
            if self.dir(name).exists():
                self.run("rm", name)


@pytest.fixture
def k(kiln, tmp_path):
    cli = Kiln(kiln, tmp_path / "state")
    yield cli
    cli.cleanup()


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def validate(kilnd, config):
    p = subprocess.run([str(kilnd), "--validate", "--config", str(config)], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_documented_scenario(k, kilnd, tmp_path):
    src = tmp_path / "certs"
    write(src / "myregistry.pem", "CA\n")
    write(src / "myregistry_key.pem", "KEY\n")
    write(src / "myregistry_cert.pem", "CERT\n")
    conf = write(tmp_path / "buildkitd.toml", (
        "# the documented example\n"
        "debug = true\n"
        "\n"
        '[registry."myregistry.com"]\n'
        f'  ca=["{src}/myregistry.pem"]   # the registry CA\n'
        '  [[registry."myregistry.com".keypair]]\n'
        f'    key="{src}/myregistry_key.pem"\n'
        f'    cert="{src}/myregistry_cert.pem"\n'
    ))
    k.create("mybuilder", conf)

    bk = k.buildkit_dir("mybuilder")
    certs = bk / "certs" / "myregistry.com"
    assert (bk / "buildkitd.toml").read_text() == (
        "# the documented example\n"
        "debug = true\n"
        "\n"
        '[registry."myregistry.com"]\n'
        f'  ca=["{certs}/myregistry.pem"]   # the registry CA\n'
        '  [[registry."myregistry.com".keypair]]\n'
        f'    key="{certs}/myregistry_key.pem"\n'
        f'    cert="{certs}/myregistry_cert.pem"\n'
    )
    assert (certs / "myregistry.pem").read_text() == "CA\n"
    assert (certs / "myregistry_key.pem").read_text() == "KEY\n"
    assert (certs / "myregistry_cert.pem").read_text() == "CERT\n"
    assert sorted(os.listdir(certs)) == ["myregistry.pem", "myregistry_cert.pem",
                                         "myregistry_key.pem"]
    assert mode(certs / "myregistry_key.pem") == 0o600
    assert mode(certs / "myregistry_cert.pem") == 0o644
    assert mode(certs / "myregistry.pem") == 0o644
    assert mode(certs) == 0o700
    assert mode(bk / "certs") == 0o700

    # The daemon reads the copy as meant: same settings, the copies' paths.
    reg = validate(kilnd, bk / "buildkitd.toml")["registry"]["myregistry.com"]
    assert reg["ca"] == [str(certs / "myregistry.pem")]
    assert reg["keypair"] == [{"key": str(certs / "myregistry_key.pem"),
                               "cert": str(certs / "myregistry_cert.pem")}]

    # The user can find both, as the documentation does with docker exec.
    p = k.run("inspect", "mybuilder", check=True)
    assert str(bk / "buildkitd.toml") in p.stdout
    assert str(bk / "certs") in p.stdout

    # Later edits of the user's files do not reach the builder.
    write(src / "myregistry.pem", "CHANGED\n")
    assert (certs / "myregistry.pem").read_text() == "CA\n"


def test_host_with_port_is_sanitised(k, tmp_path):
    write(tmp_path / "ca.pem", "CA")
    conf = write(tmp_path / "bk.toml", '[registry."myreg:5000"]\nca = ["ca.pem"]\n')
    k.create("b", conf)
    bk = k.buildkit_dir("b")
    assert (bk / "certs" / "myreg_5000" / "ca.pem").read_text() == "CA"
    assert f'"{bk}/certs/myreg_5000/ca.pem"' in (bk / "buildkitd.toml").read_text()


def test_relative_paths_resolve_against_the_config_directory(k, tmp_path):
    write(tmp_path / "conf" / "ca.pem", "CA")
    write(tmp_path / "conf" / "tls" / "client.key", "KEY")
    write(tmp_path / "conf" / "tls" / "client.cert", "CERT")
    write(tmp_path / "conf" / "bk.toml", (
        '[registry."r.example"]\n'
        'ca = ["ca.pem"]\n'
        '[[registry."r.example".keypair]]\n'
        'key = "tls/client.key"\n'
        'cert = "./tls/client.cert"\n'
    ))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A relative --config from another directory: FILE's directory counts.
    k.create("rel", "../conf/bk.toml", cwd=elsewhere)
    certs = k.buildkit_dir("rel") / "certs" / "r.example"
    assert (certs / "ca.pem").read_text() == "CA"
    assert (certs / "client.key").read_text() == "KEY"
    assert (certs / "client.cert").read_text() == "CERT"
    assert mode(certs / "client.key") == 0o600


def test_missing_file_fails_and_leaves_no_builder(k, tmp_path):
    write(tmp_path / "ca.pem", "CA")
    write(tmp_path / "client.cert", "CERT")
    conf = write(tmp_path / "bk.toml", (
        '[registry."myregistry.com"]\n'
        'ca = ["ca.pem"]\n'
        '[[registry."myregistry.com".keypair]]\n'
        'cert = "client.cert"\n'
        'key = "client.key"\n'
    ))
    p = k.create("broken", conf, check=False)
    assert p.returncode != 0
    assert f"{conf}:5:7:" in p.stderr
    assert 'registry."myregistry.com".keypair[0].key' in p.stderr
    assert str(tmp_path / "client.key") in p.stderr
    assert "No such file or directory" in p.stderr
    assert not (k.state / "builders" / "broken").exists()
    leftovers = [n for n in os.listdir(k.state / "builders")] if (k.state / "builders").exists() \
        else []
    assert leftovers == []
    assert "broken" not in k.run("ls").stdout


def test_invalid_config_fails_with_position(k, tmp_path):
    conf = write(tmp_path / "bk.toml", '[registry."h"]\nca = "ca.pem"\n')
    p = k.create("invalid", conf, check=False)
    assert p.returncode != 0
    assert f"{conf}:2:6:" in p.stderr
    assert "expected array of strings" in p.stderr
    assert not (k.state / "builders" / "invalid").exists()


def test_same_name_files_do_not_overwrite(k, tmp_path):
    write(tmp_path / "a" / "ca.pem", "CA-A")
    write(tmp_path / "b" / "ca.pem", "CA-B")
    write(tmp_path / "c" / "ca.pem", "CA-A")
    conf = write(tmp_path / "bk.toml",
                 '[registry."h"]\nca = ["a/ca.pem", "b/ca.pem", "c/ca.pem"]\n')
    k.create("clash", conf)
    bk = k.buildkit_dir("clash")
    certs = bk / "certs" / "h"
    assert sorted(os.listdir(certs)) == ["ca-1.pem", "ca.pem"]
    assert (certs / "ca.pem").read_text() == "CA-A"
    assert (certs / "ca-1.pem").read_text() == "CA-B"
    assert (bk / "buildkitd.toml").read_text() == (
        f'[registry."h"]\nca = ["{certs}/ca.pem", "{certs}/ca-1.pem", "{certs}/ca.pem"]\n')


def test_tlsconfigdir_is_copied_and_rewritten(k, kilnd, tmp_path):
    d = tmp_path / "certs.d" / "myregistry.com"
    write(d / "ca.crt", "CA")
    write(d / "client.cert", "CERT")
    write(d / "client.key", "KEY")
    write(d / "notes.txt", "not read by BuildKit")
    conf = write(tmp_path / "bk.toml",
                 '[registry."myregistry.com"]\ntlsconfigdir = ["certs.d/myregistry.com"]\n')
    k.create("tlsdir", conf)
    bk = k.buildkit_dir("tlsdir")
    copy = bk / "certs" / "myregistry.com" / "myregistry.com"
    assert sorted(os.listdir(copy)) == ["ca.crt", "client.cert", "client.key"]
    assert mode(copy) == 0o700
    assert mode(copy / "client.key") == 0o600
    assert mode(copy / "ca.crt") == 0o644
    reg = validate(kilnd, bk / "buildkitd.toml")["registry"]["myregistry.com"]
    assert reg["tlsconfigdir"] == [str(copy)]


def test_tlsconfigdir_cert_without_key_fails(k, tmp_path):
    write(tmp_path / "d" / "client.cert", "CERT")
    conf = write(tmp_path / "bk.toml", '[registry."h"]\ntlsconfigdir = ["d"]\n')
    p = k.create("nokey", conf, check=False)
    assert p.returncode != 0
    assert "'client.cert'" in p.stderr and "'client.key'" in p.stderr
    assert not (k.state / "builders" / "nokey").exists()


def test_append_and_rm_then_create_refresh_the_copies(k, tmp_path):
    write(tmp_path / "ca.pem", "ONE")
    write(tmp_path / "old.pem", "OLD")
    conf = write(tmp_path / "bk.toml", '[registry."h"]\nca = ["ca.pem", "old.pem"]\n')
    k.create("fresh", conf)
    certs = k.buildkit_dir("fresh") / "certs" / "h"
    assert (certs / "ca.pem").read_text() == "ONE"

    write(tmp_path / "ca.pem", "TWO")
    write(tmp_path / "bk.toml", '[registry."h"]\nca = ["ca.pem"]\n')
    k.create("fresh", conf, "--append")
    assert (certs / "ca.pem").read_text() == "TWO"
    assert os.listdir(certs) == ["ca.pem"]
    assert sorted(os.listdir(k.buildkit_dir("fresh").parent)) == ["buildkit"]

    # A refresh that fails keeps the builder as it was.
    write(tmp_path / "bk.toml", '[registry."h"]\nca = ["ca.pem", "gone.pem"]\n')
    p = k.create("fresh", conf, "--append", check=False)
    assert p.returncode != 0
    assert "gone.pem" in p.stderr
    assert (certs / "ca.pem").read_text() == "TWO"

    k.run("rm", "fresh", check=True)
    assert not (k.state / "builders" / "fresh").exists()
    write(tmp_path / "ca.pem", "THREE")
    write(tmp_path / "bk.toml", '[registry."h"]\nca = ["ca.pem"]\n')
    k.create("fresh", conf)
    assert (certs / "ca.pem").read_text() == "THREE"
