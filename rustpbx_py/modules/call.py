# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""
The C{call} module: a B2BUA.  New INVITEs become L{Call}s routed to a local
user's registered contacts or, through the routes, to a trunk; requests
inside a call's dialogs are relayed to the other leg.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.call import record as R
from rustpbx_py.call.b2bua import Call, Target, release_stray_2xx
from rustpbx_py.call.dialog import tag_of
from rustpbx_py.call.record import CallRecord, CallRecordStore
from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule
from rustpbx_py.protocols.transports import TransportError
from rustpbx_py.registrar import make_aor
from rustpbx_py.sip.headers import HeaderError, NameAddr, URI, bare_host

#: How long after a call ended a late 2xx from its callee side is still
#: recognised (ACKed and hung up), and how many ended calls are remembered:
#: longer than a phone rings unanswered at a proxy (Timer C, 3 min, RFC 3261
#: 16.6) and then repeats its 2xx (64*T1).  A 2xx later still is ignored,
#: and the callee, without an ACK, hangs up itself (13.3.1.4).
STRAY_2XX_WINDOW = 300.0
STRAY_2XX_MAX = 50000

IN_DIALOG_METHODS = ("INVITE", "BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER", "MESSAGE", "OPTIONS", "SUBSCRIBE")
#: Methods that only make sense inside a dialog: without a To tag there is
#: no dialog they could belong to (481, RFC 3261 12.2.2, RFC 6665 4.1.3).
DIALOG_ONLY_METHODS = ("BYE", "UPDATE", "INFO", "PRACK", "NOTIFY")


def strip_tag(value: str) -> str:
    """A To value without its tag (for the B leg's To)."""
    try:
        na = NameAddr.parse(value)
    except HeaderError:
        return value
    na.params.pop("tag", None)
    return str(na)


def _uri_host(uri: str) -> Optional[str]:
    try:
        return bare_host(URI.parse(uri).host)
    except HeaderError:
        return None


def identity(value: Optional[str]) -> str:
    """C{user@host} of a From/To value, for call records."""
    if not value:
        return ""
    try:
        uri = NameAddr.parse(value).uri
    except HeaderError:
        return value
    return uri.aor() if uri is not None else ""


