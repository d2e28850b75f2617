# -*- test-case-name: rustpbx_py.test.test_rtpengine -*-
"""
rtpengine (Sipwise's media proxy) as the media engine, driven over its ng
control protocol the way Kamailio's rtpengine module drives it.

The ng protocol is one UDP datagram per request, C{COOKIE SPACE BENCODED
DICT}, answered by a datagram carrying the same cookie.  rtpengine caches
its answer per cookie, so a retransmitted request gets the same answer and
is never executed twice; cookies therefore carry a random per-process
prefix (a restarted PBX must not collide with the cache).

Daemons: C{rtpengine_servers} lists one or more; a call's first offer goes
to a daemon chosen by hashing the Call-ID (so restarts spread calls the
same way), daemons that timed out are skipped for C{DISABLE_TIME} seconds
(Kamailio's C{rtpengine_disable_tout}), and every later command of the call
goes to the daemon that took its offer (the call's state lives there).  A
re-offer whose daemon stopped answering is sent to the next daemon: the
offer carries the whole SDP, so the call is anchored afresh there.

Legs: rtpengine names a call's two sides by SIP tags.  The B2BUA has two
dialogs with tags of their own, so each session uses two synthetic,
stable tags, C{"<call-id>-a"} and C{"<call-id>-b"}: an offer from leg X is
C{from-tag = tag(X)}, the answer from leg Y is C{from-tag = tag(X),
to-tag = tag(Y)} (re-offers from the callee simply swap them, as a
re-INVITE's From/To do in Kamailio).

Addresses: the SDP rtpengine writes names rtpengine's own interface
(C{--interface=IP} or C{NAME/IP!ADVERTISED-IP} behind NAT), because RTP
goes to rtpengine, not to the PBX: the policy's C{external_ip} /
C{local_ip} are the PBX's addresses and are not sent.

rtp_timeout (RustPBX's per-leg meaning): the session polls C{query} every
C{poll_interval(rtp_timeout)} seconds from the first answer on, and calls
C{on_timeout} once when the RTP packet counter of either leg (what
rtpengine received from it) has not moved for C{rtp_timeout} seconds while
the call is not on hold, or when the daemon no longer knows the call (its
own C{--timeout} deleted it).  The same polls keep L{RtpengineSession.stats}
fresh.
"""

import ipaddress
import os
import re
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.interfaces import IMediaEngine, IMediaSession
from rustpbx_py.media import MediaError
from rustpbx_py.media import bencode

log = Logger()

#: Seconds a daemon that did not answer is skipped for new calls.
DISABLE_TIME = 60.0
#: Default seconds to wait for one daemon's answer (retransmissions included).
DEFAULT_TIMEOUT = 1.0
#: Times a request is sent in all within the timeout (first send + retransmissions).
SENDS = 4

_SERVER = re.compile(r"^udp6?:(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$")

#: rtpengine's encoding names for the codec names of the configuration.
ENCODINGS = {"pcmu": "PCMU", "pcma": "PCMA", "g722": "G722", "g729": "G729",
             "opus": "opus", "telephone-event": "telephone-event"}
_STATIC = {0: "pcmu", 8: "pcma", 9: "g722", 18: "g729"}
#: codec_strategy = "quality": Opus > G.729 > G.722 > G.711 on each leg.
_QUALITY = ("opus", "g729", "g722", "pcmu", "pcma")


