# -*- test-case-name: rustpbx_py.test.test_trunk_registration -*-
"""
Registering trunks with their providers (C{register_enabled = true}).

For each such trunk the PBX REGISTERs C{username@dest-host} at the trunk's
C{dest} with C{register_expires}, answers the provider's 401/407 with the
trunk's credentials, refreshes 30 seconds before the granted expiry (never
before half of it), retries failures with a growing back-off, and removes
the binding (C{Expires: 0}) when the service stops.

A C{dest} given by host name is located with RFC 3263 (NAPTR, SRV, A/AAAA,
see L{rustpbx_py.protocols.resolve}) when the registrar is given a
C{locate} function: a target that refuses the connection, answers 503 or
lets the transaction time out (408) is left for the next one at once; when
every target failed, the usual back-off applies and the name is looked up
again.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.logger import Logger

from rustpbx_py.call.credentials import build_authorization, challenge_of
from rustpbx_py.protocols.transports import TransportError
from rustpbx_py.sip.headers import HeaderError, NameAddr, URI, join_hostport, parse_auth_params
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.responses import new_call_id, new_tag

#: Longest wait between two attempts after failures, seconds.
MAX_BACKOFF = 300.0
#: First wait after a failure; it doubles with each failure in a row.
FIRST_BACKOFF = 5.0
#: How long stopping waits for the provider to answer the un-REGISTER.
STOP_TIMEOUT = 2.0


def refresh_delay(granted: float) -> float:
    """When to refresh a registration granted for C{granted} seconds:
    30 seconds before it expires, but not before half of it has passed."""
    return max(granted / 2.0, granted - 30.0)


def retry_delay(failures: int) -> float:
    """The wait before the next attempt after C{failures} failures in a row."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(failures - 1, 0))


