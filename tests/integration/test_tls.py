"""TLS on the broker port, against a real brokerd with certificates from a throwaway CA.

What must hold: a client that trusts the broker's CA and dials a name in its
certificate works exactly as over TCP; every other certificate (another CA,
expired, another host) fails with a ``TLSError`` that names the cause; with
``--tls-ca`` only clients with a certificate from that CA get in; the
handshake deadline also bounds a peer that never starts TLS; SIGHUP swaps
the certificate for new connections while open ones keep working, and a bad
file on reload keeps the old certificate.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tlskit import CertFiles, Pki, expired

import brokerd_client
import brokerd_protocol as bp
from brokerd_client import ConnectionLost, TLSError

BOUND = 20.0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(broker_factory: Any, pki: Pki) -> Iterator[Any]:
    files = pki.server()
    proc = broker_factory(*files.flags()).start()
    proc.cert = files
    yield proc


def tls_url(broker: Any, host: str = "127.0.0.1") -> str:
    return f"brokerds://{host}:{broker.port}"


async def round_trip(client: brokerd_client.AsyncClient, queue: str, body: bytes) -> None:
    await client.declare_queue(queue)
    await client.publish("", queue, body)
    consumer = await client.consume(queue, prefetch=1)
    delivery = await asyncio.wait_for(consumer.__anext__(), BOUND)
    assert delivery.body == body
    await delivery.ack()
    await consumer.cancel()


def served_certificate(port: int, cafile: Path) -> bytes:
    """The DER certificate the broker presents to a new connection now."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(files: CertFiles) -> bytes:
    pem = files.cert.read_text()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first)


def wait_for_log(broker: Any, text: str, seen: int = 0) -> None:
    """Wait (bounded) until ``text`` appears in the log more than ``seen`` times."""
    deadline = time.monotonic() + BOUND
    while broker.log_path.read_text().count(text) <= seen:
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.02)


# --- certificates the client accepts or refuses ---------------------------------


async def test_a_client_trusting_the_ca_publishes_and_consumes_over_tls(
    tls_broker: Any, pki: Pki
) -> None:
    client = await brokerd_client.connect(tls_url(tls_broker), cafile=str(pki.ca_file))
    try:
        assert client.url.tls
        await round_trip(client, "over-tls", b"secret payload")
    finally:
        await client.close()
    log = tls_broker.log_path.read_text()
    assert "TLS (" in log and "secret payload" not in log


