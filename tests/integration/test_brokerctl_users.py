"""brokerctl's user and permission commands against a real brokerd, end to
end: add_user (password from stdin, refused in argv), set_user_tags,
list_users, set/clear/list permissions, authenticate_user, change_password,
delete_user, and admin over --url as a user tagged administrator.

Most commands run in this process (``ctl.main.run``, what the console
script runs), with stdin replaced; the password-in-argv refusal also runs
as the real command.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess

from brokerd_client import AccessRefused, AuthenticationError, Client
from brokerd_client.ctl.main import run


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``feed(text)`` makes it brokerctl's stdin (not a terminal: no prompt)."""

    def feed(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    return feed


def ctl(broker: BrokerProcess, *args: str) -> tuple[int, str, str]:
    return run(["--data-dir", str(broker.data_dir), *args], env={})


def ok(broker: BrokerProcess, *args: str) -> str:
    code, out, err = ctl(broker, *args)
    assert code == 0, err
    return out


def test_user_commands_end_to_end(broker: BrokerProcess, stdin: Any) -> None:
    stdin("s3cret-pw\n")
    assert ok(broker, "add_user", "app") == 'Added user "app"\n'
    ok(broker, "set_user_tags", "app", "monitoring", "management")
    ok(broker, "set_permissions", "-p", "/", "app", "^app\\.", "^app\\.", ".*")
    assert ok(broker, "list_users") == 'name  tags\napp   ["management","monitoring"]\n'
    listed = json.loads(ok(broker, "--formatter", "json", "list_permissions"))
    assert listed == [
        {"user": "app", "vhost": "/", "configure": "^app\\.", "write": "^app\\.", "read": ".*"}
    ]
    assert ok(broker, "list_user_permissions", "app").splitlines()[0].split() == [
        "vhost", "configure", "write", "read",
    ]  # fmt: skip
    stdin("s3cret-pw\n")
    assert ok(broker, "authenticate_user", "app") == "Success\n"
    stdin("wrong\n")
    code, _, err = ctl(broker, "authenticate_user", "app")
    assert code == 65 and "could not authenticate" in err and "wrong" not in err

    url = f"brokerd://app:s3cret-pw@127.0.0.1:{broker.port}"
    with Client(url) as app:
        app.declare_queue("app.jobs")
        with pytest.raises(AccessRefused, match="configure permission"):
            app.declare_queue("other")
        users = json.loads(ok(broker, "--formatter", "json", "list_connections", "user"))
        assert {"user": "app"} in users and {"user": None} in users  # brokerctl's own
    ok(broker, "clear_permissions", "app")
    assert json.loads(ok(broker, "--formatter", "json", "list_permissions")) == []

    stdin("new-pw\n")
    ok(broker, "change_password", "app")
    with pytest.raises(AuthenticationError):
        Client(url, connect_timeout=5).connect()
    ok(broker, "delete_user", "app")
    assert json.loads(ok(broker, "--formatter", "json", "list_users")) == []
    code, _, err = ctl(broker, "delete_user", "app")
    assert code == 65 and "no user 'app'" in err


def test_a_password_in_argv_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "brokerd_client.ctl",
            "--data-dir", str(tmp_path), "add_user", "app", "s3cret",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 64
    assert "does not take a password on the command line" in result.stderr
    assert "s3cret" not in result.stderr


def test_admin_over_url_as_an_administrator(
    broker: BrokerProcess, stdin: Any, tmp_path: Path
) -> None:
    stdin("boss-pw\n")
    ok(broker, "add_user", "boss")
    url = f"brokerd://127.0.0.1:{broker.port}"
    secret = tmp_path / "pw"
    secret.write_text("boss-pw\n")
    args = ["--url", url, "--user", "boss", "--password-file", str(secret), "list_users"]
    code, _, err = run(args, env={})
    # No tag and no permissions on "/": refused at Hello (SPEC §6.1).
    assert code == 65 and "access to vhost '/' refused" in err
    ok(broker, "set_permissions", "boss", ".*", ".*", ".*")
    code, _, err = run(args, env={})
    assert code == 65 and "needs the tag administrator" in err
    ok(broker, "set_user_tags", "boss", "administrator")
    code, out, err = run(args, env={})
    assert code == 0, err
    assert out.splitlines()[1].split()[0] == "boss"
    code, _, err = run(["--url", f"brokerd://boss:boss-pw@127.0.0.1:{broker.port}", "status"], {})
    assert code == 64 and "does not take a password in --url" in err and "boss-pw" not in err