class NgError(Exception):
    """rtpengine answered C{result=error} (or another non-ok result)."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(f"{result}: {reason}")
        self.result = result
        self.reason = reason


class NgTimeout(Exception):
    """A daemon did not answer within the timeout."""


def parse_server(text: str) -> tuple[str, int]:
    """
    C{"udp:IP:PORT"} or C{"udp:[IPv6]:PORT"} (Kamailio's
    C{rtpengine_sock} syntax, C{udp6:} accepted) to C{(ip, port)}; raises
    C{ValueError} with what was expected.
    """
    m = _SERVER.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError('expected "udp:IP:PORT" or "udp:[IPv6]:PORT", e.g. "udp:127.0.0.1:2223"')
    host = m.group(1) or m.group(2)
    port = int(m.group(3))
    try:
        host = str(ipaddress.ip_address(host))  # canonical: answers are matched on it
    except ValueError:
        raise ValueError(f"expected an IP address, found {host!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port 1-65535, found {port}")
    return host, port


@dataclass
class Daemon:
    """One rtpengine daemon and whether it is answering."""

    host: str
    port: int
    down_until: float = 0.0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp:{host}:{self.port}"

    def up(self, now: float) -> bool:
        return now >= self.down_until


class _Pending:
    """A request waiting for its answer."""

    __slots__ = ("daemon", "datagram", "deferred", "timer", "sends")

    def __init__(self, daemon: Daemon, datagram: bytes) -> None:
        self.daemon = daemon
        self.datagram = datagram
        self.deferred: defer.Deferred = defer.Deferred()
        self.timer: Any = None
        self.sends = 0


class NgProtocol(DatagramProtocol):
    """The control socket: frames datagrams, hands them to the client."""

    noisy = False

    def __init__(self, client: "NgClient") -> None:
        self.client = client

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.client.datagram_received(datagram, addr)


class NgClient:
    """
    ng requests to a set of daemons: retransmission, timeouts, marking
    daemons down, failover for new calls.

    @param listen: C{listen(protocol, interface)} opens the control socket
        (default C{reactor.listenUDP(0, protocol, interface)}); tests pass a
        memory transport.
    """

    def __init__(self, reactor: Any, servers: list, timeout: float = DEFAULT_TIMEOUT,
                 disable_time: float = DISABLE_TIME,
                 listen: Optional[Callable[[DatagramProtocol, str], Any]] = None) -> None:
        if not servers:
            raise ValueError("rtpengine: no daemon configured")
        self.reactor = reactor
        self.daemons = [Daemon(*parse_server(s)) if isinstance(s, str) else s for s in servers]
        self.timeout = timeout
        self.disable_time = disable_time
        self._listen = listen or (lambda proto, iface: reactor.listenUDP(0, proto, interface=iface))
        self._protocols: dict[int, NgProtocol] = {}
        self._ports: list = []
        self._pending: dict[bytes, _Pending] = {}
        self._prefix = os.urandom(4).hex()
        self._counter = 0

    # -- sockets -------------------------------------------------------------

    def _transport(self, daemon: Daemon) -> Any:
        family = 6 if ":" in daemon.host else 4
        proto = self._protocols.get(family)
        if proto is None:
            proto = NgProtocol(self)
            port = self._listen(proto, "::" if family == 6 else "0.0.0.0")
            self._ports.append(port)
            self._protocols[family] = proto
        return proto.transport

    # -- one daemon ------------------------------------------------------------

    def request(self, daemon: Daemon, command: dict) -> defer.Deferred:
        """
        Send C{command} to C{daemon}, retransmitting; fires with the reply
        dictionary (C{result} ok, or a warning), fails with L{NgError} for
        C{result=error}/C{load limit} or L{NgTimeout} (the daemon is then
        marked down).
        """
        self._counter += 1
        cookie = f"{self._prefix}_{self._counter}".encode("ascii")
        pending = _Pending(daemon, cookie + b" " + bencode.encode(command))
        self._pending[cookie] = pending
        self._send(cookie, pending)
        return pending.deferred

    def _send(self, cookie: bytes, pending: _Pending) -> None:
        if pending.sends >= SENDS:
            del self._pending[cookie]
            pending.daemon.down_until = self.reactor.seconds() + self.disable_time
            log.warn("rtpengine {daemon} did not answer within {timeout} s; skipped for {disable} s",
                     daemon=str(pending.daemon), timeout=self.timeout, disable=self.disable_time)
            pending.deferred.errback(NgTimeout(f"rtpengine {pending.daemon} did not answer"))
            return
        pending.sends += 1
        try:
            self._transport(pending.daemon).write(pending.datagram, (pending.daemon.host, pending.daemon.port))
        except Exception as e:  # unreachable network, EPERM...: a retransmission may succeed
            log.debug("rtpengine send to {daemon} failed: {e}", daemon=str(pending.daemon), e=e)
        pending.timer = self.reactor.callLater(self.timeout / SENDS, self._send, cookie, pending)

    def datagram_received(self, datagram: bytes, addr: Any) -> None:
        """An answer (or garbage): never raises."""
        cookie, _, body = datagram.partition(b" ")
        pending = self._pending.get(cookie)
        if pending is None:
            return  # late answer to a retransmission, or not ours
        if addr[0] != pending.daemon.host or addr[1] != pending.daemon.port:
            return
        try:
            reply = bencode.decode(body)
        except bencode.BencodeError as e:
            log.warn("rtpengine {daemon} sent a malformed answer ({e}); ignored", daemon=str(pending.daemon), e=e)
            return
        if not isinstance(reply, dict) or not isinstance(reply.get("result"), bytes):
            log.warn("rtpengine {daemon} sent an answer without a result; ignored", daemon=str(pending.daemon))
            return
        del self._pending[cookie]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.daemon.down_until = 0.0
        result = _text(reply["result"])
        if result in ("ok", "pong"):
            if "warning" in reply:
                log.info("rtpengine {daemon} warns: {w}", daemon=str(pending.daemon), w=_text(reply["warning"]))
            pending.deferred.callback(reply)
        else:
            pending.deferred.errback(NgError(result, _text(reply.get("error-reason", b"")) or result))

    # -- failover ----------------------------------------------------------------

    def candidates(self, key: str) -> list:
        """Daemons to try for a new call, in order: those answering first,
        starting at the Call-ID's hash; daemons marked down last."""
        n = len(self.daemons)
        start = zlib.crc32(key.encode("utf-8", "surrogateescape")) % n
        ordered = self.daemons[start:] + self.daemons[:start]
        now = self.reactor.seconds()
        return [d for d in ordered if d.up(now)] + [d for d in ordered if not d.up(now)]

    @defer.inlineCallbacks
    def request_any(self, key: str, command: dict, first: Optional[Daemon] = None):
        """C{command} to C{first} (if given and up) then the next
        candidates while daemons time out; fires with C{(daemon, reply)}."""
        order = self.candidates(key)
        if first is not None and first.up(self.reactor.seconds()):
            order.remove(first)
            order.insert(0, first)
        error: Exception = NgTimeout("no rtpengine daemon")
        for daemon in order:
            try:
                reply = yield self.request(daemon, command)
            except NgTimeout as e:
                error = e
                continue
            return daemon, reply
        raise error

    def ping(self, daemon: Daemon) -> defer.Deferred:
        return self.request(daemon, {"command": "ping"})

    def stop(self) -> defer.Deferred:
        for cookie, pending in list(self._pending.items()):
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
            del self._pending[cookie]
            pending.deferred.errback(NgTimeout("rtpengine client stopped"))
        ds = []
        for port in self._ports:
            stop = getattr(port, "stopListening", None)
            if stop is not None:
                ds.append(defer.maybeDeferred(stop))
        self._ports = []
        self._protocols = {}
        return defer.DeferredList(ds)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _str(value: Any) -> Optional[str]:
    """A bencoded string (bytes) or str as str; anything else None."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def media_error(error: Exception) -> MediaError:
    """The SIP answer for an ng failure: 503 when no daemon answers or one
    is out of ports/capacity, 488 when it refused the SDP."""
    if isinstance(error, NgTimeout):
        return MediaError(503, "media engine (rtpengine) unreachable")
    if isinstance(error, NgError):
        reason = error.reason.lower()
        if error.result == "load limit" or any(w in reason for w in ("port", "load", "limit", "capacity", "session")):
            return MediaError(503, f"rtpengine: {error.reason}")
        return MediaError(488, f"rtpengine: {error.reason}")
    return MediaError(503, f"rtpengine: {error}")


# ---------------------------------------------------------------------------
# SDP helpers (only what the flags need; rtpengine rewrites the SDP itself)
# ---------------------------------------------------------------------------


def offered_codecs(sdp: bytes) -> list[str]:
    """Codec names (config spelling) of the first audio m-line, in order;
    unknown encodings are left out."""
    formats: list[int] = []
    names: dict[int, str] = {}
    in_audio = False
    seen_audio = False
    for line in sdp.splitlines():
        if line.startswith(b"m="):
            if seen_audio:
                break
            parts = line[2:].split()
            in_audio = bool(parts) and parts[0] == b"audio"
            if in_audio:
                seen_audio = True
                formats = [int(f) for f in parts[3:] if f.isdigit()]
        elif in_audio and line.startswith(b"a=rtpmap:"):
            pt, _, enc = line[9:].partition(b" ")
            if pt.isdigit():
                names[int(pt)] = enc.split(b"/")[0].decode("ascii", "replace").lower()
    out = []
    for pt in formats:
        name = names.get(pt) or _STATIC.get(pt)
        if name in ENCODINGS and name not in out:
            out.append(name)
    return out


def audio_proto(sdp: bytes) -> Optional[str]:
    for line in sdp.splitlines():
        if line.startswith(b"m=audio "):
            parts = line.split()
            return parts[2].decode("ascii", "replace") if len(parts) > 2 else None
    return None


def connection_address(sdp: bytes) -> Optional[str]:
    """The first audio stream's address (media c= else session c=)."""
    session = None
    media = None
    in_audio = False
    for line in sdp.splitlines():
        if line.startswith(b"m="):
            if media is not None:
                break
            in_audio = line.startswith(b"m=audio")
        elif line.startswith(b"c="):
            parts = line[2:].split()
            addr = parts[2].decode("ascii", "replace").split("/")[0] if len(parts) > 2 else None
            if in_audio:
                media = addr
            elif session is None:
                session = addr
    return media or session


