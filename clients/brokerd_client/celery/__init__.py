"""Run unchanged Celery apps on brokerd: a kombu transport and a Celery result backend.

``pip install 'brokerd[celery]'`` and set ``broker_url = "brokerd://host:5673"``
and ``result_backend = "brokerd://host:5673"``.

How the ``brokerd://`` scheme reaches kombu and Celery:

* Celery finds result backends through the ``celery.result_backends`` entry
  point group, so ``result_backend = "brokerd://..."`` needs no code.
* kombu resolves transport names only through its ``TRANSPORT_ALIASES`` dict
  (it has no entry point group for transports), so something must add
  ``brokerd`` to it before the first connection. Importing this package does
  that. Every ``celery`` command (worker, beat, inspect, control, events,
  flower) imports it with no user code: the ``celery brokerd`` command is an
  entry point of the ``celery.commands`` group, which the celery CLI loads at
  start-up. A process that sends tasks without being started by the celery
  CLI (a web app) needs one line where it creates its Celery app::

      import brokerd_client.celery  # noqa: F401  (registers brokerd:// with kombu)

Importing this package does not import kombu or Celery unless they are
installed; the native SDK never needs them.
"""

from __future__ import annotations

__all__ = ["SCHEMES", "TRANSPORT", "TRANSPORTS", "register"]

#: URL schemes served by the transport, and where kombu finds each one's class.
TRANSPORTS = {
    "brokerd": "brokerd_client.celery.transport:Transport",
    "brokerds": "brokerd_client.celery.transport:TLSTransport",  # TLS
}
SCHEMES = tuple(TRANSPORTS)
#: The plain transport (kept for code that names it).
TRANSPORT = TRANSPORTS["brokerd"]


def register() -> bool:
    """Add the ``brokerd`` and ``brokerds`` (TLS) schemes to kombu's transport aliases.

    Returns False when kombu is not installed. Safe to call any number of times.
    """
    try:
        from kombu import transport as kombu_transports
    except ImportError:
        return False
    for scheme, transport in TRANSPORTS.items():
        kombu_transports.TRANSPORT_ALIASES.setdefault(scheme, transport)
    return True


register()
