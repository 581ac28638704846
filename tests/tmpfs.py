"""A small tmpfs for the tests that fill a disk for real.

Mounting needs root. These tests are opt-in on a developer's machine and
mandatory where ``BROKERD_DISK_TESTS=1`` is set (CI runs as root and sets it):
there, being unable to mount is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

OPT_IN = "BROKERD_DISK_TESTS"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """``where`` as a fresh tmpfs of ``size`` (``8m``, ``64m``), unmounted afterwards."""
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"opt-in: set {OPT_IN}=1 (needs root to mount a small tmpfs; CI sets it)")
    if os.geteuid() != 0:
        pytest.fail(f"{OPT_IN}=1 but not root: mounting a tmpfs needs root")
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"{OPT_IN}=1 but a tmpfs cannot be mounted: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
