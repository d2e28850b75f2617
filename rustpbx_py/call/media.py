# -*- test-case-name: rustpbx_py.test.test_call_media -*-
"""
The media side of one call, between the B2BUA and the media engine.

Every SDP body the B2BUA relays goes through L{CallMedia.process}, which
hands it to the call's L{rustpbx_py.interfaces.IMediaSession} (an anchored
call) and calls back with the body to send on, or fails with
L{rustpbx_py.media.MediaError}.  Engines may answer later (rtpengine works
over the network), so the steps of one call run one after the other, in
the order the messages arrived: a 200 never overtakes the 183 before it.

A call that is not anchored never waits: C{none} relays every body byte
for byte, at once; C{bypass} only takes the codecs the callee side does
not allow out of the caller's offer (addresses untouched, RTP flows phone
to phone); the other modes, when L{rustpbx_py.media.policy.decide} found
no reason to anchor, relay bodies untouched too.

The SIP flow gets a note of the decision, of each leg's codec and of the
addresses media was latched to; the call record gets the session's
figures (packets, bytes, loss, jitter per leg and direction).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from rustpbx_py.config import KNOWN_CODECS
from rustpbx_py.media import MediaError
from rustpbx_py.media.policy import Decision, MediaPolicy

OFFER = "offer"
ANSWER = "answer"


def is_sdp(content_type: Optional[str], body: bytes) -> bool:
    """Whether a body is SDP (no Content-Type with a body means SDP, RFC 3261 20.15)."""
    if not body:
        return False
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() == "application/sdp"


def keep_allowed_codecs(body: bytes, allowed: List[str]) -> bytes:
    """
    C{body} (an offer) without the audio codecs C{allowed} does not name,
    telephone-event and unknown formats kept; unchanged when nothing is
    left out, when no codec would remain, or when it does not parse (the
    callee then judges it, as RustPBX's pass-through path does).
    """
    from rustpbx_py.sip.sdp import SdpError, SessionDescription

    if not allowed:
        return body
    try:
        sdp = SessionDescription.parse(body)
    except SdpError:
        return body
    changed = False
    for m in sdp.media:
        if m.media != "audio" or m.port == 0:
            continue
        rtpmap = m.rtpmap()
        drop = set()
        keep_audio = False
        for fmt in m.formats:
            if not fmt.isdigit() or int(fmt) not in rtpmap:
                continue
            name = KNOWN_CODECS.get(rtpmap[int(fmt)][0].lower())
            if name is None or name == "telephone-event":
                continue
            if name in allowed:
                keep_audio = True
            else:
                drop.add(fmt)
        if not drop or not keep_audio:
            continue
        changed = True
        m.formats = [f for f in m.formats if f not in drop]
        m.lines = [
            (kind, value)
            for kind, value in m.lines
            if not (kind == "a" and value.split(":", 1)[0] in ("rtpmap", "fmtp", "rtcp-fb") and value.split(":", 1)[-1].split(" ", 1)[0] in drop)
        ]
    return bytes(sdp) if changed else body


class CallMedia:
    """
    One call's media: the decision, the session when anchored, and the
    SDP rewriting at each offer/answer point.

    @ivar anchored: whether the call's RTP goes through the PBX.
    @ivar early: the early dialog whose SDP answered the caller's offer
        (first one wins: the caller already has our answer, and the B side
        stays on that dialog until a 2xx says otherwise).
    """

    log = Logger()

    def __init__(self, call_id: str, decision: Decision, policy: MediaPolicy, session=None, note: Optional[Callable[[str], None]] = None) -> None:
        self.call_id = call_id
        self.decision = decision
        self.policy = policy
        self.session = session
        self.anchored = session is not None
        self._note = note or (lambda text: None)
        self._tail: Optional[defer.Deferred] = None
        self.closed: Optional[defer.Deferred] = None
        self.early: Optional[Tuple[object, str]] = None
        #: (dialog key, kind, body in) -> body out, for repeated bodies.
        self._done: Dict[tuple, bytes] = {}
        #: The leg whose offer waits for an answer (PRACK, ACK bodies).
        self.pending_offer: Optional[str] = None
        self.final_stats: Optional[dict] = None
        self.note(f"media: {decision.mode}, {'anchored' if self.anchored else 'not anchored'} ({decision.reason})")

    def note(self, text: str) -> None:
        self._note(text)

    # -- offer / answer ------------------------------------------------------

    def process(
        self,
        kind: Optional[str],
        leg: str,
        body: bytes,
        source,
        proceed: Callable[[bytes], None],
        failed: Callable[[Failure], None],
        key=None,
        sdp: bool = True,
    ) -> None:
        """
        C{body} (an offer or answer from C{leg}, or C{kind=None}: pick by
        the pending offer) goes to the session; C{proceed} gets the body to
        send the other leg, C{failed} a failure (L{MediaError} or
        L{rustpbx_py.sip.sdp.SdpError}).  C{key} names a dialog whose same
        body was already processed (a repeated 18x, the 2xx after it).
        A body that is not SDP (C{sdp} false) is passed on as it is, in
        its turn.
        """
        if not self.anchored:
            if kind == OFFER and leg == "a" and self.decision.mode == "bypass" and sdp and body:
                body = keep_allowed_codecs(body, self.policy.codecs)
            proceed(body)
            return
        def step(_):
            if self.closed is not None:
                return None
            # Resolved in turn: the steps before this one set pending_offer.
            what = kind or (ANSWER if self.pending_offer not in (None, leg) else OFFER)
            if not body or not sdp:
                proceed(body)
                return None
            cached = self._done.get((key, what, body)) if key is not None else None
            if cached is not None:
                proceed(cached)
                return None
            d = self._run(what, leg, body, source)

            def done(out: bytes):
                if key is not None:
                    self._done[(key, what, body)] = out
                if self.closed is None:
                    proceed(out)

            d.addCallbacks(done, failed)
            d.addErrback(self._unexpected)
            return d

        tail = self._tail if self._tail is not None else defer.succeed(None)
        self._tail = tail.addCallback(step)
        self._tail.addErrback(self._unexpected)

    def _run(self, kind: str, leg: str, body: bytes, source) -> defer.Deferred:
        from rustpbx_py.sip.sdp import SdpError, SessionDescription

        try:
            sdp = SessionDescription.parse(body)
        except SdpError as e:
            return defer.fail(MediaError(488, f"Not Acceptable Here ({e})"))
        d = defer.maybeDeferred(getattr(self.session, kind), leg, sdp, source)

        def sent(out) -> bytes:
            self.pending_offer = leg if kind == OFFER else None
            self._note_codecs(kind, leg, sdp, out)
            return bytes(out)

        return d.addCallback(sent)

    def _note_codecs(self, kind: str, leg: str, sdp, out) -> None:
        other = "b" if leg == "a" else "a"
        self.note(f"media: {kind} from {leg}: {_codec_list(sdp)} -> to {other}: {_codec_list(out)}")

    def _unexpected(self, failure: Failure) -> None:
        self.log.failure("call {id}: media step failed", failure, id=self.call_id)

    # -- the end -------------------------------------------------------------

    def close(self) -> defer.Deferred:
        """
        Free the session (once); fires with its final figures (None when
        not anchored), after the steps already queued.
        """
        if self.closed is not None:
            return self.closed
        if self.session is None:
            self.closed = defer.succeed(None)
            return self.closed
        session = self.session
        self.closed = d = defer.maybeDeferred(session.close)
        session.on_timeout = None  # (it names the call: no cycle left)

        def closed(stats):
            self.final_stats = stats if isinstance(stats, dict) else None
            for leg, text in latched(self.final_stats).items():
                self.note(f"media: leg {leg} latched to {text}")
            return self.final_stats

        def failed(f: Failure):
            self.log.failure("call {id}: closing the media session failed", f, id=self.call_id)
            return None

        return d.addCallbacks(closed, failed)

    def summary(self) -> dict:
        """What the call record keeps about this call's media."""
        out = {"mode": self.decision.mode, "anchored": self.anchored, "reason": self.decision.reason}
        if self.final_stats:
            out["legs"] = self.final_stats
        return out


def latched(stats: Optional[dict]) -> Dict[str, str]:
    """Each leg's remote (latched) address in C{stats}, as host:port."""
    found = {}
    for leg in ("a", "b"):
        remote = (stats or {}).get(leg, {}).get("remote")
        if remote:
            found[leg] = f"{remote[0]}:{remote[1]}"
    return found


def _codec_list(sdp) -> str:
    names = []
    for m in getattr(sdp, "media", ()):
        if m.port == 0:
            names.append(f"{m.media} refused")
            continue
        codecs = [v[0] for v in m.rtpmap().values()]
        names.append(f"{m.media} {'/'.join(codecs) or '-'} at {sdp.address(m)}:{m.port}")
    return "; ".join(names) or "no media"
