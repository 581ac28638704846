"""Users, passwords and permissions against a real broker (in this process,
port 0): the permission matrix over every client frame type, a refused
publish storing nothing, one answer for unknown user and wrong password,
live changes of tags and permissions, token setups, and the rule that a
non-loopback bind needs users or the token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import brokerd_client
import brokerd_protocol as bp
from brokerd.auth import passwords, verifier
from brokerd.auth.rules import FREE, RULES
from brokerd.cli import build_server
from brokerd.config import Config, ConfigError
from brokerd.server import BrokerServer
from brokerd_client import AccessRefused, AsyncClient, AuthenticationError, BrokerError

BOUND = 10.0
#: Patterns of the matrix's user: its own names and the task layer's state.
APP = "^(app\\.|brokerd\\.)"


@contextlib.asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[BrokerServer, AsyncClient]]:
    """A broker and a client with every right (no users yet, or the token)."""
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, **settings)
    server = build_server(config.validate())
    await server.start()
    root = await brokerd_client.connect(
        f"brokerd://127.0.0.1:{server.port}", token=settings.get("token"), timeout=BOUND
    )
    try:
        yield server, root
    finally:
        await root.close()
        await server.stop()


async def add_user(
    root: AsyncClient, name: str, password: str, tags: list[str], perms: tuple[str, str, str] | None
) -> None:
    await root.call(lambda req: bp.AddUser(req, name, password, tags))
    if perms is not None:
        await root.call(lambda req: bp.SetPermissions(req, name, "/", *perms))


async def login(server: BrokerServer, user: str, password: str) -> AsyncClient:
    return await brokerd_client.connect(
        f"brokerd://{user}:{password}@127.0.0.1:{server.port}", timeout=BOUND
    )


Make = Callable[[int], bp.Frame]

#: Per frame type with a rule: a request the matrix user may make, and one it
#: may not (None: refused for a reason other than its name, see NARROW_ONLY).
MATRIX: dict[type[bp.Frame], tuple[Make, Make | None]] = {
    bp.DeclareExchange: (
        lambda r: bp.DeclareExchange(r, "app.ex", "topic"),
        lambda r: bp.DeclareExchange(r, "other.ex", "topic"),
    ),
    bp.DeleteExchange: (
        lambda r: bp.DeleteExchange(r, "app.gone"),
        lambda r: bp.DeleteExchange(r, "other.ex"),
    ),
    bp.DeclareQueue: (
        lambda r: bp.DeclareQueue(r, "app.q"),
        lambda r: bp.DeclareQueue(r, "other.q"),
    ),
    bp.DeleteQueue: (
        lambda r: bp.DeleteQueue(r, "app.gone"),
        lambda r: bp.DeleteQueue(r, "other.q"),
    ),
    bp.PurgeQueue: (lambda r: bp.PurgeQueue(r, "app.q"), lambda r: bp.PurgeQueue(r, "other.q")),
    bp.Bind: (
        lambda r: bp.Bind(r, "app.q", "app.ex", "k"),
        lambda r: bp.Bind(r, "app.q", "other.ex", "k"),  # read on the exchange
    ),
    bp.Unbind: (
        lambda r: bp.Unbind(r, "app.q", "app.ex", "k"),
        lambda r: bp.Unbind(r, "other.q", "app.ex", "k"),  # write on the queue
    ),
    bp.QueueStats: (lambda r: bp.QueueStats(r, "app.q"), lambda r: bp.QueueStats(r, "other.q")),
    bp.Consume: (lambda r: bp.Consume(r, "app.q", 1), lambda r: bp.Consume(r, "other.q", 1)),
    bp.ResultSet: (lambda r: bp.ResultSet(r, "t1", "SUCCESS", b"1"), None),
    bp.ResultGet: (lambda r: bp.ResultGet(r, ["t1"]), None),
    bp.ResultWait: (lambda r: bp.ResultWait(r, "t1", 0.0), None),
    bp.ResultWatch: (lambda r: bp.ResultWatch(r, "t1", 0.0), None),
    bp.ResultDelete: (lambda r: bp.ResultDelete(r, ["t1"]), None),
    bp.Revoke: (lambda r: bp.Revoke(r, ["t2"]), None),
    bp.Subscribe: (lambda r: bp.Subscribe(r, ["task.*"]), None),
    bp.ScheduleSet: (
        lambda r: bp.ScheduleSet(r, "app.tick", "every 60", "app.ex", "k", b""),
        lambda r: bp.ScheduleSet(r, "app.tick", "every 60", "other.ex", "k", b""),
    ),
    bp.ScheduleDelete: (
        lambda r: bp.ScheduleDelete(r, "app.tick"),
        lambda r: bp.ScheduleDelete(r, "other.tick"),
    ),
    bp.ScheduleList: (bp.ScheduleList, None),
    bp.GroupJoin: (lambda r: bp.GroupJoin(r, "g1", "m1", 2), None),
    bp.GroupFire: (
        lambda r: bp.GroupFire(r, "g1", "app.ex", "k", b""),
        lambda r: bp.GroupFire(r, "g1", "other.ex", "k", b""),
    ),
    bp.RateAcquire: (lambda r: bp.RateAcquire(r, "app.task", 10.0), None),
    bp.RateSet: (lambda r: bp.RateSet(r, "app.task", 5.0), None),
}

#: Admin frames: refused without a tag, allowed for an administrator.
ADMIN_FRAMES: dict[type[bp.Frame], Make] = {
    bp.AdminStatus: bp.AdminStatus,
    bp.ListQueues: bp.ListQueues,
    bp.ListExchanges: bp.ListExchanges,
    bp.ListBindings: bp.ListBindings,
    bp.ListConnections: bp.ListConnections,
    bp.ListConsumers: bp.ListConsumers,
    bp.CloseConnection: lambda r: bp.CloseConnection(r, 999_999, "x"),
    bp.AddUser: lambda r: bp.AddUser(r, "temp", "pw"),
    bp.UpdateUser: lambda r: bp.UpdateUser(r, "temp", tags=["management"]),
    bp.ListUsers: bp.ListUsers,
    bp.SetPermissions: lambda r: bp.SetPermissions(r, "temp", "/", "", "", ""),
    bp.ListPermissions: lambda r: bp.ListPermissions(r, vhost="/"),
    bp.ClearPermissions: lambda r: bp.ClearPermissions(r, "temp", "/"),
    bp.DeleteUser: lambda r: bp.DeleteUser(r, "temp"),
    bp.AddVhost: lambda r: bp.AddVhost(r, "temp"),
    bp.ListVhosts: bp.ListVhosts,
    bp.DeleteVhost: lambda r: bp.DeleteVhost(r, "temp"),
    bp.AdminStop: bp.AdminStop,  # last: it stops the broker
}


async def outcome(client: AsyncClient, make: Make) -> str:
    try:
        await client.call(make)
    except AccessRefused as exc:
        return f"refused: {exc}"
    except BrokerError:
        return "allowed"  # it passed the check; the handler had its own say
    return "allowed"


async def test_permission_matrix_covers_every_client_frame_type() -> None:
    free = {cls for cls, rule in RULES.items() if rule is FREE}
    assert free == {bp.Heartbeat, bp.Close, bp.Cancel, bp.Ack, bp.Nack, bp.Reject, bp.Extend}
    covered = set(MATRIX) | set(ADMIN_FRAMES) | {bp.Publish} | free
    assert covered == set(RULES)
    async with running() as (server, root):
        await root.declare_exchange("other.ex", "topic")
        await root.declare_queue("other.q")
        await add_user(root, "app", "pw-app", [], (APP, APP, APP))
        await add_user(root, "narrow", "pw-narrow", [], ("^app\\.", "^app\\.", "^app\\."))
        await add_user(root, "boss", "pw-boss", ["administrator"], None)
        app = await login(server, "app", "pw-app")
        narrow = await login(server, "narrow", "pw-narrow")
        boss = await login(server, "boss", "pw-boss")
        try:
            for cls, (allowed, refused) in MATRIX.items():
                assert await outcome(app, allowed) == "allowed", cls.__name__
                if refused is not None:
                    result = await outcome(app, refused)
                else:
                    result = await outcome(narrow, allowed)  # brokerd.* not granted
                assert result.startswith("refused: access to"), (cls.__name__, result)
                assert "in vhost '/' refused for user" in result
            # Publish: write on the exchange; the default one is amq.default.
            assert await app.publish("app.ex", "k", b"x") is False  # allowed, routes nowhere
            with pytest.raises(AccessRefused, match=r"exchange .amq\.default."):
                await app.publish("", "app.q", b"x")
            for cls, make in ADMIN_FRAMES.items():
                result = await outcome(app, make)
                assert result.startswith("refused:") and "administrator" in result, cls.__name__
                assert await outcome(boss, make) == "allowed", cls.__name__
        finally:
            for c in (app, narrow, boss):
                await c.close()


async def test_a_refused_publish_stores_nothing_and_keeps_the_connection() -> None:
    async with running() as (server, root):
        await root.declare_queue("jobs")
        await add_user(root, "app", "pw", [], ("", "^nothing$", ".*"))
        app = await login(server, "app", "pw")
        try:
            with pytest.raises(AccessRefused) as info:
                await app.publish("", "jobs", b"secret work")
            assert str(info.value).startswith(
                "access to exchange 'amq.default' in vhost '/' refused for user 'app': write"
            )
            assert (await root.queue_stats("jobs")).ready == 0
            assert (await app.queue_stats("jobs")).ready == 0  # read is allowed: still open
        finally:
            await app.close()


async def test_unknown_user_and_wrong_password_get_one_answer_after_the_same_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    real = passwords.verify

    def counting(password: str, stored: str) -> bool:
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(verifier.passwords, "verify", counting)
    async with running() as (server, root):
        await add_user(root, "app", "right", [], (".*", ".*", ".*"))
        messages = []
        for user, password in (("app", "wrong"), ("nobody", "wrong")):
            with pytest.raises(AuthenticationError) as info:
                await login(server, user, password)
            messages.append(str(info.value))
        assert messages[0] == messages[1]
        assert "invalid user name or password" in messages[0]
        # Both ran scrypt once: against the user's hash, and against the dummy.
        assert len(checked) == 2
        assert checked[1] == passwords.dummy_hash()
        assert checked[0].split("$")[:4] == checked[1].split("$")[:4]  # same cost
        assert server.auth_throttle.failures_total == 2


async def test_with_users_a_client_without_credentials_is_refused_on_loopback() -> None:
    async with running() as (server, root):
        url = f"brokerd://127.0.0.1:{server.port}"
        early = await brokerd_client.connect(url, timeout=BOUND)
        await add_user(root, "app", "pw", [], None)
        with pytest.raises(AuthenticationError, match="user name and password"):
            await brokerd_client.connect(url, timeout=BOUND)
        await early.declare_queue("still-open")  # welcomed before: keeps its rights
        await early.close()


async def test_tag_and_permission_changes_apply_to_open_connections() -> None:
    async with running() as (server, root):
        await root.declare_queue("jobs")
        await add_user(root, "app", "pw", [], (".*", ".*", ".*"))
        app = await login(server, "app", "pw")
        try:
            await app.queue_stats("jobs")
            with pytest.raises(AccessRefused):
                await app.call(bp.AdminStatus)
            await root.call(lambda r: bp.UpdateUser(r, "app", tags=["monitoring"]))
            assert "version" in await app.call(bp.AdminStatus)
            await root.call(lambda r: bp.ClearPermissions(r, "app", "/"))
            with pytest.raises(AccessRefused, match="read permission"):
                await app.queue_stats("jobs")
            await root.call(lambda r: bp.SetPermissions(r, "app", "/", "", "", "^jobs$"))
            await app.queue_stats("jobs")
        finally:
            await app.close()


async def test_deleting_a_user_closes_its_connections() -> None:
    async with running() as (server, root):
        await add_user(root, "app", "pw", [], (".*", ".*", ".*"))
        app = await login(server, "app", "pw")
        await root.call(lambda r: bp.DeleteUser(r, "app"))
        await app.wait_closed()
        with pytest.raises(AuthenticationError):
            await login(server, "app", "pw")


async def test_a_changed_password_applies_to_later_connections() -> None:
    async with running() as (server, root):
        await add_user(root, "app", "old", [], (".*", ".*", ".*"))
        await root.call(lambda r: bp.UpdateUser(r, "app", password="new"))
        with pytest.raises(AuthenticationError):
            await login(server, "app", "old")
        await (await login(server, "app", "new")).close()


async def test_user_frames_validate_their_arguments() -> None:
    async with running() as (_server, root):
        await add_user(root, "app", "pw", [], None)
        with pytest.raises(brokerd_client.PreconditionFailed, match="already exists"):
            await root.call(lambda r: bp.AddUser(r, "app", "pw"))
        with pytest.raises(brokerd_client.InvalidArgument, match="unknown tag"):
            await root.call(lambda r: bp.AddUser(r, "x", "pw", ["root"]))
        with pytest.raises(brokerd_client.InvalidArgument, match="empty"):
            await root.call(lambda r: bp.AddUser(r, "x", ""))
        with pytest.raises(brokerd_client.InvalidArgument, match="regular expression"):
            await root.call(lambda r: bp.SetPermissions(r, "app", "/", "(", "", ""))
        with pytest.raises(brokerd_client.NotFound):
            await root.call(lambda r: bp.SetPermissions(r, "ghost", "/", "", "", ""))
        with pytest.raises(brokerd_client.NotFound):
            await root.call(lambda r: bp.ClearPermissions(r, "app", "/"))
        users = await root.call(bp.ListUsers)
        assert users == {"items": [{"name": "app", "tags": []}], "next": None}


async def test_the_token_is_an_administrator_beside_users() -> None:
    async with running(token="the-token") as (server, root):
        await add_user(root, "app", "pw", [], ("", "", "^jobs$"))
        await root.declare_queue("other")  # the token may do everything
        app = await login(server, "app", "pw")
        try:
            with pytest.raises(AccessRefused):
                await app.queue_stats("other")
        finally:
            await app.close()
        with pytest.raises(AuthenticationError, match="invalid token"):
            await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}", timeout=BOUND)


async def test_a_non_loopback_bind_needs_users_or_the_token(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    refused = build_server(Config(host="0.0.0.0", port=0, data_dir=data, metrics_port=0))
    with pytest.raises(ConfigError, match="without credentials"):
        await refused.start()
    # Users made on loopback, kept by the store, let the next start bind anywhere.
    local = build_server(Config(port=0, data_dir=data, metrics_port=0))
    await local.start()
    root = await brokerd_client.connect(f"brokerd://127.0.0.1:{local.port}", timeout=BOUND)
    await add_user(root, "app", "pw", ["administrator"], (".*", ".*", ".*"))
    await root.close()
    await local.stop()
    anywhere = build_server(Config(host="0.0.0.0", port=0, data_dir=data, metrics_port=0))
    await anywhere.start()
    try:
        app = await login(anywhere, "app", "pw")
        assert (await app.call(bp.ListUsers))["items"][0]["name"] == "app"
        await app.close()
    finally:
        await anywhere.stop()
    with_token = build_server(
        Config(host="0.0.0.0", port=0, data_dir=":memory:", metrics_port=0, token="t")
    )
    await with_token.start()
    await with_token.stop()
