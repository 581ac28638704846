"""The client side of TLS: which ``SSLContext`` a connection uses, and what its failures mean.

Every client (async, sync, the task SDK, the kombu transport) decides TLS
here, so they agree:

* **When.** TLS is used when the URL is ``brokerds://`` or any TLS option is
  given (``ssl_context``, ``cafile``, ``certfile``): an option asking for TLS
  is never silently ignored, and never falls back to plain TCP.
* **Verification is on by default**: the broker's certificate must chain to
  a trusted CA (the system's, or ``cafile``) and name the host of the URL.
  Turning it off takes an explicit ``ssl_context`` (or Celery's
  ``ssl_cert_reqs=CERT_NONE``), never a default.
* TLS 1.2 at least. ``certfile``/``keyfile`` present a client certificate
  (brokers started with ``--tls-ca``).
* **Failures say what to fix.** ``tls_failure`` turns OpenSSL's reasons into
  a :class:`~brokerd_client.errors.TLSError` naming the likely cause (an
  untrusted CA, an expired certificate, a host name mismatch, a missing
  client certificate, a port that does not speak TLS).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from .errors import TLSError
from .url import BrokerURL

__all__ = ["client_context", "from_celery", "plain_port_hint", "tls_failure"]


def client_context(
    url: BrokerURL,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> ssl.SSLContext | None:
    """The context to connect to ``url`` with; None for plain TCP."""
    if ssl_context is not None:
        if cafile is not None or certfile is not None or keyfile is not None:
            raise ValueError(
                "give either ssl_context or cafile/certfile/keyfile, not both "
                "(load them into the context yourself)"
            )
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context)}")
        return ssl_context
    if keyfile is not None and certfile is None:
        raise ValueError("keyfile needs certfile (the client certificate it belongs to)")
    if not url.tls and cafile is None and certfile is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load CA file {cafile}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile is not None:
        try:
            ctx.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load client certificate {certfile}"
                f"{f' with key {keyfile}' if keyfile else ''}: {exc}"
            ) from None
    return ctx


#: Celery's ``broker_use_ssl`` keys (with or without ``ssl_``), as this module names them.
_CELERY_KEYS = {
    "cert_reqs": "cert_reqs",
    "ca_certs": "cafile",
    "certfile": "certfile",
    "keyfile": "keyfile",
}
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "cert_none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "cert_optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
    "cert_required": ssl.CERT_REQUIRED,
}


def from_celery(url: BrokerURL, use_ssl: Any) -> ssl.SSLContext | None:
    """The context for Celery's ``broker_use_ssl`` (kombu's ``ssl``) setting.

    ``False``/``None``: TLS only if the URL is ``brokerds://``. ``True``: TLS
    with default verification. An ``SSLContext``: that context. A dict with
    ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``
    (the ``ssl_`` prefix optional, as kombu's transports accept both):
    TLS with those; ``ssl_cert_reqs=ssl.CERT_NONE`` turns verification off.
    Unknown keys are refused rather than ignored.
    """
    if use_ssl is None or use_ssl is False:
        return client_context(url)
    if use_ssl is True:
        return client_context(BrokerURL(url.host, url.port, url.token, tls=True))
    if isinstance(use_ssl, ssl.SSLContext):
        return use_ssl
    if not isinstance(use_ssl, Mapping):
        raise ValueError(
            f"broker_use_ssl must be True, an ssl.SSLContext or a dict, not {use_ssl!r}"
        )
    options: dict[str, Any] = {}
    for key, value in use_ssl.items():
        name = _CELERY_KEYS.get(str(key).removeprefix("ssl_"))
        if name is None:
            allowed = ", ".join(f"ssl_{k}" for k in _CELERY_KEYS)
            raise ValueError(f"broker_use_ssl: unknown key {key!r} (brokerd reads {allowed})")
        options[name] = value
    reqs = options.pop("cert_reqs", ssl.CERT_REQUIRED)
    if isinstance(reqs, str):
        if reqs.lower() not in _CERT_REQS:
            raise ValueError(f"broker_use_ssl: ssl_cert_reqs {reqs!r} is not a CERT_* value")
        reqs = _CERT_REQS[reqs.lower()]
    ctx = client_context(BrokerURL(url.host, url.port, url.token, tls=True), **options)
    assert ctx is not None
    if reqs == ssl.CERT_NONE:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_failure(exc: ssl.SSLError, where: str) -> TLSError:
    """A :class:`TLSError` for an OpenSSL failure talking to ``where`` (host:port)."""
    reason = str(exc.reason or "")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = str(exc.verify_message or exc)
        low = detail.lower()
        if "expired" in low:
            hint = "the broker's certificate has expired; renew it (then SIGHUP the broker)"
        elif "hostname mismatch" in low or "ip address mismatch" in low:
            hint = (
                "the broker's certificate does not name the host in the URL; connect with a "
                "name the certificate lists, or issue one for this name"
            )
        elif "issuer" in low or "self-signed" in low or "self signed" in low:
            hint = (
                "the broker's certificate is not signed by a CA this client trusts; pass "
                "cafile= (Celery: broker_use_ssl={'ssl_ca_certs': ...}) with the CA that signed it"
            )
        else:
            hint = "the broker's certificate was refused"
        return TLSError(f"TLS: cannot verify brokerd at {where}: {detail}; {hint}")
    if "CERTIFICATE_REQUIRED" in reason or ("HANDSHAKE_FAILURE" in reason and "ALERT" in reason):
        return TLSError(
            f"TLS handshake with brokerd at {where} refused ({reason.lower()}): the broker "
            "may require a client certificate (certfile=/keyfile=), or its port is not TLS "
            "(then connect with brokerd://)"
        )
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
        return TLSError(
            f"TLS: brokerd at {where} refused this client's certificate ({reason.lower()}); "
            "it must be signed by a CA in the broker's --tls-ca"
        )
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
        return TLSError(
            f"TLS handshake with brokerd at {where} failed ({reason.lower()}): the port does "
            "not speak TLS; connect with brokerd://"
        )
    return TLSError(f"TLS with brokerd at {where} failed: {exc}")


def plain_port_hint(where: str) -> TLSError:
    """What a plain client is told when the broker answers with TLS bytes."""
    return TLSError(
        f"brokerd at {where} answered with TLS: its port requires TLS; connect with "
        "brokerds:// (and cafile= if its CA is private)"
    )
