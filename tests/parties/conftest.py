"""Shared fixtures: one set of mutual-TLS certificates per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from parties.tls import write_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    write_certs(out)
    return out
