"""The ``brokerd`` command pins glibc's mmap threshold so freed big bodies
leave the process (see brokerd/malloc.py for the measurements)."""

from __future__ import annotations

import platform

import pytest

from brokerd.malloc import pin_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_mmap_threshold_is_pinned_on_glibc() -> None:
    assert pin_mmap_threshold() is True
