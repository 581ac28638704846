"""``memory_limit``: flag, environment and TOML, with unit suffixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from brokerd.config import ConfigError, load
from brokerd.memory import DEFAULT_MEMORY_LIMIT

MIB = 1024 * 1024


def test_memory_limit_defaults_to_128_mib() -> None:
    assert load([], env={}).memory_limit == DEFAULT_MEMORY_LIMIT == 128 * MIB


@pytest.mark.parametrize(
    ("text", "value"),
    [("64MiB", 64 * MIB), ("64M", 64 * MIB), ("1GiB", 1024 * MIB), ("1g", 1024 * MIB),
     ("2048k", 2 * MIB), ("16777216", 16 * MIB), ("1.5GiB", 1536 * MIB)],
)  # fmt: skip
def test_memory_limit_flag_takes_unit_suffixes(text: str, value: int) -> None:
    assert load(["--memory-limit", text], env={}).memory_limit == value


def test_memory_limit_comes_from_the_environment_and_the_flag_wins() -> None:
    env = {"BROKERD_MEMORY_LIMIT": "256MiB"}
    assert load([], env=env).memory_limit == 256 * MIB
    assert load(["--memory-limit", "32MiB"], env=env).memory_limit == 32 * MIB


@pytest.mark.parametrize("value", ['"512MiB"', str(512 * MIB)])
def test_memory_limit_comes_from_the_config_file(tmp_path: Path, value: str) -> None:
    path = tmp_path / "brokerd.toml"
    path.write_text(f"memory_limit = {value}\n")
    assert load(["--config", str(path)], env={}).memory_limit == 512 * MIB


@pytest.mark.parametrize("text", ["12XB", "lots", "-5MiB", ""])
def test_a_memory_limit_that_is_not_a_size_stops_the_broker_naming_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="memory_limit must be a size"):
        load([f"--memory-limit={text}"], env={})


def test_a_memory_limit_below_one_mib_is_refused() -> None:
    with pytest.raises(ConfigError, match="memory_limit must be at least 1 MiB"):
        load(["--memory-limit", "512KiB"], env={})
