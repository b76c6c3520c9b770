# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: where the binaries and the shared test data are."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def build_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("KILN_BUILD_DIR", REPO / "build"))


def testdata_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("KILN_TESTDATA", REPO.parent / "shared" / "testdata"))


@pytest.fixture(scope="session")
def kilnd() -> pathlib.Path:
    path = build_dir() / "kilnd"
    if not path.exists():
        pytest.fail(f"{path} is missing: run 'make' first")
    return path


@pytest.fixture(scope="session")
def kiln() -> pathlib.Path:
    path = build_dir() / "kiln"
    if not path.exists():
        pytest.fail(f"{path} is missing: run 'make' first")
    return path


@pytest.fixture(scope="session")
def testdata() -> pathlib.Path:
    """../shared/testdata; tests that need it are skipped where it is absent."""
    path = testdata_dir()
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path}")
    return path
