# -*- test-case-name: rustpbx_py.test.test_codecs -*-
"""
The audio codecs the PBX knows, and the two decisions the engines make
with them on every anchored call: what to offer the other leg
(L{plan_offer}) and, once it answered, which codec each leg uses
(L{choose_answer}).  Pure functions on L{rustpbx_py.sip.sdp} objects; the
engines apply the result with L{set_codecs}.

The rules (the seed's "Media & Codecs", RustPBX's defaults):

  - C{codecs} (proxy, trunk or route) is both the preference order and the
    allow-list of what the other leg is offered; the offering leg keeps to
    it too, except in "quality" when it shares no codec with it (then,
    as RustPBX falls back, it keeps what it offered and the engine
    transcodes).  C{telephone-event} is always kept (RFC 4733 digits must survive
    whatever the list says).  An empty list means RustPBX's default RTP set
    (Opus, G.729, G.722, PCMU, PCMA).
  - C{"performance"} (the default): the other leg is offered only what the
    caller offered and the list allows, reordered by the list, with the
    caller's payload types; the caller is answered with the codec the other
    leg picked, so nothing is transcoded.  Nothing left: 488.
  - C{"quality"}: on each leg the best codec by Opus > G.729 > G.722 >
    G.711 (PCMU/PCMA in the list's order) that the leg can use; the legs may
    end up different, then the engine transcodes.  G.729 is pass-through
    only: there is no open transcoder here, so it is offered to the other
    leg only when the caller offered it, and chosen on a leg only when the
    other leg uses it too.  Codecs the engine cannot transcode (the
    C{transcodable} argument) are treated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from rustpbx_py.media import MediaError
from rustpbx_py.sip.sdp import MediaDescription

__all__ = [
    "Codec",
    "CodecEntry",
    "OfferPlan",
    "AnswerPlan",
    "CODECS",
    "PCMU",
    "PCMA",
    "G722",
    "G729",
    "OPUS",
    "TELEPHONE_EVENT",
    "STRATEGIES",
    "DEFAULT_PREFERENCES",
    "QUALITY_ORDER",
    "codec_by_name",
    "codec_of",
    "offered",
    "entries",
    "plan_offer",
    "choose_answer",
    "set_codecs",
]


@dataclass(frozen=True)
class Codec:
    """
    One codec as SDP names it.  C{clock_rate} is the RTP clock of the
    rtpmap (8000 for G.722 although it samples at 16 kHz, RFC 3551);
    L{sample_rate} is the audio rate.  Telephone-event exists at each audio
    clock (8000 beside G.711, 48000 beside Opus): those are different
    C{Codec}s with the same C{name}.
    """

    name: str
    encoding: str
    clock_rate: int
    channels: int
    static_pt: Optional[int]

    @property
    def sample_rate(self) -> int:
        """The PCM rate the codec carries (G.722: 16000)."""
        return 16000 if self.name == "g722" else self.clock_rate

    @property
    def is_dtmf(self) -> bool:
        return self.name == "telephone-event"

    def rtpmap(self) -> str:
        """The rtpmap value after the payload type: C{opus/48000/2}."""
        if self.channels > 1:
            return f"{self.encoding}/{self.clock_rate}/{self.channels}"
        return f"{self.encoding}/{self.clock_rate}"

    def at_clock(self, clock_rate: int) -> "Codec":
        """This codec at another RTP clock (telephone-event beside Opus)."""
        return Codec(self.name, self.encoding, clock_rate, self.channels, self.static_pt if clock_rate == self.clock_rate else None)


PCMU = Codec("pcmu", "PCMU", 8000, 1, 0)
PCMA = Codec("pcma", "PCMA", 8000, 1, 8)
G722 = Codec("g722", "G722", 8000, 1, 9)
G729 = Codec("g729", "G729", 8000, 1, 18)
OPUS = Codec("opus", "opus", 48000, 2, None)
TELEPHONE_EVENT = Codec("telephone-event", "telephone-event", 8000, 1, None)

#: The codec table by canonical name.
CODECS: Dict[str, Codec] = {c.name: c for c in (OPUS, G729, G722, PCMU, PCMA, TELEPHONE_EVENT)}

#: Names the configuration accepts (as config.KNOWN_CODECS) -> canonical.
_ALIASES = {"ulaw": "pcmu", "g711u": "pcmu", "alaw": "pcma", "g711a": "pcma"}

#: Payload types RustPBX gives the dynamic codecs it adds to an offer; a
#: taken one falls back to the lowest free number from 96.
_DEFAULT_DYNAMIC_PT = {"opus": 111, "telephone-event": 101}

#: fmtp written for a codec the PBX adds to an offer.
_DEFAULT_FMTP = {"opus": "useinbandfec=1", "telephone-event": "0-16"}

#: The codec choice strategies (proxy.codec_strategy).
STRATEGIES = ("performance", "quality")

#: What an empty C{codecs} list means (RustPBX's default RTP codec set).
DEFAULT_PREFERENCES = ("opus", "g729", "g722", "pcmu", "pcma")

#: "quality": Opus > G.729 > G.722 > G.711; PCMU and PCMA share a rank.
QUALITY_ORDER = {"opus": 0, "g729": 1, "g722": 2, "pcmu": 3, "pcma": 3}

#: Codecs never transcoded (no open G.729 implementation here).
PASS_THROUGH_ONLY = frozenset({"g729"})


def codec_by_name(name: str) -> Codec:
    """The codec a configuration name means (case-insensitive; ulaw/alaw
    and g711u/g711a are accepted like RustPBX); ValueError otherwise."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return CODECS[key]
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(CODECS)})") from None


