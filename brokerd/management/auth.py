"""Who is asking the management API, and what they may do.

Three modes, decided by the broker's own credentials:

* **open**: no users and no token, bound to loopback (the broker port takes
  anyone there too): every request acts as an administrator.
* **token**: HTTP Basic with the broker's token as password (any user
  name) acts as an administrator, with users or without, as the token does
  on the broker port.
* **users**: HTTP Basic with a broker user's name and password, or the page's
  session cookie. A user without a management tag is refused (401, as
  RabbitMQ answers "Not management user").

Tags (RabbitMQ's meaning): ``monitoring`` reads everything; ``management``
reads and changes only the vhosts it has permissions on, within its
configure/write/read patterns; ``administrator`` does anything.

Sessions: ``POST /api/login`` checks the password once and sets a random
session cookie (HttpOnly, SameSite=Strict); every mutating request that
authenticates with the cookie must also carry the session's CSRF token in
``X-CSRF-Token``. Basic-auth requests carry no ambient credential and are
exempt, as in RabbitMQ. Checked Basic passwords are remembered for
``BASIC_CACHE_SECONDS`` (as a keyed hash, never the password) so a
monitoring script polling every second does not pay scrypt each time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import brokerd_protocol as bp

from ..auth.access import Access
from ..auth.rules import RULES
from ..auth.users import ADMINISTRATOR, MANAGEMENT, MONITORING, User, Users
from ..auth.verifier import Verifier
from ..throttle import AuthThrottle
from .http import HTTPError, Request

#: Tags that may use the management plane at all.
MANAGEMENT_TAGS = frozenset({ADMINISTRATOR, MANAGEMENT, MONITORING})
SESSION_COOKIE = "brokerd_session"
#: A page session ends this long after its last use.
SESSION_IDLE = 3600.0
MAX_SESSIONS = 1000
BASIC_CACHE_SECONDS = 60.0
MAX_BASIC_CACHE = 256
REALM = 'Basic realm="brokerd management", charset="UTF-8"'


def unauthorized(reason: str = "login required") -> HTTPError:
    return HTTPError(401, reason, (("WWW-Authenticate", REALM),))


def forbidden(reason: str) -> HTTPError:
    return HTTPError(403, reason)


@dataclass(slots=True)
class Principal:
    """The requester: a user (or the open/token administrator)."""

    name: str
    tags: frozenset[str]
    #: None: not a broker user (open or token mode): allowed everything.
    user: User | None
    via_cookie: bool = False
    csrf: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.user is None or ADMINISTRATOR in self.tags


@dataclass(slots=True)
class Session:
    user: str
    password_hash: str
    csrf: str
    last_used: float = field(default=0.0)


class Gate:
    """Authentication and authorisation for the management API."""

    def __init__(
        self,
        users: Users,
        verifier: Verifier,
        token: str | None,
        *,
        throttle: AuthThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = users
        self.verifier = verifier
        self.token = token
        #: The broker port's failed-authentication throttle: guesses over
        #: HTTP and over the broker port count against the same address.
        self.throttle = throttle if throttle is not None else AuthThrottle(clock)
        self.clock = clock
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        #: (user, keyed hash of the password) -> (stored hash, checked at).
        self._basic: OrderedDict[tuple[str, bytes], tuple[str, float]] = OrderedDict()
        self._key = secrets.token_bytes(32)

    @property
    def open(self) -> bool:
        return not self.users.defined and self.token is None

    # --- who ------------------------------------------------------------------------

    async def principal(self, request: Request) -> Principal:
        """The requester, or 401 (unknown user and wrong password alike)."""
        if self.open:
            return Principal("", frozenset({ADMINISTRATOR}), None)
        header = request.headers.get("authorization")
        if header is not None:
            name, password = _basic(header)
            return await self._check_basic(name, password, request.peer_host)
        token = request.cookie(SESSION_COOKIE)
        if token is not None:
            return self._from_session(token)
        raise unauthorized()

    async def _check_basic(self, name: str, password: str, host: str) -> Principal:
        # The token is the broker's built-in administrator, with users or
        # without (as on the broker port); any user name goes with it.
        if self.token is not None and hmac.compare_digest(password.encode(), self.token.encode()):
            await self._throttled(host)
            self.throttle.succeeded(host)
            return Principal(name or "token", frozenset({ADMINISTRATOR}), None)
        if not self.users.defined:
            await self._throttled(host)
            self.throttle.failed(host)
            raise unauthorized("wrong user name or password")
        user = await self.check_password(name, password, host)
        if user is None:
            raise unauthorized("wrong user name or password")
        return self._tagged(user)

    async def _throttled(self, host: str) -> None:
        """Wait for ``host``'s turn after its failed attempts (at most the
        throttle's cap, 5 s), as the broker port makes a Hello wait."""
        wait = self.throttle.wait(host)
        if wait > 0:
            self.throttle.deferred()
            await asyncio.sleep(wait)

    async def check_password(self, name: str, password: str, host: str) -> User | None:
        """The user if ``password`` is theirs (scrypt off the loop, cached;
        failures throttled per address)."""
        key = (name, hmac.digest(self._key, password.encode(), hashlib.sha256))
        now = self.clock()
        cached = self._basic.get(key)
        user = self.users.get(name)
        if cached is not None and user is not None:
            stored, at = cached
            if now - at < BASIC_CACHE_SECONDS and hmac.compare_digest(stored, user.password_hash):
                return user
        await self._throttled(host)
        future: asyncio.Future[User | None] = asyncio.get_running_loop().create_future()

        def done(result: User | None) -> None:
            if not future.done():
                future.set_result(result)

        self.verifier.check(name, password, done)
        checked = await future
        if checked is None:
            self.throttle.failed(host)
        else:
            self.throttle.succeeded(host)
            self._basic[key] = (checked.password_hash, now)
            self._basic.move_to_end(key)
            while len(self._basic) > MAX_BASIC_CACHE:
                self._basic.popitem(last=False)
        return checked

    def _tagged(self, user: User, session: Session | None = None) -> Principal:
        if not user.tags & MANAGEMENT_TAGS:
            raise unauthorized(f"user '{user.name}' has no management tag (Not management user)")
        return Principal(
            user.name,
            user.tags,
            user,
            via_cookie=session is not None,
            csrf=session.csrf if session is not None else None,
        )

    def _from_session(self, token: str) -> Principal:
        session = self.sessions.get(token)
        now = self.clock()
        if session is None or now - session.last_used > SESSION_IDLE:
            self.sessions.pop(token, None)
            raise unauthorized("the session ended: log in again")
        user = self.users.get(session.user)
        if user is None or not hmac.compare_digest(user.password_hash, session.password_hash):
            # Deleted, or the password changed since the login.
            del self.sessions[token]
            raise unauthorized("the session ended: log in again")
        session.last_used = now
        self.sessions.move_to_end(token)
        return self._tagged(user, session)

    # --- page sessions ----------------------------------------------------------------

    async def login(self, name: str, password: str, host: str) -> tuple[str, Session]:
        """A new session for a user with a management tag, or 401."""
        if not self.users.defined:
            raise HTTPError(400, "this broker has no users: the page needs no login")
        user = await self.check_password(name, password, host)
        if user is None:
            raise unauthorized("wrong user name or password")
        self._tagged(user)
        token = secrets.token_urlsafe(32)
        session = Session(user.name, user.password_hash, secrets.token_urlsafe(32), self.clock())
        self.sessions[token] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return token, session

    def logout(self, request: Request) -> None:
        token = request.cookie(SESSION_COOKIE)
        if token is not None:
            self.sessions.pop(token, None)

    @staticmethod
    def check_origin(request: Request) -> None:
        """A mutating request a browser sends from another site is refused
        whatever its credentials (a cross-site form or ``fetch`` in no-cors
        mode would otherwise reach a broker without users). Browsers say
        where a request comes from in ``Sec-Fetch-Site`` and ``Origin``;
        scripts send neither and pass."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise forbidden(f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("origin")
        if origin is not None:
            host = request.headers.get("host", "")
            if origin.split("://", 1)[-1] != host:
                raise forbidden(f"cross-origin request refused (Origin: {origin})")

    def check_host(self, request: Request, allowed: str) -> None:
        """Without users anyone reaching the port is an administrator, so
        only requests addressed to a loopback name or an IP literal are
        answered: a DNS-rebinding page (its own name pointed at 127.0.0.1)
        is refused."""
        if not self.open:
            return
        host = request.headers.get("host")
        if host is None:
            return  # HTTP/1.0 scripts; browsers always send Host
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if name in ("localhost", allowed.lower()) or name.endswith(".localhost"):
            return
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise forbidden(
                f"Host {host!r} refused: without users the management API answers only "
                "requests to localhost or an IP address (DNS rebinding)"
            ) from None

    @staticmethod
    def check_csrf(principal: Principal, request: Request) -> None:
        """Mutating requests authenticated by the cookie must prove they come
        from the page: its CSRF token in a header a cross-site form cannot set."""
        if not principal.via_cookie:
            return
        sent = request.headers.get("x-csrf-token", "")
        if principal.csrf is None or not hmac.compare_digest(
            sent.encode(), principal.csrf.encode()
        ):
            raise forbidden("missing or wrong X-CSRF-Token header (log in again)")

    # --- what ---------------------------------------------------------------------------

    def can_read(self, p: Principal, vhost: str) -> bool:
        if p.user is None or p.tags & {ADMINISTRATOR, MONITORING}:
            return True
        return self.users.permission(p.name, vhost) is not None

    def check_read(self, p: Principal, vhost: str) -> None:
        if not self.can_read(p, vhost):
            raise forbidden(f"user '{p.name}' has no access to vhost '{vhost}'")

    def check_change(self, p: Principal, vhost: str, permission: str, kind: str, name: str) -> None:
        """Administrators change anything; ``management`` users their own
        vhosts within their patterns; anyone else (monitoring) is refused."""
        if p.is_admin:
            return
        if MANAGEMENT not in p.tags:
            raise forbidden(f"user '{p.name}' may only read (tags: {', '.join(sorted(p.tags))})")
        perm = self.users.permission(p.name, vhost)
        if perm is None:
            raise forbidden(f"user '{p.name}' has no access to vhost '{vhost}'")
        access = Access(p.name, vhost, p.tags, perm)
        if not access.allowed(permission, name):
            raise forbidden(
                f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{p.name}': "
                f"{permission} permission needed"
            )

    def check_frame(self, p: Principal, vhost: str, frame: bp.Frame) -> None:
        """What ``frame`` needs on the broker port (its row of ``auth/rules.py``,
        the table sessions check), asked of ``p`` as ``check_change`` does:
        the HTTP endpoint that does what a frame does has the frame's rule."""
        for need in RULES[type(frame)].needs:
            self.check_change(p, vhost, need.permission, need.kind, need.resource(frame))

    @staticmethod
    def check_admin(p: Principal) -> None:
        if not p.is_admin:
            raise forbidden(f"user '{p.name}' is not an administrator")

    def check_monitor(self, p: Principal) -> None:
        """Broker-wide reads (users, connections of all vhosts) need
        administrator or monitoring."""
        if not (p.is_admin or MONITORING in p.tags):
            raise forbidden(f"user '{p.name}' needs the monitoring or administrator tag")


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise unauthorized("only Basic authorization is accepted")
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise unauthorized("malformed Basic authorization") from None
    name, colon, password = raw.partition(":")
    if not colon:
        raise unauthorized("malformed Basic authorization")
    return name, password
