# -*- test-case-name: rustpbx_py.test.test_plugins -*-
"""
Every contract between rustpbx_py's layers and its plugins.

Built-in modules and addons implement these exactly as third-party ones do:
a plugin module under C{rustpbx_py/plugins/} provides an
L{IProxyModuleFactory} or L{IAddonFactory}, and the service finds it with
L{twisted.plugin.getPlugins}.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

# What a module's transaction hook answers (RustPBX's ProxyAction).
CONTINUE = "continue"
ABORT = "abort"


class IFlow(Interface):
    """
    A path to one peer over one transport: a UDP socket and address, or one
    TCP, TLS or WebSocket connection.  Responses and in-dialog requests to a
    peer that reached us over a connection go back over that connection.
    """

    id = Attribute("A text key for the flow table, stable while the flow lives.")
    transport = Attribute('"UDP", "TCP", "TLS", "WS" or "WSS".')
    reliable = Attribute("True for stream transports (no retransmissions needed).")
    remote = Attribute("(host, port) of the peer.")
    local = Attribute("(host, port) we received on.")
    connected = Attribute("False once a connection-oriented flow has closed.")

    def send(data: bytes) -> None:
        """Write one serialised SIP message to the peer."""


class IServerTransaction(Interface):
    """A request received, as the module pipeline sees it (RFC 3261 17.2)."""

    request = Attribute("The L{rustpbx_py.sip.message.Request}.")
    flow = Attribute("The L{IFlow} the request arrived on.")
    context = Attribute(
        "A L{rustpbx_py.pipeline.TransactionContext}: what earlier modules "
        "learnt (authenticated user, trunk, spam flag)."
    )
    completed = Attribute("True once a final response was sent.")
    sent = Attribute(
        "The bytes of the response the last reply()/respond() sent, None when "
        "nothing was sent (what a call trace records)."
    )

    def reply(status: int, reason: str = "", headers=(), body: bytes = b"") -> None:
        """Answer the request with a response built from it (RFC 3261 8.2.6)."""

    def respond(response) -> None:
        """Send a response the caller built (for relaying a callee's answer)."""


class IProxyModule(Interface):
    """
    One stage of the request pipeline (RustPBX's ProxyModule, pjsip's
    module chain): modules see each new server transaction in configured
    order until one answers L{ABORT}.
    """

    name = Attribute("The name used in the C{modules} list of the config.")

    def allow_methods() -> list:
        """
        The SIP methods this module takes part in, e.g. C{["REGISTER"]};
        C{["*"]} for every method.  Used for the C{Allow} header and to skip
        the module for other methods.
        """

    def start():
        """Start timers, open stores; may return a Deferred."""

    def stop():
        """Stop timers, flush state; may return a Deferred."""

    def on_transaction_begin(tx: IServerTransaction):
        """
        See a new request.  Return L{CONTINUE} to let the next module see it
        or L{ABORT} when this module answered it (or dropped it), possibly
        through a Deferred.  Raising, or a failed Deferred, answers 500.
        """

    def on_transaction_end(tx: IServerTransaction) -> None:
        """The transaction is over (answered or abandoned): release state."""


class IServerContext(Interface):
    """What the service gives a module or addon factory to build with."""

    config = Attribute("The validated L{rustpbx_py.config.Config}.")
    reactor = Attribute("The reactor (a L{twisted.internet.task.Clock} in tests).")
    store = Attribute("The L{rustpbx_py.store.db.Database}, or None.")
    core = Attribute("The L{rustpbx_py.proxy.SipCore}: transactions and transports.")
    users = Attribute("The L{IUserBackend} chain built from C{user_backends}.")
    locator = Attribute("The L{ILocator} of registered contacts (after the registrar starts).")
    dns = Attribute("The RFC 3263 resolver, L{rustpbx_py.protocols.resolve.SipResolver} (trunk and proxy host names).")
    addons = Attribute("The started L{IAddon}s, in config order.")


class IProxyModuleFactory(Interface):
    """A plugin that makes one kind of L{IProxyModule}."""

    name = Attribute("The module name, as written in C{proxy.modules}.")

    def build(context: IServerContext) -> IProxyModule:
        """Make the module for this service."""


class IAddon(Interface):
    """
    An optional feature named in C{proxy.addons} (RustPBX's addons:
    wholesale, monitor, ...).  Hooks an addon does not need may be absent:
    the service checks with C{getattr}.
    """

    id = Attribute("The name used in the C{addons} list of the config.")

    def start():
        """Start the addon; may return a Deferred."""

    def stop():
        """Stop the addon; may return a Deferred."""

    def web_resources() -> dict:
        """Path -> L{twisted.web.resource.IResource} to serve on the PBX's web
        site (L{rustpbx_py.web.site.WebSite.add_public}: at C{/PATH}, nested
        paths allowed, no authorisation of the site's: the resource does its
        own).  An addon that serves them on its own listener sets C{port}."""

    def on_call_record(record) -> None:
        """A call ended; C{record} is its L{rustpbx_py.call.record.CallRecord}."""

    def route_hook(call, candidates: list) -> list:
        """Reorder or filter the routing candidates for a new call."""

    def on_call_event(event: str, call) -> None:
        """Observe call events: "created" (an INVITE became a call),
        "ringing", "answered", "hangup"."""


class IAddonFactory(Interface):
    """A plugin that makes one L{IAddon}."""

    name = Attribute("The addon id, as written in C{proxy.addons}.")

    config_tables = Attribute(
        "Optional: top-level TOML table name -> dataclass declared with "
        "rustpbx_py.config._key fields.  The loader validates each table like "
        "every other key and puts the typed value in "
        "config.addon_tables[name] (defaults when the file has no such table).")

    def build(context: IServerContext) -> IAddon:
        """Make the addon for this service."""


class IUserBackend(Interface):
    """
    Where SIP users and their credentials come from (RustPBX's
    C{[[proxy.user_backends]]}: memory, plain, database, http).
    """

    def get_user(username: str, realm: str):
        """
        Fire with a L{rustpbx_py.users.SipUser} or None when the user is
        unknown here.  May return the value directly or a Deferred.
        """


class ILocator(Interface):
    """Where a registered address-of-record can be reached."""

    def lookup(aor: str) -> list:
        """
        The live L{rustpbx_py.registrar.Binding}s of C{aor} (C{user@realm}),
        most recent first; an empty list when nobody is registered.
        """


class IRegistry(ILocator):
    """The registrar's store of bindings (RFC 3261 section 10)."""

    def bindings(aor: str) -> list:
        """Every live binding of C{aor}."""

    def update(aor: str, changes: list):
        """Apply a REGISTER's binding changes; may return a Deferred."""


class ICallRecordSink(Interface):
    """Somewhere finished calls are written."""

    def save(record):
        """Persist one call record; returns a Deferred."""

    def drained():
        """A Deferred that fires once every record given so far is written
        (the call module waits for it when the service stops)."""


class IMediaEngine(Interface):
    """
    What anchors a call's media on the PBX: the built-in relay
    (L{rustpbx_py.media.session}) or rtpengine daemons driven over their ng
    protocol (L{rustpbx_py.media.rtpengine}).  The B2BUA talks to either
    through this contract alone, the way Kamailio's rtpengine module talks
    to rtpengine: offer, answer, delete.
    """

    def session(call_id: str, policy):
        """
        A new L{IMediaSession} for one call, with the call's
        L{rustpbx_py.media.policy.MediaPolicy} (codecs, strategy, addresses,
        latching, timeouts).  Nothing is allocated until the first offer.
        """

    def stop():
        """Release every session and socket (service shutdown); may return
        a Deferred."""


class IMediaSession(Interface):
    """
    One anchored call: two legs, C{"a"} (the caller's side) and C{"b"} (the
    callee's side).  Every SDP body that crosses the B2BUA in either
    direction goes through L{offer} or L{answer}, which returns the SDP to
    send to the other leg (RFC 3264 offer/answer, re-offers included).
    """

    on_timeout = Attribute(
        "None, or a callable (no arguments) the session calls once when no "
        "RTP has flowed either way for the policy's rtp_timeout.")

    def offer(leg: str, sdp, source):
        """
        C{sdp} (a L{rustpbx_py.sip.sdp.SessionDescription}) is an offer from
        C{leg}, whose signalling came from C{source} (host, port).  Fires
        with the offer to send to the other leg; fails with
        L{rustpbx_py.media.MediaError} (the B2BUA answers 488, or 503 when
        the port range is full).
        """

    def answer(leg: str, sdp, source):
        """C{sdp} is C{leg}'s answer to the last offer: fires with the
        answer to send to the other leg (same failures as L{offer})."""

    def stats() -> dict:
        """
        Figures for the call record and the monitor: per leg, the codec,
        local and remote (latched) addresses, and per direction (C{"in"},
        C{"out"}) packets, bytes, lost and jitter (ms).
        """

    def close():
        """Free the ports (or delete the rtpengine call); fires with the
        final L{stats}.  Idempotent."""