def _match(encoding: str, clock: int, channels: int) -> Optional[Codec]:
    enc = encoding.lower()
    if enc == "telephone-event":
        return TELEPHONE_EVENT if clock == 8000 else TELEPHONE_EVENT.at_clock(clock)
    for codec in CODECS.values():
        if codec.encoding.lower() != enc:
            continue
        if codec.name == "opus":
            # RFC 7587 says opus/48000/2; some stacks leave out the /2.
            return codec if clock == 48000 else None
        if codec.name == "g722" and clock == 16000:
            # Leniency: a few devices write G722/16000 (the sampling rate).
            return codec
        if clock == codec.clock_rate and channels == 1:
            return codec
    return None


def codec_of(m: MediaDescription, pt: int) -> Optional[Codec]:
    """The known codec payload type C{pt} means on C{m} (its rtpmap, else
    the static table), None for anything else (speex, CN, red, video...)."""
    mapping = m.rtpmap().get(pt)
    if mapping is None:
        return None
    return _match(*mapping)


def offered(m: MediaDescription) -> List[Tuple[int, Codec]]:
    """The known codecs of an m-line in its order, telephone-event included."""
    maps = m.rtpmap()
    out = []
    for pt in m.payload_types():
        mapping = maps.get(pt)
        codec = _match(*mapping) if mapping is not None else None
        if codec is not None:
            out.append((pt, codec))
    return out


@dataclass(frozen=True)
class CodecEntry:
    """A codec at a payload type on one leg, with its fmtp."""

    pt: int
    codec: Codec
    fmtp: Optional[str] = None


def entries(m: MediaDescription) -> List[CodecEntry]:
    """L{offered} with each payload type's fmtp."""
    fmtps: Dict[int, str] = {}
    for value in m.attributes("fmtp"):
        head, _, params = value.partition(" ")
        if head.isdigit():
            fmtps.setdefault(int(head), params.strip())
    return [CodecEntry(pt, codec, fmtps.get(pt)) for pt, codec in offered(m)]


def _preferences(preferences: Iterable[str]) -> List[str]:
    """Canonical audio codec names in order, duplicates and
    telephone-event dropped; empty -> RustPBX's default set."""
    names: List[str] = []
    for name in preferences:
        codec = codec_by_name(name)
        if not codec.is_dtmf and codec.name not in names:
            names.append(codec.name)
    return names or list(DEFAULT_PREFERENCES)


def _free_pt(used: set, preferred: Optional[int]) -> int:
    if preferred is not None and preferred not in used:
        return preferred
    for pt in range(96, 128):
        if pt not in used:
            return pt
    raise MediaError(488, "no free dynamic RTP payload type for the offer")


@dataclass
class OfferPlan:
    """
    What L{plan_offer} decided for one offer.

    @ivar offer: the codecs to offer the other leg, audio then
        telephone-event, with their payload types (the caller's for codecs it
        offered, free dynamic ones from 96 for codecs the PBX adds).
    @ivar caller: the offering leg's audio codecs its answer may use, in its
        own order: those the list allows; in "quality", when it shares none
        with the list, all it offered (RustPBX's fallback), the engine
        bridging them to what the other leg uses.
    @ivar caller_dtmf: the offering leg's telephone-event entries.
    """

    strategy: str
    preferences: List[str]
    transcodable: FrozenSet[str]
    offer: List[CodecEntry]
    caller: List[CodecEntry]
    caller_dtmf: List[CodecEntry] = field(default_factory=list)

    @property
    def offer_audio(self) -> List[CodecEntry]:
        return [e for e in self.offer if not e.codec.is_dtmf]


