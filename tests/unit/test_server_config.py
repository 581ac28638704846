"""Settings: where the token comes from, and the connection limits.

The secret never has to appear in argv (visible to every local user in
/proc/<pid>/cmdline): ``--token-file`` / ``BROKERD_TOKEN_FILE`` /
``token_file`` read it from a file instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brokerd.config import ConfigError, load, load_config

SECRET = "correct-horse-battery-staple"


def secret_file(tmp_path: Path, content: str = f"  {SECRET}\n") -> Path:
    path = tmp_path / "token"
    path.write_text(content)
    return path


def test_the_token_file_holds_the_token_without_surrounding_whitespace(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    assert load(["--token-file", str(path)], env={}).token == SECRET
    assert load([], env={"BROKERD_TOKEN_FILE": str(path)}).token == SECRET


def test_the_token_file_can_be_named_in_the_config_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    toml = tmp_path / "brokerd.toml"
    toml.write_text(f'token_file = "{path}"\n')
    assert load(["--config", str(toml)], env={}).token == SECRET


def test_a_token_file_allows_a_non_loopback_bind(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    config = load(["--token-file", str(path), "--host", "0.0.0.0"], env={})
    assert config.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), (" \n\t\n", "is empty"), ("x" * 5000, "longer than 4096")],
)
def test_a_token_file_that_holds_no_usable_token_is_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    path = secret_file(tmp_path, content)
    with pytest.raises(ConfigError, match=message) as info:
        load(["--token-file", str(path)], env={})
    assert str(path) in str(info.value)


def test_a_missing_token_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(ConfigError, match="cannot read token file") as info:
        load(["--token-file", str(path)], env={})
    assert str(path) in str(info.value)


def test_an_unreadable_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read token file"):
        load(["--token-file", str(tmp_path)], env={})  # a directory


def test_a_token_and_a_token_file_together_are_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    with pytest.raises(ConfigError, match="not both") as info:
        load(["--token-file", str(path)], env={"BROKERD_TOKEN": SECRET})
    assert SECRET not in str(info.value)


def test_a_token_on_the_command_line_warns_without_the_secret(tmp_path: Path) -> None:
    config, warnings = load_config(["--token", SECRET], env={})
    assert config.token == SECRET
    assert len(warnings) == 1
    assert "--token-file" in warnings[0]
    assert SECRET not in warnings[0]
    for argv, env in (
        ([], {"BROKERD_TOKEN": SECRET}),
        (["--token-file", str(secret_file(tmp_path))], {}),
    ):
        assert load_config(argv, env)[1] == []


def test_the_token_is_not_in_the_config_repr(tmp_path: Path) -> None:
    config = load(["--token-file", str(secret_file(tmp_path))], env={})
    assert SECRET not in repr(config)


def test_a_token_longer_than_a_hello_can_carry_is_refused() -> None:
    with pytest.raises(ConfigError, match="4096"):
        load(["--token", "x" * 4097], env={})


def test_handshake_limits_have_defaults_and_are_validated() -> None:
    config = load([], env={})
    assert config.max_handshakes == 1024
    assert config.handshake_timeout == 10.0
    assert load(["--max-handshakes", "8", "--handshake-timeout", "2.5"], env={}).max_handshakes == 8
    with pytest.raises(ConfigError, match="max_handshakes"):
        load(["--max-handshakes", "0"], env={})
    with pytest.raises(ConfigError, match="handshake_timeout"):
        load(["--handshake-timeout", "0"], env={})


def test_unacked_byte_limits_take_sizes_and_are_validated() -> None:
    config = load([], env={})
    assert config.max_unacked_bytes == 64 * 1024 * 1024
    assert config.max_unacked_bytes_total == 512 * 1024 * 1024
    config = load(["--max-unacked-bytes", "8MiB"], env={"BROKERD_MAX_UNACKED_BYTES_TOTAL": "1GB"})
    assert config.max_unacked_bytes == 8 * 1024 * 1024
    assert config.max_unacked_bytes_total == 10**9
    with pytest.raises(ConfigError, match="max_unacked_bytes"):
        load(["--max-unacked-bytes", "0"], env={})
    with pytest.raises(ConfigError, match="max_unacked_bytes_total"):
        load(["--max-unacked-bytes-total", "lots"], env={})
