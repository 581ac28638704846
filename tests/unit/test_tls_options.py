"""TLS settings without a network: URLs, client contexts, Celery's broker_use_ssl,
the broker's TLS settings and its certificate reload."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from tlskit import Pki

from brokerd.config import ConfigError, load
from brokerd.tls import ServerTLS, TLSFiles
from brokerd_client.tls import client_context, from_celery
from brokerd_client.url import BrokerURL, parse_url


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def test_brokerds_urls_ask_for_tls_on_the_same_default_port() -> None:
    url = parse_url("brokerds://s3cret@broker.internal")
    assert (url.host, url.port, url.tls) == ("broker.internal", 5673, True)
    assert str(url) == "brokerds://broker.internal:5673"
    assert "s3cret" not in repr(url)
    assert not parse_url("brokerd://h").tls


def test_no_tls_without_brokerds_or_a_tls_option() -> None:
    assert client_context(parse_url("brokerd://h")) is None


def test_brokerds_verifies_the_certificate_and_the_host_name_by_default() -> None:
    ctx = client_context(parse_url("brokerds://h"))
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_cafile_turns_tls_on_even_for_a_brokerd_url(pki: Pki) -> None:
    assert client_context(parse_url("brokerd://h"), cafile=str(pki.ca_file)) is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keyfile": "k.pem"}, "keyfile needs certfile"),
        ({"ssl_context": ssl.create_default_context(), "cafile": "ca.pem"}, "not both"),
        ({"cafile": "/nonexistent/ca.pem"}, "cannot load CA file"),
    ],
)
def test_inconsistent_tls_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        client_context(parse_url("brokerds://h"), **kwargs)  # type: ignore[arg-type]


def test_celerys_broker_use_ssl_maps_onto_the_client_context(pki: Pki) -> None:
    plain, tls = parse_url("brokerd://h"), parse_url("brokerds://h")
    assert from_celery(plain, None) is None and from_celery(plain, False) is None
    assert from_celery(tls, None) is not None
    assert from_celery(plain, True) is not None
    own = ssl.create_default_context()
    assert from_celery(plain, own) is own
    mine = pki.client()
    ctx = from_celery(
        plain,
        {
            "ssl_ca_certs": str(pki.ca_file),
            "certfile": str(mine.cert),
            "ssl_keyfile": str(mine.key),
        },
    )
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
    off = from_celery(plain, {"ssl_cert_reqs": ssl.CERT_NONE})
    assert off is not None and off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_unknown_broker_use_ssl_keys_are_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="unknown key 'ssl_ca_cert'"):
        from_celery(BrokerURL("h"), {"ssl_ca_cert": "ca.pem"})


def test_broker_tls_settings_come_from_flags_env_and_go_together() -> None:
    env = {"BROKERD_TLS_CERT": "c.pem", "BROKERD_TLS_KEY": "k.pem"}
    config = load([], env)
    assert (config.tls_cert, config.tls_key, config.tls_ca) == ("c.pem", "k.pem", None)
    with pytest.raises(ConfigError, match="go together"):
        load(["--tls-cert", "c.pem"], {})
    with pytest.raises(ConfigError, match="needs tls_cert"):
        load(["--tls-ca", "ca.pem"], {})


def test_a_failed_reload_keeps_the_live_context_and_a_good_one_counts(pki: Pki) -> None:
    files = pki.server()
    tls = ServerTLS(TLSFiles(str(files.cert), str(files.key)))
    context = tls.context
    files.key.write_text("garbage")
    assert not tls.reload()
    assert tls.context is context and tls.reloads == 0
    renewed = pki.server("renewed")
    files.key.write_bytes(renewed.key.read_bytes())
    files.cert.write_bytes(renewed.cert.read_bytes())
    assert tls.reload()
    assert tls.context is context and tls.reloads == 1


def test_client_certificates_are_verified_when_a_ca_is_given(pki: Pki) -> None:
    files = pki.server()
    tls = ServerTLS(TLSFiles(str(files.cert), str(files.key), str(pki.ca_file)))
    # OPTIONAL: a certificate presented must verify; none is refused by the session.
    assert tls.context.verify_mode == ssl.CERT_OPTIONAL
    assert tls.context.minimum_version >= ssl.TLSVersion.TLSv1_2