def on_hold(sdp: bytes) -> bool:
    """Whether an SDP holds the call: its first audio stream (or the
    session) sendonly, recvonly or inactive (RFC 3264), or the RFC 2543
    c=0.0.0.0."""
    if connection_address(sdp) == "0.0.0.0":
        return True
    session_dir = None
    in_audio = seen_audio = False
    for line in sdp.splitlines():
        if line.startswith(b"m="):
            if seen_audio:
                break
            in_audio = seen_audio = line.startswith(b"m=audio")
        elif line in (b"a=sendonly", b"a=recvonly", b"a=inactive"):
            if in_audio:
                return True
            if not seen_audio:
                session_dir = line
        elif line == b"a=sendrecv" and in_audio:
            return False
    return session_dir is not None


#: SDES suites rtpengine must never offer: NULL encryption (a peer picking it
#: would get authenticated but unencrypted media where SRTP was asked for)
#: and F8, which few phones implement.
SDES_REFUSED = ("no-NULL_HMAC_SHA1_80", "no-NULL_HMAC_SHA1_32",
                "no-F8_128_HMAC_SHA1_80", "no-F8_128_HMAC_SHA1_32")


#: The transport of WebRTC media (RFC 8827): DTLS-SRTP with ICE, RTCP feedback.
WEBRTC_PROTO = "UDP/TLS/RTP/SAVPF"


