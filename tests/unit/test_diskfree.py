"""The free-disk alarm's rules, driven by a fake free-space probe and explicit
times (no real disk is filled, no sleeps)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from brokerd.config import ConfigError, load
from brokerd.diskfree import CHECK_INTERVAL, DELIVERY_MARGIN, DiskMonitor
from brokerd.sizes import format_size, parse_size

MB = 1_000_000
LIMIT = 100 * MB


class Disk:
    """A fake filesystem: free space set by the test, probes counted."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.probes = 0
        self.written = 0
        self.fail: OSError | None = None

    def probe(self, path: str) -> int:
        self.probes += 1
        if self.fail is not None:
            raise self.fail
        return self.free


def monitor(disk: Disk, changes: list[bool], limit: int = LIMIT) -> DiskMonitor:
    return DiskMonitor(
        "/data", limit, changes.append, written=lambda: disk.written, probe=disk.probe
    )


# --- sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("1048576", 1048576),
        (4096, 4096),
        ("500MB", 500 * MB),
        ("1GB", 1_000_000_000),
        ("1gb", 1_000_000_000),
        ("128MiB", 128 * 2**20),
        ("2G", 2 * 2**30),
        ("1.5GiB", 3 * 2**29),
        ("64 kB", 64_000),
        ("10B", 10),
    ],
)
def test_sizes_take_decimal_and_binary_units(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "GB", "1XB", "-1GB", "1e9", "1 2", "nan", True])
def test_bad_sizes_are_refused_with_the_value_named(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)  # type: ignore[arg-type]


def test_sizes_print_in_binary_units() -> None:
    assert format_size(128 * 2**20) == "128.0 MiB"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(12) == "12 B"


# --- config --------------------------------------------------------------------------


def test_min_free_disk_default_is_modest_and_on() -> None:
    config = load([], env={})
    assert 0 < config.min_free_disk <= 256 * 2**20


def test_min_free_disk_from_flag_env_and_file(tmp_path: Path) -> None:
    assert load(["--min-free-disk", "1GB"], env={}).min_free_disk == 1_000_000_000
    assert load([], env={"BROKERD_MIN_FREE_DISK": "500MB"}).min_free_disk == 500 * MB
    toml = tmp_path / "brokerd.toml"
    toml.write_text('min_free_disk = "2GiB"\n')
    assert load(["--config", str(toml)], env={}).min_free_disk == 2 * 2**30
    toml.write_text("min_free_disk = 1024\n")
    assert load(["--config", str(toml)], env={}).min_free_disk == 1024
    assert load(["--min-free-disk", "0"], env={}).min_free_disk == 0


def test_bad_min_free_disk_stops_the_broker_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="min_free_disk"):
        load(["--min-free-disk", "lots"], env={})


# --- the monitor ---------------------------------------------------------------------


def test_alarm_rises_below_the_limit_and_clears_when_space_returns() -> None:
    disk, changes = Disk(free=LIMIT * 2), []
    m = monitor(disk, changes)
    m.check(0.0)
    assert not m.alarm and changes == []
    disk.free = LIMIT - 1
    m.tick(CHECK_INTERVAL)
    assert m.alarm and changes == [True]
    m.tick(2 * CHECK_INTERVAL)  # still low: no second raise
    assert changes == [True]
    disk.free = LIMIT
    m.tick(3 * CHECK_INTERVAL)
    assert not m.alarm and changes == [True, False]
    assert m.free == LIMIT


def test_alarm_logs_once_when_raised_and_once_when_cleared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk, changes = Disk(free=LIMIT // 2), []
    m = monitor(disk, changes)
    with caplog.at_level(logging.INFO, logger="brokerd.diskfree"):
        for i in range(5):
            m.tick(i * CHECK_INTERVAL)
        disk.free = LIMIT * 3
        for i in range(5, 10):
            m.tick(i * CHECK_INTERVAL)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "below" in lines[0] and "blocked" in lines[0] and "/data" in lines[0]
    assert "resume" in lines[1]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]


def test_free_space_is_checked_at_a_modest_rate_not_every_tick() -> None:
    disk, changes = Disk(free=LIMIT * 10), []
    m = monitor(disk, changes)
    m.check(0.0)
    ticks = int(10 * CHECK_INTERVAL / 0.02)
    for i in range(1, ticks + 1):
        m.tick(i * 0.02)
    assert disk.probes <= 12  # about one per CHECK_INTERVAL, not one per 20 ms tick


def test_writes_that_may_cross_the_limit_trigger_an_early_check() -> None:
    # The early check starts DELIVERY_MARGIN above the limit (see the ample tests).
    disk, changes = Disk(free=LIMIT + DELIVERY_MARGIN + 10 * MB), []
    m = monitor(disk, changes)
    m.check(0.0)
    probes = disk.probes
    disk.written += 1 * MB  # far from the limit: no early check
    m.tick(0.02)
    assert disk.probes == probes
    disk.written += 10 * MB  # may have crossed it: check now, not at the next interval
    disk.free = LIMIT - MB
    m.tick(0.04)
    assert disk.probes == probes + 1
    assert m.alarm and changes == [True]


def test_failing_probe_is_logged_once_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk, changes = Disk(free=LIMIT * 2), []
    m = monitor(disk, changes)
    disk.fail = OSError(5, "Input/output error")
    with caplog.at_level(logging.WARNING, logger="brokerd.diskfree"):
        for i in range(5):
            m.tick(i * CHECK_INTERVAL)
    assert not m.alarm and changes == []
    assert len(caplog.records) == 1
    assert "Input/output error" in caplog.records[0].getMessage()


# --- whether a delivery may go out before its write ------------------------------------


def test_deliveries_may_precede_writes_only_with_the_margin_left_after_pending_writes() -> None:
    disk, changes = Disk(free=LIMIT + DELIVERY_MARGIN + 10 * MB), []
    m = monitor(disk, changes)
    assert not m.ample(0)  # no reading yet
    m.check(0.0)
    assert m.ample(0)
    assert m.ample(5 * MB)  # written twice (WAL, then database): 10 MB, still inside
    assert not m.ample(5 * MB + 1)
    disk.written += 5 * MB  # committed since the reading counts the same way
    assert m.ample(0)
    assert not m.ample(1)


def test_deliveries_wait_for_writes_below_the_margin_even_with_the_alarm_off() -> None:
    disk, changes = Disk(free=DELIVERY_MARGIN - 1), []
    m = monitor(disk, changes, limit=0)
    m.check(0.0)
    assert not m.alarm and changes == []  # a limit of 0: no alarm, whatever is free
    assert not m.ample(0)
    disk.free = DELIVERY_MARGIN
    m.tick(0.02)  # below the margin, every tick reads again
    assert m.ample(0)


def test_deliveries_wait_for_writes_while_the_probe_fails() -> None:
    disk, changes = Disk(free=10 * DELIVERY_MARGIN), []
    m = monitor(disk, changes)
    m.check(0.0)
    assert m.ample(0)
    disk.fail = OSError(5, "Input/output error")
    m.check(CHECK_INTERVAL)
    assert not m.ample(0)