@implementer(IProxyModule)
class CallModule:
    """Places, relays and ends calls."""

    name = "call"
    log = Logger()

    def __init__(self, context) -> None:
        self.context = context
        self.config = context.config
        self.core = context.core
        self.clock = context.reactor
        self.timers = self.core.transactions.timer_values
        self.legs: dict = {}
        self.calls: set = set()
        self.records = CallRecordStore(context.store) if context.store is not None else None
        self.router = None
        self.trunks = None
        self._forgets: dict = {}
        self.trunk_registrar = None
        self.trunk_health = None
        self.stopping = False
        #: Live calls by the Call-ID of their B side, and until when a
        #: late 2xx of an ended one is still recognised.
        self.b_calls: dict = {}
        self.ended_b_calls: "OrderedDict[str, float]" = OrderedDict()
        #: The media engine we built from the config (see L{media_engine}).
        self._media_engine = None

    # -- IProxyModule --------------------------------------------------------

    def allow_methods(self) -> List[str]:
        return ["INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO", "MESSAGE", "NOTIFY", "REFER", "SUBSCRIBE", "OPTIONS"]

    def start(self):
        """
        Take ACKs and dialog look-ups from the core, build the routes and
        trunks, close the call records a previous run left open (reason
        bySystem), then start registering the trunks that ask for it.
        """
        from rustpbx_py.call.trunk_health import TrunkHealthChecker
        from rustpbx_py.call.trunk_registration import TrunkRegistrar

        self.stopping = False
        self.core.ack_handlers.append(self._ack_received)
        self.core.stray_handlers.append(self._stray_response)
        self.core.dialog_lookup = self.in_known_dialog
        self._build_routing()
        self.trunk_registrar = TrunkRegistrar(self.config.proxy, self.trunks, self.core, self.clock, self.dns)
        self.trunk_health = TrunkHealthChecker(self.config.proxy, self.trunks, self.core, self.clock, self.dns)

        def start_trunks() -> None:
            self.trunk_registrar.start()
            self.trunk_health.start()

        def register(result=None):
            # On the next turn: the core accepts responses once every
            # module has started.
            if not self.stopping:
                self._register_later = self.clock.callLater(0, start_trunks)
            return result

        if self.records is not None:
            return self.records.close_orphans(self.clock.seconds()).addCallback(register)
        register()
        return None

    def _build_routing(self) -> None:
        """Routes and trunks from the config (RustPBX's routing)."""
        from rustpbx_py.call.routing import Router
        from rustpbx_py.call.trunks import TrunkSet

        self.trunks = getattr(self.context, "trunks", None) or TrunkSet(self.config.proxy.trunks, self.clock)
        self.router = Router(self.config.proxy.routes, self.trunks, self.clock)

    def stop(self):
        """
        Refuse new calls, hang up every call (reason bySystem), un-REGISTER
        the trunks, and fire once every call record is written.
        """
        self.stopping = True
        later = getattr(self, "_register_later", None)
        if later is not None and later.active():
            later.cancel()
        for call in list(self.calls):
            try:
                call.hangup(R.BY_SYSTEM)
            except Exception:
                self.log.failure("hanging up call {id} failed", id=call.tx.request.call_id)
                call.end(R.BY_SYSTEM)
        for delayed in self._forgets.values():
            if delayed.active():
                delayed.cancel()
        self._forgets.clear()
        waits = [self.records.drained()] if self.records is not None else []
        if self.trunk_health is not None:
            self.trunk_health.stop()
        if self.trunk_registrar is not None:
            waits.append(self.trunk_registrar.stop())
        if self._media_engine is not None:
            engine, self._media_engine = self._media_engine, None
            waits.append(defer.maybeDeferred(engine.stop))
        if waits:
            return defer.DeferredList(waits, consumeErrors=True)
        return None

    def on_transaction_begin(self, tx):
        request = tx.request
        to_tag = tag_of(request.get("to"))
        if to_tag:
            entry = self.legs.get((request.call_id, to_tag))
            if entry is not None:
                call, leg = entry
                call.in_dialog(tx, leg)
                return ABORT
            if request.method in IN_DIALOG_METHODS and request.method not in ("OPTIONS", "SUBSCRIBE"):
                tx.reply(481, "Call/Transaction Does Not Exist")
                return ABORT
            return CONTINUE
        if request.method != "INVITE":
            return self._outside_dialog(tx)
        self._new_call(tx)
        return ABORT

    def on_transaction_end(self, tx) -> None:
        pass

    def _outside_dialog(self, tx):
        """
        A request other than INVITE outside any dialog: MESSAGE, and OPTIONS
        to a user, go to the user's contacts (L{rustpbx_py.call.outside});
        dialog-only methods get 481; the rest is left to other modules.
        """
        from rustpbx_py.call.outside import RELAYED_METHODS, route_outside

        method = tx.request.method
        if method in DIALOG_ONLY_METHODS:
            tx.reply(481, "Call/Transaction Does Not Exist")
            return ABORT
        if method not in RELAYED_METHODS or (method == "OPTIONS" and self.core.addressed_to_self(tx.request)):
            return CONTINUE
        if self.stopping:
            tx.reply(503, "Service Unavailable", [("Retry-After", "5")])
            return ABORT
        d = route_outside(self, tx)
        d.addErrback(self._outside_failed, tx)
        return ABORT

    def _outside_failed(self, failure, tx) -> None:
        self.log.failure("relaying {method} {id} failed", failure, method=tx.request.method, id=tx.request.call_id)
        if not tx.completed:
            tx.reply(500, "Server Internal Error")

    # -- dialogs -------------------------------------------------------------

    def in_known_dialog(self, request) -> bool:
        """Whether a request belongs to one of our calls' dialogs."""
        to_tag = tag_of(request.get("to"))
        return bool(to_tag) and (request.call_id, to_tag) in self.legs

    def index_leg(self, call: Call, leg) -> None:
        self.legs[leg.key] = (call, leg)

    def trust_callee(self, leg) -> None:
        """
        Let the callee's in-dialog requests (its BYE) through auth: it never
        authenticated this dialog, we opened it.
        """
        remote_tag = tag_of(leg.remote)
        if not remote_tag:
            return
        for module in self.context.modules:
            trust = getattr(module, "trust_dialog", None)
            if trust is not None:
                trust(leg.call_id, remote_tag, leg.flow)

    def _ack_received(self, ack, flow) -> bool:
        entry = self.legs.get((ack.call_id, tag_of(ack.get("to")) or ""))
        if entry is None:
            return False
        call, leg = entry
        call.trace(leg.name, "in", flow.remote, ack)
        call.acked(leg, ack)
        return True

    def _stray_response(self, response, flow) -> bool:
        """
        A response no transaction expects: a 2xx to an INVITE of one of our
        calls is an answer all the same (RFC 3261 13.2.2.4): the call takes
        it, or it is ACKed and hung up.
        """
        if response.cseq[1] != "INVITE" or not 200 <= response.status < 300:
            return False
        call_id = response.call_id
        call = self.b_calls.get(call_id)
        if call is not None and call.stray_2xx(response):
            return True
        self._prune_ended()
        if call is None and call_id not in self.ended_b_calls:
            return False
        self.log.info("call {id}: late 2xx from {peer}, hanging it up", id=call_id, peer=flow.remote)
        release_stray_2xx(self.core, response, flow)
        return True

    def prune(self) -> None:
        """Ended calls whose late-2xx window closed go (the server's
        housekeeping calls this every minute; new calls do it too)."""
        self._prune_ended()

    def _prune_ended(self) -> None:
        ended = self.ended_b_calls
        now = self.clock.seconds()
        while ended:
            call_id, until = next(iter(ended.items()))
            if until > now and len(ended) <= STRAY_2XX_MAX:
                break
            del ended[call_id]

    # -- new calls -----------------------------------------------------------

    def _new_call(self, tx) -> None:
        request = tx.request
        proxy = self.config.proxy
        record = CallRecord(
            request.call_id,
            identity(request.get("from")),
            identity(request.get("to")),
            self.clock.seconds(),
            proxy.sip_flow_max_items,
        )
        call = Call(self, tx, record)
        call.trace("a", "in", tx.flow.remote, request)
        if self.stopping:
            call.fail(503, "Service Unavailable", R.BY_SYSTEM, [("Retry-After", "5")])
            return
        self.calls.add(call)
        self.b_calls[call.b_call_id] = call
        self.event("created", call)
        if getattr(tx, "last", None) is None:
            # (The core said it already when a module was slow.)
            trying = tx.reply(100, "Trying")
            call.trace("a", "out", tx.reply_flow.remote, tx.sent or trying)
        if self.records is not None:
            self.records.opened(record)
        refused = call.negotiate_a_timer()
        if refused is not None:
            status, value = refused
            if status == 422:
                call.fail(422, "Session Interval Too Small", R.REJECTED, [("Min-SE", value)])
            else:
                call.fail(status, value, R.REJECTED)
            return
        d = defer.maybeDeferred(self._route, call)
        d.addErrback(self._route_failed, call)

    def _route_failed(self, failure, call: Call) -> None:
        self.log.failure("routing call {id} failed", failure, id=call.tx.request.call_id)
        if call.state != "ended":
            call.fail(500, "Server Internal Error")

    def realm_for(self, host: str) -> str:
        """The realm a host belongs to: itself if listed, else the first realm, else the host."""
        realms = [r.lower() for r in self.config.proxy.realms]
        host = host.lower()
        if host in realms:
            return host
        return realms[0] if realms else host

    def is_local_host(self, host: str) -> bool:
        """Whether a Request-URI host is one of ours (any host when realms is empty)."""
        realms = self.config.proxy.realms
        if not realms:
            return True
        host = host.lower()
        return host in (r.lower() for r in realms) or host in self.core.local_hosts

    @defer.inlineCallbacks
    def _route(self, call: Call):
        """
        Where a new call goes, in RustPBX's order: a registered local user
        first, then the routes (trunks, reject, busy), then an answer that
        says why nobody can take it.
        """
        from rustpbx_py.call.classify import EXTERNAL, classify

        tx = call.tx
        request = tx.request
        try:
            uri = URI.parse(request.uri)
        except HeaderError:
            call.fail(400, "Bad Request-URI", R.FAILED)
            return
        user = uri.user
        host = bare_host(uri.host)
        source_trunk = tx.context.trunk
        if source_trunk is not None:
            refused = self.trunks.admit(source_trunk)
            if refused is not None:
                call.fail(refused[0], refused[1], R.REJECTED)
                return
            call.record.trunk = source_trunk
            self.trunks.call_started(source_trunk)
            call.on_end.append(lambda c: self.trunks.call_ended(source_trunk))
        if request.has("replaces"):
            self._route_replaces(call)
            return
        local = self.is_local_host(host)
        bindings = []
        if local and user:
            locator = self.context.locator
            if locator is not None:
                bindings = locator.lookup(make_aor(user, self.realm_for(host)))
        callee_known = bool(bindings)
        if local and user and not callee_known and self.context.users is not None:
            found = yield defer.maybeDeferred(self.context.users.get_user, user, self.realm_for(host))
            callee_known = found is not None
        direction = classify(
            request,
            self.config.proxy.realms,
            source_trunk,
            self.core.local_hosts,
            tx.context.realm,
            callee_known,
        )
        call.record.direction = direction
        if bindings:
            targets = yield self._binding_targets(bindings, request)
            if targets:
                call.start(targets)
                return
        auth_user = getattr(tx.context.user, "username", None)
        decision = self.router.route(request, source_trunk, direction, auth_user) if self.router else None
        if decision is not None:
            yield self._apply_decision(call, decision)
            return
        if direction == EXTERNAL:
            call.fail(403, "Forbidden", R.REJECTED)
            return
        if callee_known:
            call.fail(480, "Temporarily Unavailable", R.NO_ANSWER)
            return
        call.fail(404, "Not Found", R.REJECTED)

    def _route_replaces(self, call: Call) -> None:
        """
        An INVITE with Replaces (attended transfer, RFC 3891) naming one
        leg of a call of ours: the new call goes to the peer of that call's
        other leg, over its dialog's flow, with a Replaces naming the dialog
        that peer has with us; 481 when no answered call matches.
        """
        from rustpbx_py.call.transfer import find_replaced, replaces_header

        entry = find_replaced(self.legs, call.tx.request.get("replaces"))
        if entry is not None:
            old_call, leg = entry
            other = old_call.other(leg)
            if other is not None and old_call.state == "answered":
                call.record.direction = old_call.record.direction
                target = Target(other.target, other.flow, strip_tag(other.remote), tuple(other.routes), label="replaces",
                                headers=(("Replaces", replaces_header(other)),))
                call.start([target])
                return
        call.fail(481, "Call/Transaction Does Not Exist", R.FAILED)

    @defer.inlineCallbacks
    def _binding_targets(self, bindings, request):
        """One fork target per registered contact, over the binding's own flow."""
        targets = []
        to = strip_tag(request.get("to") or "")
        for b in bindings:
            flow = b.live_flow(self.core.transports)
            if flow is None:
                transport, host, port = b.destination
                try:
                    flow = yield self.core.resolve(transport, host, port)
                except TransportError as e:
                    self.log.info("cannot reach {contact}: {error}", contact=b.contact, error=e)
                    continue
            target = Target(b.contact, flow, to, tuple(b.path), label=b.aor)
            target.nat = bool(getattr(b, "nat", False))
            target.webrtc = bool(getattr(b, "webrtc", False))
            targets.append(target)
        return targets

    @defer.inlineCallbacks
    def _apply_decision(self, call: Call, decision):
        """Carry out what the routes decided (see L{rustpbx_py.call.routing})."""
        if call.state != "routing":
            return  # cancelled while we looked things up
        call.record.route = decision.route
        call.route_config = decision.config
        action = decision.action
        if action == "reject":
            call.fail(decision.code or 403, decision.reason or "Forbidden", R.REJECTED, decision.headers or ())
            return
        if action == "busy":
            call.fail(486, "Busy Here", R.REJECTED)
            return
        if action != "forward":
            # Queues and applications (IVR, voicemail) need the media layer.
            self.log.warn("route {route}: action {action} is not implemented", route=decision.route, action=action)
            call.fail(501, "Not Implemented", R.FAILED)
            return
        caller = decision.caller or call.record.caller
        self.router.call_started(decision.route, caller)
        call.on_end.append(lambda c: self.router.call_ended(decision.route, caller))
        if not decision.trunks:
            # Forward to the (rewritten) Request-URI itself; a remote host
            # gives one group per RFC 3263 target, tried in turn.
            groups = yield self._uri_groups(decision.request)
            if not groups:
                call.fail(480, "Temporarily Unavailable", R.FAILED)
                return
            call.start(groups[0], groups[1:], ring_time=self.ring_time_for(groups[0], decision.config))
            return
        groups, refusal = yield self._trunk_groups(
            self.addon_route_order(call, list(decision.trunks)),
            decision.request,
            caller,
            decision.callee or call.record.callee,
            call.tx.context.trunk,
        )
        if call.state != "routing":
            return
        if not groups:
            status, reason = refusal or (503, "Service Unavailable")
            call.fail(status, reason, R.FAILED)
            return
        first = groups[0][0].label
        call.record.trunk = first
        self.trunks.call_started(first)
        call.on_end.append(lambda c: self.trunks.call_ended(first))
        call.start(groups[0], groups[1:], ring_time=self.ring_time_for(groups[0], decision.config))

    @defer.inlineCallbacks
    def _trunk_groups(self, names, request, caller: str, callee: str, source_trunk):
        """
        The targets of C{request} routed to the trunks C{names}, in order:
        (groups, refusal), one group per DNS target of each trunk's dest
        then backup_dest, and the first refusal (status, reason) of a trunk
        left out by its limits or the route's trunk policy.  Calls and
        out-of-dialog requests (MESSAGE, OPTIONS to users) share it.
        """
        groups: List[List[Target]] = []
        refusal = None
        for name in names:
            refused = self.trunks.admit(name) or self.router.check_trunk_policy(name, caller, callee, source_trunk)
            if refused is not None:
                refusal = refusal or refused
                continue
            outbound = self.trunks.outbound_request(name, request)
            trunk = self.trunks.get(name)
            for where in self.trunks.locations(name):
                # dest then backup_dest, each through DNS (RFC 3263): one
                # group per target, the next tried when one fails.
                flows = yield self._located_flows(where.host, where.port, where.transport, where.secure, f"trunk {name}")
                for flow in flows:
                    groups.append([Target(outbound.uri, flow, strip_tag(outbound.get("to") or ""), trunk=trunk, label=name, template=outbound)])
        return groups, refusal

    @defer.inlineCallbacks
    def _uri_groups(self, request):
        """
        Where a call to the Request-URI goes, as groups tried in turn: a
        local user's contacts (one group, forked), or each RFC 3263 target
        of a remote host (one group each).
        """
        try:
            uri = URI.parse(request.uri)
        except HeaderError:
            return []
        if self.is_local_host(bare_host(uri.host)) and uri.user and self.context.locator is not None:
            bindings = self.context.locator.lookup(make_aor(uri.user, self.realm_for(bare_host(uri.host))))
            targets = yield self._binding_targets(bindings, request)
            return [targets] if targets else []
        transport = uri.params.get("transport") or None
        flows = yield self._located_flows(bare_host(uri.host), uri.port, transport, uri.scheme == "sips", uri.host)
        to = strip_tag(request.get("to") or "")
        return [[Target(request.uri, flow, to, template=request)] for flow in flows]

    @property
    def dns(self):
        """The service's RFC 3263 resolver (L{rustpbx_py.protocols.resolve.SipResolver})."""
        resolver = getattr(self.context, "dns", None)
        if resolver is None:
            from rustpbx_py.protocols.resolve import SipResolver

            resolver = self.context.dns = SipResolver(servers=getattr(self.config.proxy, "dns_servers", None), reactor=self.clock)
        return resolver

    @defer.inlineCallbacks
    def _located_flows(self, host: str, port, transport, secure: bool, what: str):
        """
        Flows to every target DNS gives for a host (RFC 3263), in the order
        to try them; targets that cannot be reached now (a refused TCP
        connection) are left out, so the next one is tried.
        """
        targets = yield self.dns.locate(host, port, transport, secure)
        if not targets:
            self.log.info("{what}: {host} does not resolve", what=what, host=host)
        flows = []
        for target in targets:
            # TLS connects by name: the certificate is checked against the
            # name (RFC 5922), not against the address.
            host = target.name if target.transport in ("tls", "wss") else target.host
            try:
                flow = yield self.core.resolve(target.transport, host, target.port)
            except TransportError as e:
                self.log.info("{what}: {error}", what=what, error=e)
                continue
            flows.append(flow)
        return flows

    def addon_route_order(self, call: Call, trunks: List[str]) -> List[str]:
        """
        Let addons reorder or filter the trunks a route chose (the
        C{route_hook} of L{rustpbx_py.interfaces.IAddon}), in config order;
        an addon that fails is logged and skipped.
        """
        for addon in self.context.addons:
            hook = getattr(addon, "route_hook", None)
            if hook is None:
                continue
            try:
                trunks = [t for t in hook(call, list(trunks)) if t in self.trunks.names()]
            except Exception:
                self.log.failure("addon {id} failed in route_hook", id=addon.id)
        return trunks

    def ring_time_for(self, targets: List[Target], route=None) -> int:
        """
        How long a call may ring, seconds (0 = no limit): the route's
        max_ring_time, else the first trunk's, else proxy.max_ring_time.
        """
        value = getattr(route, "max_ring_time", None)
        if value is None:
            for target in targets:
                value = getattr(target.trunk, "max_ring_time", None)
                if value is not None:
                    break
        if value is None:
            value = self.config.proxy.max_ring_time
        return value

    def call_duration_for(self, target: Target) -> int:
        """
        How long an answered call may last, seconds (0 = no limit): the
        answering trunk's max_call_duration, else proxy.max_call_duration.
        """
        value = getattr(target.trunk, "max_call_duration", None)
        if value is None:
            value = self.config.proxy.max_call_duration
        return value

    def trunk_failed(self, trunk) -> None:
        """A trunk answered 5xx or timed out; the call fails over (see Call)."""
        if trunk is None:
            return
        self.log.info("trunk {trunk} failed a call", trunk=getattr(trunk, "name", trunk))

    # -- media ---------------------------------------------------------------

    @property
    def media_engine(self):
        """
        The L{rustpbx_py.interfaces.IMediaEngine} anchored calls use: the
        service's (C{context.media_engine}) if it has one, else one built
        from the config on first use (C{media_engine}: the built-in relay
        or rtpengine), stopped with this module.
        """
        engine = getattr(self.context, "media_engine", None)
        if engine is not None:
            return engine
        if self._media_engine is None:
            from rustpbx_py.media import engine_from_config

            try:
                self._media_engine = engine_from_config(self.clock, self.config)
            except ImportError as e:
                # A build without the relay (or its dependencies): calls
                # are not anchored, and their SIP flow says why.
                if not getattr(self, "_engine_missing_logged", False):
                    self._engine_missing_logged = True
                    self.log.warn("no media engine ({error}): calls are not anchored", error=e)
                return None
        return self._media_engine

    def call_media(self, call: Call, groups):
        """
        The media side of C{call} about to fork to C{groups} (lists of
        targets): the policy of its route and trunk, the anchoring
        decision, and a session of the engine when anchored.
        """
        from rustpbx_py.call.media import CallMedia, is_sdp
        from rustpbx_py.media.policy import Party, decide, is_webrtc, policy_for
        from rustpbx_py.sip.sdp import SdpError, SessionDescription

        targets = [t for group in groups for t in group]
        trunk = next((t.trunk for t in targets if t.trunk is not None), None)
        tx = call.tx
        policy = policy_for(self.config, call.route_config, trunk, self._local_ip(tx.flow))
        request = tx.request
        offer = None
        if policy.mode != "none" and is_sdp(request.get("content-type"), request.body):
            try:
                offer = SessionDescription.parse(request.body)
            except SdpError:
                offer = None
        caller = Party(offer, tx.flow.remote, None, False, tx.flow.transport)
        callees = [Party(None, t.flow.remote, _uri_host(t.uri), t.nat, t.flow.transport, t.webrtc)
                   for t in targets]
        policy.webrtc_b = bool(callees) and all(is_webrtc(p) for p in callees)
        if policy.srtp_b is None and callees and not any(p.transport.upper() in ("TLS", "WSS") for p in callees):
            # SDES keys never cross plain signalling (RFC 4568 section
            # 8.3): a callee reached without TLS gets RTP, whatever the
            # caller offered (an SRTP caller is then anchored under auto).
            policy.srtp_b = False
        engine = self.media_engine if policy.mode not in ("none", "bypass") else None
        decision = decide(policy, caller, callees, webrtc=bool(getattr(engine, "supports_webrtc", False)))
        session = None
        if decision.anchor:
            if engine is None:
                decision.anchor = False
                decision.reason += "; no media engine in this build, not anchored"
            else:
                session = engine.session(request.call_id, policy)
                session.on_timeout = call.media_timeout
        flow, clock = call.record.sip_flow, self.clock

        def note(text: str) -> None:
            # (Holds the flow, not the call: no cycle through call.media.)
            flow.add(clock.seconds(), "media", "note", None, text.encode("utf-8"))

        return CallMedia(request.call_id, decision, policy, session, note)

    def _local_ip(self, flow) -> str:
        """The address our signalling uses on C{flow} (never 0.0.0.0)."""
        local = getattr(flow, "local", None)
        host = local[0] if local else "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = self.core.transports._route_to(flow.remote[0], v6=(host == "::"))
        return host

    # -- ending --------------------------------------------------------------

    def event(self, name: str, call: Call) -> None:
        for addon in self.context.addons:
            observer = getattr(addon, "on_call_event", None)
            if observer is not None:
                try:
                    observer(name, call)
                except Exception:
                    self.log.failure("addon {id} failed on {event}", id=addon.id, event=name)

    def call_ended(self, call: Call) -> None:
        self.calls.discard(call)
        if self.b_calls.pop(call.b_call_id, None) is not None:
            self.ended_b_calls[call.b_call_id] = self.clock.seconds() + STRAY_2XX_WINDOW
            self._prune_ended()
        self._log_call(call.record)
        for hook in call.on_end:
            try:
                hook(call)
            except Exception:
                self.log.failure("call end hook failed")
        for leg in (call.a, call.b):
            if leg is not None and self.legs.get(leg.key, (None,))[0] is call:
                # Keep answering retransmitted BYEs for a moment (481 otherwise).
                self._forgets[leg.key] = self.clock.callLater(self.timers.t1x64, self._forget, leg.key, call, leg)
        if call.a is None:
            # No dialog with the caller: nothing can cross its end.
            self._untrust(call.tx.request.call_id, tag_of(call.tx.request.get("from")))
        self.event("hangup", call)
        media = call.media
        if media is not None and media.closed is not None and not media.closed.called:
            # The engine's figures go into the record: wait for them.
            media.closed.addBoth(lambda _: self._record_call(call))
            return
        self._record_call(call)

    def flow_grew(self, call: Call) -> None:
        """
        A message of an ended call came after its record was written (the
        answer to our BYE): write the record again (the save replaces the
        row) so its SIP flow ends with it.  Not while stopping: the store
        closes once the records written so far are committed.
        """
        if self.records is not None and call.recorded and not self.stopping:
            self.records.save(call.record)

    def _record_call(self, call: Call) -> None:
        call.recorded = True
        for addon in self.context.addons:
            hook = getattr(addon, "on_call_record", None)
            if hook is not None:
                try:
                    hook(call.record)
                except Exception:
                    self.log.failure("addon {id} failed on a call record", id=addon.id)
        if self.records is not None:
            self.records.save(call.record)

    def _log_call(self, record) -> None:
        """One info line per call, for the admin: who called whom, how it
        ended, and how long it lasted (talk time when answered)."""
        end = record.end_time if record.end_time is not None else self.clock.seconds()
        talked = end - record.answer_time if record.answer_time is not None else 0.0
        self.log.info(
            "call {call_id}: {caller} -> {callee} ({direction}{trunk}) {status} {reason}, "
            "talked {duration:.1f} s, {total:.1f} s in all",
            call_id=record.call_id,
            caller=record.caller or "?",
            callee=record.callee or "?",
            direction=record.direction,
            trunk=f" via trunk {record.trunk}" if record.trunk else "",
            status=record.status_code if record.status_code is not None else "-",
            reason=record.hangup_reason or "",
            duration=max(talked, 0.0),
            total=max(end - record.start_time, 0.0),
        )

    def _forget(self, key, call, leg=None) -> None:
        self._forgets.pop(key, None)
        if self.legs.get(key, (None,))[0] is call:
            del self.legs[key]
        if leg is not None:
            self._untrust(leg.call_id, tag_of(leg.remote))

    def _untrust(self, call_id: str, remote_tag: Optional[str]) -> None:
        """The dialog is over: modules that trusted it (auth's dialog
        cache) forget it now instead of after their TTL."""
        if not remote_tag:
            return
        for module in self.context.modules:
            forget = getattr(module, "forget_dialog", None)
            if forget is not None:
                forget(call_id, remote_tag)