def is_webrtc(sdp: bytes) -> bool:
    """Whether the first audio stream is WebRTC's (DTLS-SRTP over ICE)."""
    proto = audio_proto(sdp) or ""
    return "TLS" in proto or ("SAVPF" in proto and b"a=fingerprint:" in sdp)


def _private(address: Optional[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return True  # a host name or garbage is no address to send RTP to
    return ip.is_private or ip.is_unspecified or ip.is_link_local


def codec_flags(policy: Any, offered: list[str]) -> dict:
    """
    rtpengine's C{codec} dictionary for an offer towards leg b, from the
    policy's allow-list (C{codecs}, in preference order) and strategy.

      - C{performance}: only what the caller offered, allowed, in the
        preference order: C{strip=all, offer=[...]} (rtpengine keeps the
        listed codecs in that order).  Nothing left → MediaError(488).
      - C{quality}: Opus > G.729 > G.722 > G.711 among the allowed codecs,
        transcoding what the caller did not offer:
        C{strip=all, transcode=[...]}; G.729 only when the caller offered it
        (pass-through, never transcoded).

    C{telephone-event} is always kept (rtpengine adds one per clock rate).
    """
    allowed = [c for c in (getattr(policy, "codecs", None) or []) if c in ENCODINGS and c != "telephone-event"]
    if not allowed:
        return {}
    strategy = getattr(policy, "strategy", "performance")
    if strategy == "quality":
        chosen = [c for c in _QUALITY if c in allowed and (c != "g729" or c in offered)]
        if not chosen:
            raise MediaError(488, "no allowed codec can be offered")
        return {"strip": ["all"], "transcode": [ENCODINGS[c] for c in chosen] + ["telephone-event"]}
    chosen = [c for c in allowed if c in offered]
    if not chosen:
        raise MediaError(488, "no codec in common with the allowed codecs (" + ", ".join(allowed) + ")")
    return {"strip": ["all"], "offer": [ENCODINGS[c] for c in chosen] + ["telephone-event"]}


# ---------------------------------------------------------------------------
# Engine and sessions
# ---------------------------------------------------------------------------


def poll_interval(rtp_timeout: float) -> float:
    """How often a session queries its daemon: a third of rtp_timeout,
    between 1 and 10 seconds (so a timeout is seen within a third late)."""
    return max(1.0, min(10.0, rtp_timeout / 3.0))


@implementer(IMediaEngine)
class RtpengineEngine:
    """
    Calls anchored on rtpengine daemons (see the module docstring).

    @param servers: C{["udp:127.0.0.1:2223", ...]} (or L{Daemon}s).
    @param timeout: seconds to wait for one daemon (retransmissions inside).
    """

    #: rtpengine terminates ICE and DTLS-SRTP itself, so the call side may
    #: anchor WebRTC legs on this engine (the built-in relay cannot yet).
    supports_webrtc = True

    def __init__(self, reactor: Any, servers: list, timeout: float = DEFAULT_TIMEOUT,
                 disable_time: float = DISABLE_TIME, listen: Any = None) -> None:
        self.reactor = reactor
        self.client = NgClient(reactor, servers, timeout=timeout, disable_time=disable_time, listen=listen)
        self.sessions: dict[str, "RtpengineSession"] = {}

    def session(self, call_id: str, policy: Any) -> "RtpengineSession":
        s = RtpengineSession(self, call_id, policy)
        self.sessions[call_id] = s
        return s

    @defer.inlineCallbacks
    def stop(self):
        """Delete every call still anchored, then close the control socket."""
        sessions = list(self.sessions.values())
        yield defer.DeferredList([s.close() for s in sessions], consumeErrors=True)
        yield self.client.stop()


@implementer(IMediaSession)
class RtpengineSession:
    """One call on one rtpengine daemon (pinned by its first offer)."""

    def __init__(self, engine: RtpengineEngine, call_id: str, policy: Any) -> None:
        self.engine = engine
        self.call_id = call_id
        self.policy = policy
        self.on_timeout: Optional[Callable[[], None]] = None
        self.daemon: Optional[Daemon] = None
        self.tags = {"a": f"{call_id}-a", "b": f"{call_id}-b"}
        self.offerer: Optional[str] = None   # leg whose offer awaits an answer
        self.answered = False               # an answer went through: the dialog has both tags
        self._answerer: Optional[str] = None  # leg of the last answer (a repeated answer is allowed)
        self.closed = False
        self._a_proto: Optional[str] = None  # transport leg a offered, restored on offers towards a
        self._webrtc = {"a": False, "b": False}  # whether each leg's last SDP was WebRTC's
        self._stats = _empty_stats()
        self._poll: Any = None
        self._last_packets = {"a": 0, "b": 0}  # packets from each leg at the last poll
        self._quiet_since = {"a": 0.0, "b": 0.0}  # when each leg last sent (or the answer)
        self._held = {"a": False, "b": False}  # whether each leg's last SDP put the call on hold
        self._timed_out = False
        self._closing: Optional[defer.Deferred] = None

    # -- offer / answer ------------------------------------------------------------

    def _flags(self, leg: str, body: bytes, source: Any) -> dict:
        """
        The ng keys shared by offer and answer for an SDP from C{leg}.  ICE
        and DTLS follow the leg that receives the SDP: towards a WebRTC leg
        (one whose SDP was UDP/TLS/RTP/SAVPF, or C{policy.webrtc_b} for a
        callee known to be a browser) rtpengine runs ICE-lite and DTLS-SRTP
        (C{ICE=force}); towards any other leg both are removed, and
        rtcp-mux is split when the sender muxes.
        """
        other = "b" if leg == "a" else "a"
        self._webrtc[leg] = is_webrtc(body)
        self._held[leg] = on_hold(body)
        command: dict = {"call-id": self.call_id, "replace": ["origin", "session-connection"],
                         "SDES": list(SDES_REFUSED)}
        if self._receiver_webrtc(other):
            command["ICE"] = "force"
        else:
            command["ICE"] = "remove"
            command["DTLS"] = "off"
            if self._webrtc[leg]:
                command["rtcp-mux"] = ["demux"]
        flags = []
        ip = source[0] if source else None
        if getattr(self.policy, "latching", True):
            sdp_ip = connection_address(body)
            if ip and sdp_ip != ip and _private(sdp_ip):
                # behind NAT: the SDP names an address nobody can reach; start
                # with the signalling source (rtpengine still learns the real one)
                flags.append("SIP-source-address")
                command["received-from"] = ["IP6" if ":" in ip else "IP4", ip]
            else:
                flags.append("trust-address")
        else:
            flags += ["trust-address", "asymmetric"]  # no endpoint learning
        command["flags"] = flags
        return command

    def _receiver_webrtc(self, leg: str) -> bool:
        if self._webrtc[leg]:
            return True
        # the callee before its first SDP: the call side may know it is a browser
        return leg == "b" and not self.answered and bool(getattr(self.policy, "webrtc_b", False))

    def offer(self, leg: str, sdp: Any, source: Any) -> defer.Deferred:
        return self._exchange("offer", leg, sdp, source)

    def answer(self, leg: str, sdp: Any, source: Any) -> defer.Deferred:
        return self._exchange("answer", leg, sdp, source)

    @defer.inlineCallbacks
    def _exchange(self, kind: str, leg: str, sdp: Any, source: Any):
        if leg not in self.tags:
            raise ValueError(f"leg must be 'a' or 'b', not {leg!r}")
        if self.closed:
            raise MediaError(503, "media session closed")
        other = "b" if leg == "a" else "a"
        body = bytes(sdp)
        command = self._flags(leg, body, source)
        command["command"] = kind
        command["sdp"] = body
        if kind == "offer":
            command["from-tag"] = self.tags[leg]
            if self.answered:
                command["to-tag"] = self.tags[other]
            if leg == "a":
                if self._a_proto is None:
                    self._a_proto = audio_proto(body)
                srtp_b = getattr(self.policy, "srtp_b", None)
                if self._receiver_webrtc("b"):
                    command["transport-protocol"] = WEBRTC_PROTO
                    command["rtcp-mux"] = ["offer"]
                elif srtp_b is not None:
                    command["transport-protocol"] = "RTP/SAVP" if srtp_b else "RTP/AVP"
                elif self._webrtc["a"]:
                    command["transport-protocol"] = "RTP/AVP"   # a browser calling a SIP phone
                codec = codec_flags(self.policy, offered_codecs(body))
                if codec:
                    command["codec"] = codec
            elif self._a_proto:
                command["transport-protocol"] = self._a_proto
                if self._webrtc["a"]:
                    command["rtcp-mux"] = ["offer"]
        else:
            # a second answer to the same offer (an 18x's then the 2xx's, which
            # may differ when the 18x was unreliable) updates rtpengine again
            repeat = self.offerer is None and self._answerer == leg
            if (self.offerer is None and not repeat) or self.offerer == leg:
                raise MediaError(488, f"answer from leg {leg} without an offer from leg {other}")
            command["from-tag"] = self.tags[other]
            command["to-tag"] = self.tags[leg]
        try:
            if kind == "offer":
                daemon, reply = yield self.engine.client.request_any(self.call_id, command, self.daemon)
                if self.daemon is not None and daemon is not self.daemon:
                    log.warn("rtpengine {old} stopped answering: call {cid} re-anchored on {new}",
                             old=str(self.daemon), cid=self.call_id, new=str(daemon))
                self.daemon = daemon
            elif self.daemon is None:
                raise MediaError(488, "answer before any offer")
            else:
                reply = yield self.engine.client.request(self.daemon, command)
        except MediaError:
            raise
        except (NgError, NgTimeout) as e:
            raise media_error(e) from None
        out = reply.get("sdp")
        if not isinstance(out, bytes) or not out:
            raise MediaError(503, "rtpengine answered without an SDP")
        if self.closed:
            if self._closing is not None and self._closing.called:
                # closed while the daemon was creating it: do not leak the call there
                self.engine.client.request(self.daemon, {"command": "delete", "call-id": self.call_id}).addErrback(lambda f: None)
            raise MediaError(503, "media session closed")
        if kind == "offer":
            self.offerer = leg
        else:
            self.offerer = None
            self._answerer = leg
            self.answered = True
            self._start_polling()
        if isinstance(sdp, (bytes, bytearray)):
            return out
        try:
            return type(sdp).parse(out)
        except ValueError as e:
            raise MediaError(503, f"rtpengine wrote an SDP we cannot parse: {e}") from None

    # -- stats and rtp_timeout ---------------------------------------------------------

    def stats(self) -> dict:
        return self._stats

    def _start_polling(self) -> None:
        timeout = float(getattr(self.policy, "rtp_timeout", 0) or 0)
        if self._poll is not None or timeout <= 0:
            return
        self._quiet_since = dict.fromkeys(("a", "b"), self.engine.reactor.seconds())
        self._poll = self.engine.reactor.callLater(poll_interval(timeout), self._tick)

    @defer.inlineCallbacks
    def _tick(self):
        self._poll = None
        if self.closed:
            return
        timeout = float(getattr(self.policy, "rtp_timeout", 0) or 0)
        try:
            reply = yield self.engine.client.request(self.daemon, {"command": "query", "call-id": self.call_id})
        except NgError as e:
            if "unknown call" in e.reason.lower() and not self.closed:
                log.info("rtpengine {daemon} dropped call {cid} (its own RTP timeout)",
                         daemon=str(self.daemon), cid=self.call_id)
                self._fire_timeout()
                return
            log.warn("rtpengine query for {cid} failed: {e}", cid=self.call_id, e=e)
        except NgTimeout as e:
            log.warn("rtpengine query for {cid} failed: {e}", cid=self.call_id, e=e)
        else:
            if self.closed:
                return
            self._stats = parse_stats(reply, self.tags)
            now = self.engine.reactor.seconds()
            held = self._held["a"] or self._held["b"]
            for leg in ("a", "b"):
                # per leg, as RustPBX: each leg must keep sending; on hold
                # (a held phone playing no music sends nothing) the clock pauses
                packets = self._stats[leg]["in"]["packets"]
                if packets != self._last_packets[leg] or held:
                    self._last_packets[leg] = packets
                    self._quiet_since[leg] = now
                elif now - self._quiet_since[leg] >= timeout:
                    log.info("call {cid}: no RTP from leg {leg} for {t} s (rtpengine {daemon})",
                             cid=self.call_id, leg=leg, t=timeout, daemon=str(self.daemon))
                    self._fire_timeout()
                    return
        if not self.closed:
            self._poll = self.engine.reactor.callLater(poll_interval(timeout), self._tick)

    def _fire_timeout(self) -> None:
        if self._timed_out:
            return
        self._timed_out = True
        if self.on_timeout is not None:
            self.on_timeout()

    # -- close -----------------------------------------------------------------------

    def close(self) -> defer.Deferred:
        """Final C{query} (for the figures), then C{delete}; fires with the
        final L{stats}.  Idempotent: every call gets the same result."""
        if self._closing is None:
            self.closed = True
            if self._poll is not None and self._poll.active():
                self._poll.cancel()
            self._poll = None
            self._closing = self._close()
        d: defer.Deferred = defer.Deferred()

        def done(result):
            d.callback(result)
            return result

        self._closing.addBoth(done)
        return d

    @defer.inlineCallbacks
    def _close(self):
        self.engine.sessions.pop(self.call_id, None)
        if self.daemon is None:
            return self._stats
        client = self.engine.client
        try:
            reply = yield client.request(self.daemon, {"command": "query", "call-id": self.call_id})
            self._stats = parse_stats(reply, self.tags)
        except (NgError, NgTimeout):
            pass
        try:
            yield client.request(self.daemon, {"command": "delete", "call-id": self.call_id})
        except NgError as e:
            log.debug("rtpengine delete {cid}: {e}", cid=self.call_id, e=e)
        except NgTimeout as e:
            log.warn("rtpengine delete {cid} not confirmed: {e}", cid=self.call_id, e=e)
        return self._stats


# ---------------------------------------------------------------------------
# query → the stats dictionary of IMediaSession.stats
# ---------------------------------------------------------------------------


def _empty_direction() -> dict:
    return {"packets": 0, "bytes": 0, "lost": 0, "jitter_ms": 0.0}


def _empty_stats() -> dict:
    return {leg: {"codec": None, "local": None, "remote": None, "in": _empty_direction(),
                  "out": _empty_direction()} for leg in ("a", "b")}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _address(value: Any) -> Optional[tuple]:
    d = _dict(value)
    address, port = _str(d.get("address")), d.get("port")
    if address and _int(port):
        return (address, port)
    return None


def _leg_view(tag: dict, ssrcs: dict) -> tuple:
    """(codec, local, remote, in) of one monologue (the side facing one leg)."""
    codec = None
    local = remote = None
    incoming = _empty_direction()
    for media in _list(tag.get("medias")):
        media = _dict(media)
        if _str(media.get("type")) != "audio":
            continue
        enc = _str(media.get("codec"))
        if enc:
            codec = enc.split("/")[0].lower()
        for stream in _list(media.get("streams")):
            stream = _dict(stream)
            flags = [_str(f) for f in _list(stream.get("flags"))]
            if "RTCP" in flags and "RTP" not in flags:
                continue  # the RTCP stream (an rtcp-mux stream has both flags)
            addr = _str(stream.get("local address"))
            if addr and _int(stream.get("local port")):
                local = (addr, stream["local port"])
            remote = _address(stream.get("endpoint"))
            st = _dict(stream.get("stats"))
            incoming["packets"] += _int(st.get("packets"))
            incoming["bytes"] += _int(st.get("bytes"))
            ssrc = _dict(ssrcs.get(str(_int(stream.get("SSRC"))))) if "SSRC" in stream else {}
            incoming["lost"] += _int(ssrc.get("cumulative loss"))
            jitter = _dict(ssrc.get("average MOS")).get("jitter")
            if isinstance(jitter, int):
                incoming["jitter_ms"] = float(jitter)
        break  # first audio stream
    return codec, local, remote, incoming


def parse_stats(reply: dict, tags: dict) -> dict:
    """
    The stats dictionary (MEDIA.md) from a C{query} answer: per leg the
    codec rtpengine uses on it, its local (anchored) and remote (learnt)
    addresses, C{in} = what rtpengine received from the leg, C{out} = what
    it relayed to it (the other leg's C{in}: rtpengine 10 counts ingress
    only).  Loss and jitter come from RTCP reports (C{SSRC} section) when
    the phones send them.  Anything missing or malformed reads as zero.
    """
    stats = _empty_stats()
    tag_dicts = _dict(reply.get("tags")) if isinstance(reply, dict) else {}
    ssrcs = _dict(reply.get("SSRC")) if isinstance(reply, dict) else {}
    for leg in ("a", "b"):
        tag = _dict(tag_dicts.get(tags[leg]))
        codec, local, remote, incoming = _leg_view(tag, ssrcs)
        stats[leg].update(codec=codec, local=local, remote=remote)
        stats[leg]["in"] = incoming
    stats["a"]["out"] = dict(stats["b"]["in"])
    stats["b"]["out"] = dict(stats["a"]["in"])
    return stats