async def test_an_ssl_context_of_the_callers_own_is_used(tls_broker: Any, pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    client = await brokerd_client.connect(tls_url(tls_broker, "localhost"), ssl_context=ctx)
    try:
        await round_trip(client, "own-context", b"x")
    finally:
        await client.close()


async def test_a_certificate_from_another_ca_is_refused_with_a_clear_error(
    tls_broker: Any, tmp_path: Path
) -> None:
    stranger = Pki(tmp_path / "other", "other")
    with pytest.raises(TLSError) as raised:
        await brokerd_client.connect(
            tls_url(tls_broker), cafile=str(stranger.ca_file), timeout=BOUND
        )
    message = str(raised.value)
    assert "cannot verify" in message and "not signed by a CA this client trusts" in message


async def test_the_system_cas_do_not_trust_a_private_ca(tls_broker: Any) -> None:
    with pytest.raises(TLSError, match="cafile="):
        await brokerd_client.connect(tls_url(tls_broker), timeout=BOUND)


async def test_an_expired_broker_certificate_is_refused(broker_factory: Any, pki: Pki) -> None:
    broker = broker_factory(*expired(pki).flags()).start()
    with pytest.raises(TLSError, match="expired"):
        await brokerd_client.connect(tls_url(broker), cafile=str(pki.ca_file), timeout=BOUND)


async def test_a_certificate_for_another_host_is_refused(broker_factory: Any, pki: Pki) -> None:
    broker = broker_factory(*pki.server("elsewhere", "broker.example.com").flags()).start()
    with pytest.raises(TLSError, match="does not name the host"):
        await brokerd_client.connect(tls_url(broker), cafile=str(pki.ca_file), timeout=BOUND)


# --- plain and TLS on the wrong port ---------------------------------------------


async def test_a_plain_client_on_a_tls_port_gets_a_clear_error_not_a_hang(
    tls_broker: Any,
) -> None:
    with pytest.raises(ConnectionLost) as raised:
        await brokerd_client.connect(f"brokerd://127.0.0.1:{tls_broker.port}", timeout=BOUND)
    assert "brokerds://" in str(raised.value)
    assert "timed out" not in str(raised.value)


async def test_a_tls_client_on_a_plain_port_is_told_the_port_is_not_tls(
    broker: Any, pki: Pki
) -> None:
    with pytest.raises(TLSError, match="brokerd://"):
        await brokerd_client.connect(
            f"brokerds://127.0.0.1:{broker.port}", cafile=str(pki.ca_file), timeout=BOUND
        )


# --- mutual TLS ---------------------------------------------------------------------


@pytest.fixture
def mtls_broker(broker_factory: Any, pki: Pki) -> Any:
    return broker_factory(*pki.server().flags(), "--tls-ca", str(pki.ca_file)).start()


async def test_mtls_refuses_a_client_without_a_certificate_saying_why(
    mtls_broker: Any, pki: Pki
) -> None:
    with pytest.raises(brokerd_client.AuthenticationError, match="TLS client certificate"):
        await brokerd_client.connect(tls_url(mtls_broker), cafile=str(pki.ca_file), timeout=BOUND)


async def test_mtls_refuses_a_certificate_from_another_ca(
    mtls_broker: Any, pki: Pki, tmp_path: Path
) -> None:
    intruder = Pki(tmp_path / "intruder", "intruder").client()
    with pytest.raises(TLSError, match="certificate"):
        await brokerd_client.connect(
            tls_url(mtls_broker),
            cafile=str(pki.ca_file),
            certfile=str(intruder.cert),
            keyfile=str(intruder.key),
            timeout=BOUND,
        )


async def test_mtls_admits_a_client_with_a_certificate_from_the_ca(
    mtls_broker: Any, pki: Pki
) -> None:
    mine = pki.client()
    client = await brokerd_client.connect(
        tls_url(mtls_broker),
        cafile=str(pki.ca_file),
        certfile=str(mine.cert),
        keyfile=str(mine.key),
    )
    try:
        await round_trip(client, "mtls", b"with a client certificate")
    finally:
        await client.close()


async def _mtls_connect(broker: Any, pki: Pki, files: CertFiles) -> brokerd_client.AsyncClient:
    return await brokerd_client.connect(
        tls_url(broker),
        cafile=str(pki.ca_file),
        certfile=str(files.cert),
        keyfile=str(files.key),
        timeout=BOUND,
    )


async def test_certificate_login_takes_the_cn_as_the_user_without_a_password(
    broker_factory: Any, pki: Pki
) -> None:
    broker = broker_factory(
        *pki.server().flags(), "--tls-ca", str(pki.ca_file), "--tls-cert-login"
    ).start()
    worker = pki.client("worker", common_name="worker-1")
    # No users yet: loopback stays open, as without certificate login.
    async with await _mtls_connect(broker, pki, worker) as root:
        await root.call(lambda req: bp.AddUser(req, "worker-1", "unused-password", []))
        await root.call(
            lambda req: bp.SetPermissions(
                req, "worker-1", "/", "^w\\.", "^w\\.|^amq\\.default$", "^w\\."
            )
        )
        await root.call(lambda req: bp.AddUser(req, "admin", "pw", ["administrator"]))
        await root.call(lambda req: bp.SetPermissions(req, "admin", "/", ".*", ".*", ".*"))
    async with await _mtls_connect(broker, pki, worker) as client:
        await round_trip(client, "w.jobs", b"as worker-1")
        with pytest.raises(brokerd_client.AccessRefused, match="worker-1"):
            await client.declare_queue("other.jobs")
    stranger = pki.client("stranger", common_name="nobody")
    with pytest.raises(brokerd_client.AuthenticationError, match="common name"):
        await _mtls_connect(broker, pki, stranger)
    # A user name and password in the URL still log in as that user.
    async with await brokerd_client.connect(
        f"brokerds://admin:pw@127.0.0.1:{broker.port}",
        cafile=str(pki.ca_file),
        certfile=str(stranger.cert),
        keyfile=str(stranger.key),
        timeout=BOUND,
    ) as admin:
        await admin.declare_queue("other.jobs")


def test_certificate_login_needs_a_client_ca(broker_factory: Any, pki: Pki) -> None:
    from brokerd.config import Config, ConfigError

    with pytest.raises(ConfigError, match="needs tls_ca"):
        Config(tls_cert="c", tls_key="k", tls_cert_login=True).validate()


async def test_the_token_is_still_checked_over_tls(broker_factory: Any, pki: Pki) -> None:
    broker = broker_factory(*pki.server().flags(), token="s3cret").start()
    with pytest.raises(brokerd_client.AuthenticationError):
        await brokerd_client.connect(
            tls_url(broker), token="wrong", cafile=str(pki.ca_file), timeout=BOUND
        )
    client = await brokerd_client.connect(
        tls_url(broker), token="s3cret", cafile=str(pki.ca_file), timeout=BOUND
    )
    await client.close()


# --- the handshake deadline --------------------------------------------------------------


async def test_a_peer_that_never_sends_a_client_hello_is_dropped_at_the_deadline(
    broker_factory: Any, pki: Pki
) -> None:
    broker = broker_factory(*pki.server().flags(), "--handshake-timeout", "1").start()
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    try:
        # The broker closes; we never sent a byte.
        assert await asyncio.wait_for(reader.read(), BOUND) == b""
    finally:
        writer.close()
    client = await brokerd_client.connect(tls_url(broker), cafile=str(pki.ca_file))
    await client.close()


async def test_a_peer_that_finishes_tls_but_never_says_hello_is_dropped_at_the_deadline(
    broker_factory: Any, pki: Pki
) -> None:
    broker = broker_factory(*pki.server().flags(), "--handshake-timeout", "1").start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", broker.port, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        data = await asyncio.wait_for(reader.read(), BOUND)
        assert b"handshake" in data  # Error(NOT_AUTHENTICATED, "...handshake...")
    finally:
        writer.close()


# --- reloading the certificate -----------------------------------------------------------


async def test_sighup_serves_the_new_certificate_to_new_connections_only(
    tls_broker: Any, pki: Pki
) -> None:
    files = tls_broker.cert
    old = der_of(files)
    assert served_certificate(tls_broker.port, pki.ca_file) == old
    before = await brokerd_client.connect(tls_url(tls_broker), cafile=str(pki.ca_file))
    try:
        await round_trip(before, "before-reload", b"1")
        renewed = pki.server("renewed")
        new = der_of(renewed)
        assert new != old
        os.replace(renewed.cert, files.cert)
        os.replace(renewed.key, files.key)
        os.kill(tls_broker.pid, signal.SIGHUP)
        await asyncio.to_thread(wait_for_log, tls_broker, "TLS certificate reloaded")
        served = await asyncio.to_thread(served_certificate, tls_broker.port, pki.ca_file)
        assert served == new
        # The connection opened before the reload is still open and working.
        await round_trip(before, "before-reload", b"2")
        after = await brokerd_client.connect(tls_url(tls_broker), cafile=str(pki.ca_file))
        await round_trip(after, "after-reload", b"3")
        await after.close()
    finally:
        await before.close()


async def test_a_bad_file_on_reload_keeps_the_old_certificate(tls_broker: Any, pki: Pki) -> None:
    files = tls_broker.cert
    serving = der_of(files)
    files.key.write_text("not a key\n")
    os.kill(tls_broker.pid, signal.SIGHUP)
    await asyncio.to_thread(wait_for_log, tls_broker, "TLS reload failed")
    [line] = [
        line for line in tls_broker.log_path.read_text().splitlines() if "TLS reload failed" in line
    ]
    assert str(files.key) in line and "keeping the current certificate" in line
    assert await asyncio.to_thread(served_certificate, tls_broker.port, pki.ca_file) == serving
    client = await brokerd_client.connect(tls_url(tls_broker), cafile=str(pki.ca_file))
    try:
        await round_trip(client, "after-bad-reload", b"still served")
    finally:
        await client.close()


# --- start-up errors -----------------------------------------------------------------------


def start_error(tmp_path: Path, *flags: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "brokerd", "--port", "0", "--data-dir", str(tmp_path / "d"),
         "--metrics-port", "0", *flags],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("brokerd:")]
    return done.returncode, "\n".join(errors)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "cannot read TLS certificate"),
        ("mismatch", "does not belong to certificate"),
        ("not-pem", "holds no PEM"),
        ("encrypted", "is encrypted"),
        ("key-only", "go together"),
    ],
)
def test_bad_tls_files_stop_the_start_with_one_line(
    tmp_path: Path, pki: Pki, case: str, expected: str
) -> None:
    good = pki.server()
    other = pki.server("other")
    flags = {
        "missing": ["--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(good.key)],
        "mismatch": ["--tls-cert", str(good.cert), "--tls-key", str(other.key)],
        "not-pem": ["--tls-cert", str(good.key), "--tls-key", str(good.key)],
        "encrypted": ["--tls-cert", str(good.cert), "--tls-key", str(_encrypted(good, tmp_path))],
        "key-only": ["--tls-key", str(good.key)],
    }[case]
    code, error = start_error(tmp_path, *flags)
    assert code != 0
    assert expected in error
    assert len(error.splitlines()) == 1
    assert "Traceback" not in error


def _encrypted(files: CertFiles, tmp_path: Path) -> Path:
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    path = tmp_path / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


# --- the other clients ---------------------------------------------------------------------


def test_the_blocking_client_connects_over_tls(tls_broker: Any, pki: Pki) -> None:
    with brokerd_client.Client(tls_url(tls_broker), cafile=str(pki.ca_file)) as client:
        client.declare_queue("sync-tls")
        client.publish("", "sync-tls", b"from a thread")
        assert client.queue_stats("sync-tls").ready == 1


def test_the_blocking_client_refuses_an_untrusted_broker(tls_broker: Any) -> None:
    with (
        brokerd_client.Client(tls_url(tls_broker)) as client,
        pytest.raises(TLSError, match="cafile="),
    ):
        client.connect()


def test_a_task_app_sends_over_tls_with_celerys_broker_use_ssl(tls_broker: Any, pki: Pki) -> None:
    from brokerd_client.tasks import App

    app = App(
        "tlsapp",
        broker=tls_url(tls_broker),
        broker_use_ssl={"ssl_ca_certs": str(pki.ca_file)},
    )

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    try:
        add.delay(1, 2)
        assert app.clients.producer.queue_stats("celery").ready == 1
    finally:
        app.clients.close()


def test_a_task_app_with_a_bad_broker_use_ssl_fails_when_configured(pki: Pki) -> None:
    from brokerd_client.tasks import App
    from brokerd_client.tasks.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown key 'ssl_ca_cert'"):
        App("bad", broker_use_ssl={"ssl_ca_cert": str(pki.ca_file)})


async def test_unfinished_tls_handshakes_count_against_max_handshakes(
    broker_factory: Any, pki: Pki
) -> None:
    # The deadline is far away: only the pool limit can close anything here.
    broker = broker_factory(
        *pki.server().flags(), "--max-handshakes", "2", "--handshake-timeout", "3600"
    ).start()
    # The oldest never sends a byte, the next sends half a ClientHello record.
    silent = await asyncio.open_connection("127.0.0.1", broker.port)
    partial = await asyncio.open_connection("127.0.0.1", broker.port)
    partial[1].write(b"\x16\x03\x01\x02\x00\x01")
    await partial[1].drain()
    try:
        # A third unfinished TLS handshake fills the pool past its limit: the
        # broker drops the oldest, the silent one.
        third = await asyncio.open_connection("127.0.0.1", broker.port)
        try:
            assert await asyncio.wait_for(silent[0].read(), BOUND) == b""
            # An honest client still gets in (it pushes out the next oldest).
            client = await brokerd_client.connect(
                tls_url(broker), cafile=str(pki.ca_file), timeout=BOUND
            )
            await round_trip(client, "after-the-flood", b"ok")
            await client.close()
            assert await asyncio.wait_for(partial[0].read(), BOUND) == b""
        finally:
            third[1].close()
    finally:
        silent[1].close()
        partial[1].close()
