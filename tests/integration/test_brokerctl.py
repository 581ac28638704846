"""brokerctl against a real brokerd: every command's output (tables with
volatile fields normalised, and JSON), its exit codes, the control socket's
mode and life cycle, stop, close_connection, and admin over TCP with a token.

Most commands run in this process (``ctl.main.run``: the same code the
console script runs, returning exit code, stdout and stderr); ``stop`` and
one usage error also run as the real command, in a child process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess

import brokerd_client
from brokerd_client import Client, ConnectionLost
from brokerd_client.ctl.main import run


def ctl(broker: BrokerProcess, *args: str) -> tuple[int, str, str]:
    return run(["--data-dir", str(broker.data_dir), *args], env={})


def ok(broker: BrokerProcess, *args: str) -> str:
    code, out, err = ctl(broker, *args)
    assert code == 0, err
    return out


def as_json(broker: BrokerProcess, *args: str) -> Any:
    return json.loads(ok(broker, "--formatter", "json", *args))


def normalise(text: str, *columns: str) -> str:
    """Blank out the cells of ``columns`` (values that change run to run)
    and re-align, so a table can be compared with a golden one."""
    lines = [line.split() for line in text.splitlines()]
    header = lines[0]
    for col in columns:
        i = header.index(col)
        for row in lines[1:]:
            row[i] = "*"
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    )


def client(broker: BrokerProcess, name: str = "golden-client") -> Client:
    c = Client(broker.url, client_name=name)
    c.connect()
    return c


@pytest.fixture
def populated(broker: BrokerProcess) -> BrokerProcess:
    with client(broker) as c:
        c.declare_queue("alpha")
        c.declare_queue("beta", durable=False, max_length=5)
        c.declare_exchange("events", "topic")
        c.bind("alpha", "events", "orders.#")
        c.bind("beta", "events", "orders.eu.*")
        c.publish("", "alpha", b"one")
        c.publish("", "alpha", b"two")
    return broker


# --- the control socket ---------------------------------------------------------------


def test_the_control_socket_is_a_socket_only_its_owner_may_open(broker: BrokerProcess) -> None:
    mode = os.stat(broker.data_dir / "brokerd.sock").st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_a_stale_socket_left_by_a_crash_is_replaced(broker: BrokerProcess) -> None:
    broker.kill()
    assert (broker.data_dir / "brokerd.sock").exists()  # what a crash leaves
    code, _, err = ctl(broker, "status")
    assert code == 69 and "cannot talk to brokerd" in err
    broker.start()
    assert as_json(broker, "status")["pid"] == broker.pid


def test_a_file_in_the_sockets_place_stops_the_start_with_a_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "brokerd.sock").write_text("not a socket")
    with pytest.raises(RuntimeError, match="is not a socket"):
        BrokerProcess(data).start()


# --- status and the lists ---------------------------------------------------------------


def test_status_reports_the_broker(populated: BrokerProcess) -> None:
    status = as_json(populated, "status")
    assert status["pid"] == populated.pid
    assert status["data_dir"] == str(populated.data_dir)
    assert {"protocol": "brokerd", "address": f"127.0.0.1:{populated.port}"} in status["listeners"]
    assert {"protocol": "control", "address": str(populated.data_dir / "brokerd.sock")} in status[
        "listeners"
    ]
    assert status["counts"] == {
        "queues": 2,
        "exchanges": 1,
        "bindings": 2,
        "connections": 1,  # brokerctl itself
        "consumers": 0,
        "ready": 2,
        "leased": 0,
        "delayed": 0,
    }
    assert status["memory"]["rss_bytes"] > 0
    assert status["storage"]["bytes"] > 0
    assert status["alarms"] == {"disk": False, "memory": False}
    table = ok(populated, "status")
    assert f"pid: {populated.pid}\n" in table and "counts.queues: 2\n" in table


def test_list_queues_table(populated: BrokerProcess) -> None:
    assert normalise(ok(populated, "list_queues"), "oldest_ready_age") == (
        "name   durable  ready  leased  delayed  consumers  oldest_ready_age\n"
        "alpha  true     2      0       0        0          *\n"
        "beta   false    0      0       0        0          *"
    )
    age = ok(populated, "list_queues", "name", "oldest_ready_age").splitlines()
    assert re.fullmatch(r"alpha +\d+(\.\d+)?", age[1]) and re.fullmatch(r"beta +-", age[2])


def test_list_queues_with_chosen_columns(populated: BrokerProcess) -> None:
    assert ok(populated, "list_queues", "name", "ready") == ("name   ready\nalpha  2\nbeta   0\n")


def test_list_queues_json(populated: BrokerProcess) -> None:
    rows = as_json(populated, "list_queues", "name", "durable", "ready", "options")
    assert rows[0] == {
        "name": "alpha",
        "durable": True,
        "ready": 2,
        "options": {
            "lease": 30.0,
            "max_deliveries": None,
            "dead_letter_queue": None,
            "max_length": None,
            "overflow": "reject_publish",
            "message_ttl": None,
            "auto_delete": False,
            "expires": None,
        },
    }
    assert rows[1]["name"] == "beta" and rows[1]["options"]["max_length"] == 5


def test_list_exchanges_table_and_json(populated: BrokerProcess) -> None:
    assert ok(populated, "list_exchanges") == (
        'name    type    durable\n""      direct  true\nevents  topic   true\n'
    )
    assert as_json(populated, "list_exchanges") == [
        {"name": "", "type": "direct", "durable": True},
        {"name": "events", "type": "topic", "durable": True},
    ]


def test_list_bindings_table_and_json(populated: BrokerProcess) -> None:
    assert ok(populated, "list_bindings") == (
        "exchange  queue  routing_key\nevents    alpha  orders.#\nevents    beta   orders.eu.*\n"
    )
    assert as_json(populated, "list_bindings", "queue")[1] == {"queue": "beta"}


async def test_list_connections_and_consumers(populated: BrokerProcess) -> None:
    c = await brokerd_client.connect(populated.url, client_name="worker-1")
    try:
        consumer = await c.consume("alpha", prefetch=5)
        await anext(aiter(consumer))  # both messages are delivered and held
        table = await asyncio.to_thread(ok, populated, "list_connections")
        rows = await asyncio.to_thread(as_json, populated, "list_connections")
        consumers = await asyncio.to_thread(ok, populated, "list_consumers")
        consumers_json = await asyncio.to_thread(as_json, populated, "list_consumers")
    finally:
        await c.close()
    assert normalise(table, "id", "peer", "connected_at", "bytes_in", "bytes_out") == (
        "id  peer  transport  client_name  connected_at  consumers  unsettled  "
        "bytes_in  bytes_out\n"
        "*   *     tcp        worker-1     *             1          2          *         *\n"
        "*   *     unix       brokerctl    *             0          0          *         *"
    )
    worker = next(r for r in rows if r["client_name"] == "worker-1")
    assert worker["peer"].startswith("127.0.0.1:") and worker["bytes_in"] > 0
    assert normalise(consumers, "connection") == (
        "connection  consumer  queue  prefetch  unsettled  lease\n"
        "*           1         alpha  5         2          30"
    )
    assert consumers_json == [
        {
            "connection": worker["id"],
            "consumer": 1,
            "queue": "alpha",
            "prefetch": 5,
            "unsettled": 2,
            "lease": 30.0,
        }
    ]


# --- purge, delete, close -----------------------------------------------------------------


def test_purge_queue_and_delete_queue(populated: BrokerProcess) -> None:
    assert ok(populated, "purge_queue", "alpha") == "Purged 2 ready message(s) from queue 'alpha'\n"
    assert as_json(populated, "purge_queue", "alpha") == {"queue": "alpha", "purged": 0}
    assert as_json(populated, "delete_queue", "beta") == {
        "queue": "beta",
        "deleted": True,
        "messages": 0,
    }
    assert ok(populated, "delete_queue", "alpha") == "Deleted queue 'alpha' with 0 message(s)\n"
    assert as_json(populated, "list_queues") == []


def test_a_missing_queue_is_a_data_error(broker: BrokerProcess) -> None:
    code, out, err = ctl(broker, "delete_queue", "nope")
    assert (code, out) == (65, "")
    assert "no queue 'nope'" in err


async def test_close_connection_closes_the_client_with_the_reason(broker: BrokerProcess) -> None:
    c = await brokerd_client.connect(broker.url, client_name="to-close")
    try:
        listed = await asyncio.to_thread(as_json, broker, "list_connections")
        [row] = [r for r in listed if r["client_name"] == "to-close"]
        out = await asyncio.to_thread(
            ok, broker, "close_connection", str(row["id"]), "maintenance window"
        )
        assert out == f"Closed connection {row['id']}: maintenance window\n"
        why = await asyncio.wait_for(c.wait_closed(), 30)
        assert isinstance(why, ConnectionLost) and "maintenance window" in str(why)
        with pytest.raises(ConnectionLost, match="maintenance window"):
            await c.queue_stats("q")
    finally:
        await c.close()
    listed = await asyncio.to_thread(as_json, broker, "list_connections")
    assert [r["client_name"] for r in listed] == ["brokerctl"]


def test_closing_an_unknown_connection_is_a_data_error(broker: BrokerProcess) -> None:
    code, _, err = ctl(broker, "close_connection", "9999", "why")
    assert code == 65 and "no connection 9999" in err


# --- stop ---------------------------------------------------------------------------------


def test_stop_stops_the_broker_and_keeps_its_data(broker: BrokerProcess) -> None:
    with client(broker) as c:
        c.declare_queue("kept")
        c.publish("", "kept", b"payload")
    proc = broker.proc
    assert proc is not None
    result = subprocess.run(
        [sys.executable, "-m", "brokerd_client.ctl", "--data-dir", str(broker.data_dir), "stop"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Stopped brokerd (pid {proc.pid})\n"
    assert proc.wait(timeout=30) == 0
    assert not (broker.data_dir / "brokerd.sock").exists()
    broker.proc = None
    broker.start()
    with client(broker) as c:
        assert c.queue_stats("kept").ready == 1


# --- exit codes -----------------------------------------------------------------------------


def test_no_broker_is_exit_69_with_a_clear_message(tmp_path: Path) -> None:
    code, out, err = run(["--data-dir", str(tmp_path), "status"], env={})
    assert (code, out) == (69, "")
    assert f"no brokerd is running with data dir {tmp_path}" in err


def test_an_unreachable_url_is_exit_69() -> None:
    code, _, err = run(["--url", "brokerd://127.0.0.1:1", "--timeout", "5", "status"], env={})
    assert code == 69 and "cannot talk to brokerd at brokerd://127.0.0.1:1" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        ["purge_queue"],
        ["purge_queue", "a", "b"],
        ["list_queues", "no_such_column"],
        ["--formatter", "xml", "status"],
        ["--url", "brokerd://secret@127.0.0.1:5673", "status"],
    ],
)
def test_usage_errors_are_exit_64_even_with_no_broker(tmp_path: Path, argv: list[str]) -> None:
    code, out, err = run(["--data-dir", str(tmp_path), *argv] if "--url" not in argv else argv, {})
    assert (code, out) == (64, "")
    assert err.startswith("Error: ") and "secret" not in err


def test_a_token_in_the_url_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "brokerd_client.ctl",
            "--url",
            "brokerd://s3cret@localhost",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 64
    assert "does not take a token in --url" in result.stderr
    assert "s3cret" not in result.stderr


# --- admin over TCP -------------------------------------------------------------------------


def test_admin_over_tcp_needs_the_token_when_the_broker_has_one(
    broker_factory: Any, tmp_path: Path
) -> None:
    proc = broker_factory(token="the-token").start()
    url = f"brokerd://127.0.0.1:{proc.port}"
    code, _, err = run(["--url", url, "status"], env={})
    assert code == 69 and "refused the token" in err
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    code, _, err = run(["--url", url, "--token-file", str(wrong), "status"], env={})
    assert code == 69 and "refused the token" in err
    right = tmp_path / "right"
    right.write_text("the-token\n")
    code, out, err = run(
        ["--url", url, "--formatter", "json", "status"], {"BROKERD_TOKEN_FILE": str(right)}
    )
    assert code == 0, err
    assert json.loads(out)["pid"] == proc.pid
    # The control socket needs no token.
    code, _, err = run(["--data-dir", str(proc.data_dir), "status"], env={})
    assert code == 0, err


def test_the_token_can_come_from_stdin(broker_factory: Any) -> None:
    proc = broker_factory(token="piped").start()
    result = subprocess.run(
        [
            sys.executable, "-m", "brokerd_client.ctl",
            "--url", f"brokerd://127.0.0.1:{proc.port}", "--token-file", "-", "list_queues",
        ],
        input="piped\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("name")


async def test_an_admin_frame_from_a_connection_that_is_not_admin_is_refused() -> None:
    """The rule behind ACCESS_REFUSED, shown on the extension directly: every
    welcomed connection is an admin one today (users come later)."""
    from brokerd.admin.extension import AdminExtension
    from brokerd.errors import BrokerError
    from brokerd_protocol import AdminStatus, ErrorCode

    class NotAdmin:
        admin = False

    with pytest.raises(BrokerError) as err:
        AdminExtension._check(NotAdmin(), AdminStatus(1))  # type: ignore[arg-type]
    assert err.value.code == ErrorCode.ACCESS_REFUSED
    assert brokerd_client.AccessRefused is not None