class TrunkRegistration:
    """
    Keeps one trunk registered.

    @ivar state: C{idle}, C{registering}, C{registered}, C{failed},
        C{unregistered} (after stop) or C{stopped}.
    @ivar expires: the lifetime the provider granted last, seconds.
    @ivar error: why the last attempt failed, for the console.
    @ivar observers: called with this object after every answered attempt.
    """

    log = Logger()

    def __init__(self, name: str, trunk, destination, dest_uri: URI, core, clock, proxy, locate: Optional[Callable[[], defer.Deferred]] = None) -> None:
        self.name = name
        #: () -> Deferred of the RFC 3263 targets of dest (None: connect to
        #: C{destination} as it is).
        self.locate = locate
        self._targets: list = []
        self._target = 0
        self.trunk = trunk
        self.destination = destination
        self.core = core
        self.clock = clock
        self.useragent = proxy.useragent
        self.username = trunk.username or name
        self.password = trunk.password
        self.requested = trunk.register_expires
        host = dest_uri.host
        self.registrar_uri = f"{dest_uri.scheme}:{join_hostport(host, dest_uri.port)}"
        self.aor = f"{dest_uri.scheme}:{self.username}@{host}"
        self.call_id = new_call_id(proxy.callid_suffix)
        self.from_tag = new_tag()
        self.cseq = 0
        self.flow = None
        self.state = "idle"
        self.expires: Optional[int] = None
        self.error: Optional[str] = None
        self.failures = 0
        self.registrations = 0
        self.observers: List[Callable] = []
        self._challenge: Optional[tuple] = None  # (status, header value)
        self._nc = 0
        self._timer = None
        self._stopping: Optional[defer.Deferred] = None

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Send the first REGISTER."""
        self._attempt()

    def stop(self) -> defer.Deferred:
        """
        Stop refreshing and, when registered, send C{Expires: 0}; fires
        when the provider answered or after L{STOP_TIMEOUT} seconds.
        """
        self._cancel_timer()
        was = self.state
        self.state = "stopped"
        if was not in ("registered", "registering") or self.flow is None:
            return defer.succeed(None)
        done = self._stopping = defer.Deferred()
        timeout = self.clock.callLater(STOP_TIMEOUT, self._stop_done)

        def finished(result):
            if timeout.active():
                timeout.cancel()
            return result

        done.addBoth(finished)
        try:
            self._send(0, challenges=0)
        except Exception:
            self.log.failure("trunk {trunk}: could not send the un-REGISTER", trunk=self.name)
            self._stop_done()
        return done

    def _stop_done(self) -> None:
        d, self._stopping = self._stopping, None
        if d is not None:
            d.callback(None)

    def status(self) -> dict:
        """What the console shows about this registration."""
        return {
            "trunk": self.name,
            "state": self.state,
            "registered": self.state == "registered",
            "expires": self.expires,
            "error": self.error,
            "registrar": self.registrar_uri,
            "aor": self.aor,
        }

    # -- one attempt -----------------------------------------------------------

    def _attempt(self) -> None:
        self._timer = None
        if self.state == "stopped":
            return
        self.state = "registering" if self.state != "registered" else "registered"
        if self.flow is not None and getattr(self.flow, "connected", True):
            self._send(self.requested, challenges=0)
            return
        if self.locate is None:
            transport, host, port = self.destination
            d = self.core.resolve(transport, host, port)
            d.addCallbacks(self._resolved, self._unreachable)
            return
        if self._targets:
            self._connect_target()
            return
        d = self.locate()
        d.addCallbacks(self._located, self._unreachable)

    def _located(self, targets) -> None:
        if self.state == "stopped":
            return
        if not targets:
            self._failed(f"{self.registrar_uri} does not resolve")
            return
        self._targets, self._target = list(targets), 0
        self._connect_target()

    def _connect_target(self) -> None:
        target = self._targets[self._target]
        # TLS connects by name: the certificate is checked against it.
        host = target.name if target.transport in ("tls", "wss") else target.host
        d = self.core.resolve(target.transport, host, target.port)
        d.addCallbacks(self._resolved, self._target_unreachable)

    def _target_unreachable(self, failure) -> None:
        if failure.check(TransportError) is None:
            self.log.failure("trunk {trunk}: connecting to the registrar failed", failure, trunk=self.name)
        self._next_target(f"cannot reach {self.registrar_uri}: {failure.getErrorMessage()}")

    def _next_target(self, why: str) -> None:
        """The current target failed: try the next one now, or give up
        this round (back-off, and a new DNS look-up next time)."""
        self.flow = None
        if self.state == "stopped":
            return
        if self._target + 1 < len(self._targets):
            failed = self._targets[self._target]
            self._target += 1
            self.log.info(
                "trunk {trunk}: {why} at {host}:{port}; trying the next target",
                trunk=self.name, why=why, host=failed.host, port=failed.port,
            )
            self._connect_target()
            return
        self._targets, self._target = [], 0
        self._failed(why)

    def _resolved(self, flow) -> None:
        if self.state == "stopped":
            return
        self.flow = flow
        self._send(self.requested, challenges=0)

    def _unreachable(self, failure) -> None:
        if failure.check(TransportError) is None:
            self.log.failure("trunk {trunk}: resolving the registrar failed", failure, trunk=self.name)
        self._failed(f"cannot reach {self.registrar_uri}: {failure.getErrorMessage()}")

    def _build(self, expires: int) -> Request:
        self.cseq += 1
        core = self.core
        req = Request("REGISTER", self.registrar_uri)
        req.add("Via", core.via_for(self.flow))
        req.add("Max-Forwards", "70")
        req.add("From", f"<{self.aor}>;tag={self.from_tag}")
        req.add("To", f"<{self.aor}>")
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{self.cseq} REGISTER")
        req.add("Contact", core.contact_for(self.flow, self.username))
        req.add("Expires", str(expires))
        for name, value in self.trunk.register_extra_headers.items():
            req.add(name, value)
        if self._challenge is not None and self.password is not None:
            status, challenge = self._challenge
            self._nc += 1
            authorization = build_authorization(challenge, "REGISTER", self.registrar_uri, self.username, self.password, self._nc)
            req.add("Authorization" if status == 401 else "Proxy-Authorization", authorization)
        if self.useragent:
            req.add("User-Agent", self.useragent)
        return req

    def _send(self, expires: int, challenges: int) -> None:
        """One REGISTER; C{challenges} counts the challenges this attempt answered."""
        request = self._build(expires)
        self.core.send_request(request, self.flow, lambda tx, r: self._response(request, expires, r, challenges))

    def _response(self, request: Request, expires: int, response: Response, challenges: int) -> None:
        status = response.status
        if status < 200:
            return
        if expires == 0:
            self._unregister_response(response, challenges)
            return
        if self.state == "stopped":
            return
        if 200 <= status < 300:
            self._registered(self._granted(response, expires))
            return
        if status in (401, 407) and self.password is not None:
            # A new challenge is answered once per attempt; a stale=true one
            # (right password, old nonce) once more.
            if (challenges == 0 or challenges == 1 and self._stale(response)) and self._take_challenge(response):
                self._send(expires, challenges=challenges + 1)
                return
        if status == 423:
            minimum = (response.get("min-expires") or "").strip()
            if minimum.isdigit() and int(minimum) > expires:
                self.requested = int(minimum)
                self._send(self.requested, challenges)
                return
        why = f"REGISTER answered {status} {response.reason}".strip()
        if self.locate is not None and status in (408, 503):
            # RFC 3263 4.3: this server is unavailable; others may not be.
            self._next_target(why)
            return
        self._failed(why)

    def _unregister_response(self, response: Response, challenges: int) -> None:
        if response.status in (401, 407) and challenges == 0 and self.password is not None:
            if self._take_challenge(response):
                self._send(0, challenges=challenges + 1)
                return
        self.expires = None
        if 200 <= response.status < 300:
            self.state = "unregistered"
        self._notify()
        self._stop_done()

    def _take_challenge(self, response: Response) -> bool:
        challenge = challenge_of(response)
        if not challenge:
            return False
        self._challenge = (response.status, challenge)
        self._nc = 0
        return True

    def _stale(self, response: Response) -> bool:
        """A challenge saying our credentials were right but the nonce old (RFC 7616 3.3)."""
        challenge = challenge_of(response)
        if not challenge or self.password is None:
            return False
        try:
            _, params = parse_auth_params(challenge)
        except HeaderError:
            return False
        return (params.get("stale") or "").lower() == "true"

    def _granted(self, response: Response, asked: int) -> int:
        """The lifetime the 2xx grants our Contact (RFC 3261 10.2.4)."""
        ours = None
        try:
            ours = NameAddr.parse(self.core.contact_for(self.flow, self.username)).uri
        except HeaderError:
            pass
        for value in response.get_all("contact"):
            try:
                na = NameAddr.parse(value)
            except HeaderError:
                continue
            uri = na.uri
            if ours is not None and uri is not None and uri.user == ours.user and uri.host == ours.host and uri.port == ours.port:
                found = (na.params.get("expires") or "").strip()
                if found.isdigit():
                    return int(found)
        value = (response.get("expires") or "").strip()
        if value.isdigit():
            return int(value)
        return asked

    def _registered(self, granted: int) -> None:
        self.state = "registered"
        self.expires = granted
        self.error = None
        self.failures = 0
        self.registrations += 1
        if granted <= 0:
            # The provider kept nothing: treat it as a failure to retry.
            self._failed("REGISTER accepted with no lifetime")
            return
        self._schedule(refresh_delay(granted))
        self._notify()

    def _failed(self, why: str) -> None:
        if self.state == "stopped":
            return
        self.failures += 1
        self.error = why
        self.state = "failed"
        delay = retry_delay(self.failures)
        self.log.warn(
            "trunk {trunk}: registration failed ({why}); retrying in {delay:.0f} s", trunk=self.name, why=why, delay=delay
        )
        self._schedule(delay)
        self._notify()

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.clock.callLater(delay, self._attempt)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _notify(self) -> None:
        for observer in list(self.observers):
            try:
                observer(self)
            except Exception:
                self.log.failure("trunk registration observer failed")


class TrunkRegistrar:
    """The registrations of every trunk with C{register_enabled}."""

    def __init__(self, proxy, trunks, core, clock, resolver=None) -> None:
        """
        @param resolver: a L{rustpbx_py.protocols.resolve.SipResolver}: trunk
            dests are then located with RFC 3263 (None: C{dest} as written).
        """
        self.resolver = resolver
        self.proxy = proxy
        self.trunks = trunks
        self.core = core
        self.clock = clock
        self.registrations: Dict[str, TrunkRegistration] = {}
        #: Called with a registration after each of its answered attempts
        #: (shared by every registration; the console and tests watch it).
        self.observers: List[Callable] = []

    def update(self, proxy) -> defer.Deferred:
        """
        Follow a reload of the trunks (C{proxy}: the new C{[proxy]}): a
        registration whose trunk is gone, disabled or changed is ended
        (un-REGISTER), one for a new or changed trunk started; unchanged
        ones go on.  Fires when the ended ones are done.
        """
        stops = []
        for name, registration in list(self.registrations.items()):
            config = proxy.trunks.get(name)
            if config is None or config != registration.trunk or not config.register_enabled or config.disabled:
                del self.registrations[name]
                stops.append(registration.stop())
        self.proxy = proxy
        self.start()
        return defer.DeferredList(stops, consumeErrors=True)

    def start(self) -> None:
        for name, config in self.proxy.trunks.items():
            if not config.register_enabled or config.disabled or name in self.registrations:
                continue
            locate = None
            if self.resolver is not None:
                where = self.trunks.locations(name)[0]
                locate = lambda where=where: self.resolver.locate(where.host, where.port, where.transport, where.secure)  # noqa: E731
            registration = TrunkRegistration(
                name,
                config,
                self.trunks.destination(name),
                self.trunks.dest_uri(name),
                self.core,
                self.clock,
                self.proxy,
                locate,
            )
            registration.observers = self.observers
            self.registrations[name] = registration
            # trunk_status() shows it next to the OPTIONS health.
            self.trunks.health(name).registration = registration
            registration.start()

    def stop(self) -> defer.Deferred:
        """Un-REGISTER every trunk; fires when all answered or timed out."""
        waits = [r.stop() for r in self.registrations.values()]
        return defer.DeferredList(waits, consumeErrors=True)

    def statuses(self) -> List[dict]:
        return [r.status() for r in self.registrations.values()]
