"""Fixtures for every suite.

`private_tmpdir` (session, automatic): temporary files of the tests and of every process they
start (controllers, webhooks, kubectl, the test API server's scripts) go under pytest's base
temporary directory, not /tmp. The `kubernetes` client writes a kubeconfig's embedded
certificate and private key to temporary files and removes them at exit, but only at a
normal exit: a controller a test kills, or one that leaves with `os._exit` on a lost lease,
would leave them in /tmp. pytest keeps its last three base directories and deletes older
ones (with the test API server's PKI, which lives there too).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`TMPDIR` (for subprocesses) and `tempfile`'s directory (for this process) point to a
    folder under pytest's base temporary directory for the whole session."""
    path = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(path))
        patch.setattr(tempfile, "tempdir", str(path))
        yield path