class AnswerPlan(NamedTuple):
    """
    What L{choose_answer} decided: the codec each leg uses and each leg's
    telephone-event payload type (None: that leg has no RFC 4733).  The
    engine transcodes when C{a.codec != b.codec} and translates DTMF when
    the payload types or clocks differ.
    """

    a: CodecEntry
    b: CodecEntry
    a_dtmf: Optional[CodecEntry]
    b_dtmf: Optional[CodecEntry]

    @property
    def transcoding(self) -> bool:
        return self.a.codec.name != self.b.codec.name

    @property
    def a_entries(self) -> List[CodecEntry]:
        """What the answer to leg a lists (for L{set_codecs})."""
        return [self.a] + ([self.a_dtmf] if self.a_dtmf is not None else [])

    @property
    def b_entries(self) -> List[CodecEntry]:
        """What leg b's answer settled on."""
        return [self.b] + ([self.b_dtmf] if self.b_dtmf is not None else [])


def _rank(name: str, prefs: List[str]) -> Tuple[int, int]:
    """Quality rank, then the configured order (PCMU vs PCMA)."""
    return (QUALITY_ORDER.get(name, 9), prefs.index(name) if name in prefs else 99)


def _bridgeable(x: str, y: str, transcodable: FrozenSet[str]) -> bool:
    """Whether leg codecs x and y can be joined: equal, or both transcodable."""
    return x == y or (x in transcodable and y in transcodable and x not in PASS_THROUGH_ONLY and y not in PASS_THROUGH_ONLY)


def plan_offer(
    offer_media: MediaDescription,
    preferences: Sequence[str],
    strategy: str = "performance",
    transcodable: Iterable[str] = (),
) -> OfferPlan:
    """
    Decide the codecs to offer the other leg for the audio m-line
    C{offer_media} of an offer (see the module docstring for the rules).

    @param preferences: the effective C{codecs} list (route > trunk > proxy).
    @param transcodable: codec names the engine can transcode between
        (e.g. those L{rustpbx_py.media.transcode.can_transcode} accepts);
        empty when it cannot transcode at all, then "quality" only reorders.
    @raise MediaError: 488 when nothing is left to offer ("performance": the
        caller offered nothing the list allows; "quality": nor anything the
        engine can transcode to an allowed codec); the B2BUA answers the
        offer with it.
    @raise ValueError: an unknown strategy or codec name (config validates).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"codec strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    prefs = _preferences(preferences)
    can = frozenset(codec_by_name(n).name for n in transcodable) - PASS_THROUGH_ONLY
    mine = entries(offer_media)
    dtmf = [e for e in mine if e.codec.is_dtmf]
    known: List[CodecEntry] = []
    for e in mine:
        if not e.codec.is_dtmf and all(k.codec.name != e.codec.name for k in known):
            known.append(e)
    audio = [e for e in known if e.codec.name in prefs]

    def refuse() -> MediaError:
        names = ", ".join(e.codec.name for e in known) or "no known codec"
        return MediaError(488, f"the offer has {names}; the codec list allows {', '.join(prefs)}")

    if strategy == "performance":
        if not audio:
            raise refuse()
        offer = sorted(audio, key=lambda e: prefs.index(e.codec.name))
        caller = audio
    else:
        # Leg a keeps to the list when it shares a codec with it, else
        # (RustPBX's fallback) any codec it offered that can be bridged:
        # an Opus-only phone may call a trunk whose list is PCMA alone.
        caller = audio or known
        offer = list(audio)
        if any(e.codec.name in can for e in caller):
            # Added codecs avoid every payload type of the caller's m-line
            # (also unknown ones, whose rtcp-fb lines must not attach to them).
            used = set(offer_media.payload_types())
            for name in prefs:
                if name in can and all(e.codec.name != name for e in offer):
                    codec = CODECS[name]
                    pt = _free_pt(used, codec.static_pt if codec.static_pt is not None else _DEFAULT_DYNAMIC_PT.get(name))
                    used.add(pt)
                    offer.append(CodecEntry(pt, codec, _DEFAULT_FMTP.get(name)))
        if not offer:
            raise refuse()
        offer.sort(key=lambda e: _rank(e.codec.name, prefs))
    plan_dtmf = list(dtmf)
    if strategy == "quality" and dtmf:
        # Digits must be translatable: one telephone-event per audio clock
        # of the offer (RFC 4733 events use the audio's clock).
        used = set(offer_media.payload_types()) | {e.pt for e in offer}
        for clock in dict.fromkeys(e.codec.clock_rate for e in offer):
            if all(d.codec.clock_rate != clock for d in plan_dtmf):
                pt = _free_pt(used, _DEFAULT_DYNAMIC_PT["telephone-event"])
                used.add(pt)
                plan_dtmf.append(CodecEntry(pt, TELEPHONE_EVENT.at_clock(clock), _DEFAULT_FMTP["telephone-event"]))
    return OfferPlan(strategy, prefs, can, offer + plan_dtmf, caller, dtmf)


def _dtmf_for(codec: Codec, dtmf: Sequence[CodecEntry]) -> Optional[CodecEntry]:
    """The telephone-event entry to use beside C{codec}: same clock, else the first."""
    for d in dtmf:
        if d.codec.clock_rate == codec.clock_rate:
            return d
    return dtmf[0] if dtmf else None


def choose_answer(plan: OfferPlan, answer_media: MediaDescription) -> AnswerPlan:
    """
    The codecs of both legs once the other leg answered C{plan.offer}
    with C{answer_media}: leg b uses the first answered codec it was offered
    (what it will send, RFC 3264 section 6.1); leg a uses the same codec
    ("performance", or whenever it is the caller's best bridgeable one) or
    its best codec by the quality order that can be bridged to b's.

    @raise MediaError: 488 when the answer names no offered codec, or
        (misbehaving answerer) nothing the caller can be bridged to.
    """
    answered = entries(answer_media)
    offered_names = {e.codec.name for e in plan.offer_audio}
    b = next((e for e in answered if not e.codec.is_dtmf and e.codec.name in offered_names), None)
    if b is None:
        raise MediaError(488, "the answer has no codec that was offered")
    b_dtmf = _dtmf_for(b.codec, [e for e in answered if e.codec.is_dtmf])
    same = next((e for e in plan.caller if e.codec.name == b.codec.name), None)
    if plan.strategy == "performance":
        a = same
    else:
        candidates = [e for e in plan.caller if _bridgeable(e.codec.name, b.codec.name, plan.transcodable)]
        # Best by quality; on equal rank the pass-through one (no transcoding).
        candidates.sort(key=lambda e: (QUALITY_ORDER.get(e.codec.name, 9), e.codec.name != b.codec.name, _rank(e.codec.name, plan.preferences)))
        a = candidates[0] if candidates else None
    if a is None:
        raise MediaError(488, f"the answer chose {b.codec.name}, which the caller cannot be bridged to")
    return AnswerPlan(a, b, _dtmf_for(a.codec, plan.caller_dtmf), b_dtmf)


def set_codecs(m: MediaDescription, codecs: Sequence[CodecEntry]) -> None:
    """
    Rewrite the m-line C{m} to offer exactly C{codecs} in that order: its
    formats, and its rtpmap and fmtp lines (written where the first old one
    stood).  C{a=rtcp-fb:<pt>} lines of dropped payload types go too;
    every other line (ptime, ssrc, crypto, ICE, unknown ones) is kept.  An
    rtpmap the m-line already had for a kept payload type is kept as it was
    written; a static payload type that had none gets none.
    """
    old_rtpmap: Dict[int, str] = {}
    for value in m.attributes("rtpmap"):
        head = value.strip().partition(" ")[0]
        if head.isdigit():
            old_rtpmap.setdefault(int(head), value)
    old_formats = set(m.payload_types())
    keep = {e.pt for e in codecs}
    new_lines: List[Tuple[str, str]] = []
    for e in codecs:
        original = old_rtpmap.get(e.pt)
        if original is not None and codec_of(m, e.pt) == e.codec:
            new_lines.append(("a", "rtpmap:" + original))
        elif not (e.codec.static_pt == e.pt and e.pt in old_formats and original is None):
            new_lines.append(("a", f"rtpmap:{e.pt} {e.codec.rtpmap()}"))
        if e.fmtp:
            new_lines.append(("a", f"fmtp:{e.pt} {e.fmtp}"))
    out: List[Tuple[str, str]] = []
    inserted = False
    for kind, value in m.lines:
        if kind == "a":
            name, _, rest = value.partition(":")
            if name in ("rtpmap", "fmtp"):
                if not inserted:
                    out.extend(new_lines)
                    inserted = True
                continue
            if name == "rtcp-fb":
                head = rest.partition(" ")[0]
                if head.isdigit() and int(head) not in keep:
                    continue
        out.append((kind, value))
    if not inserted:
        # No rtpmap/fmtp before: after the i/c/b/k lines, before the first a=.
        pos = next((i for i, (kind, _) in enumerate(out) if kind == "a"), len(out))
        out[pos:pos] = new_lines
    m.lines[:] = out
    m.formats = [str(e.pt) for e in codecs]
