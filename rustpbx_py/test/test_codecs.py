"""
Tests for L{rustpbx_py.media.codecs}: the codec table, reading codecs off
m-lines (the collected real offers included), and the decision tables of
both strategies: what the other leg is offered and which codec each leg
ends up with once it answered.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media import MediaError
from rustpbx_py.media.codecs import (
    CODECS,
    G722,
    G729,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    CodecEntry,
    choose_answer,
    codec_by_name,
    codec_of,
    entries,
    offered,
    plan_offer,
    set_codecs,
)
from rustpbx_py.sip.sdp import parse

DATA = os.path.join(os.path.dirname(__file__), "data", "sdp")

#: spec name -> rtpmap value
RTPMAP = {
    "opus": "opus/48000/2",
    "pcmu": "PCMU/8000",
    "pcma": "PCMA/8000",
    "g722": "G722/8000",
    "g729": "G729/8000",
    "te": "telephone-event/8000",
    "te48": "telephone-event/48000",
    "speex": "speex/16000",
}

ALL = ("opus", "g722", "pcmu", "pcma")  # what PyAV transcodes


def media(spec: str):
    """An audio m-line from C{"opus/96 pcmu/0 te/101"}."""
    formats, lines = [], []
    for item in spec.split():
        name, pt = item.split("/")
        formats.append(pt)
        lines.append(f"a=rtpmap:{pt} {RTPMAP[name]}\r\n")
        if name == "opus":
            lines.append(f"a=fmtp:{pt} useinbandfec=1\r\n")
    body = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP {' '.join(formats)}\r\n" + "".join(lines) + "a=ptime:20\r\n"
    )
    return parse(body.encode()).media[0]


def names(plan_entries):
    """C{[(name, pt), ...]} with telephone-event written te/te48."""
    out = []
    for e in plan_entries:
        name = e.codec.name
        if e.codec.is_dtmf:
            name = "te" if e.codec.clock_rate == 8000 else f"te{e.codec.clock_rate // 1000}"
        out.append(f"{name}/{e.pt}")
    return " ".join(out)


class TableTests(SynchronousTestCase):
    def test_table(self):
        """The six codecs with RFC 3551/7587 parameters; G.722's RTP clock
        is 8000 while it samples at 16 kHz."""
        self.assertEqual(set(CODECS), {"opus", "pcmu", "pcma", "g722", "g729", "telephone-event"})
        self.assertEqual((OPUS.encoding, OPUS.clock_rate, OPUS.channels, OPUS.static_pt), ("opus", 48000, 2, None))
        self.assertEqual((PCMU.static_pt, PCMA.static_pt, G722.static_pt, G729.static_pt), (0, 8, 9, 18))
        self.assertEqual((G722.clock_rate, G722.sample_rate), (8000, 16000))
        self.assertEqual(OPUS.rtpmap(), "opus/48000/2")
        self.assertEqual(PCMU.rtpmap(), "PCMU/8000")
        self.assertTrue(TELEPHONE_EVENT.is_dtmf)

    def test_codec_by_name(self):
        """Configuration names, case-insensitive, with RustPBX's aliases."""
        self.assertIs(codec_by_name("PCMU"), PCMU)
        self.assertIs(codec_by_name("ulaw"), PCMU)
        self.assertIs(codec_by_name("alaw"), PCMA)
        self.assertIs(codec_by_name(" Opus "), OPUS)
        self.assertIs(codec_by_name("telephone-event"), TELEPHONE_EVENT)
        self.assertRaises(ValueError, codec_by_name, "speex")

    def test_codec_of(self):
        """rtpmap (any case) or static table; unknown encodings are None;
        telephone-event keeps its clock."""
        m = media("opus/96 speex/97 te48/110 te/101")
        self.assertEqual(codec_of(m, 96), OPUS)
        self.assertIsNone(codec_of(m, 97))
        self.assertEqual(codec_of(m, 110).clock_rate, 48000)
        self.assertEqual(codec_of(m, 101), TELEPHONE_EVENT)
        self.assertIsNone(codec_of(m, 0))  # not on the m-line
        m = parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 1 RTP/AVP 0 8 9 18 3\r\na=rtpmap:9 g722/16000\r\n").media[0]
        self.assertEqual([c.name for _, c in offered(m)], ["pcmu", "pcma", "g722", "g729"])

    def test_corpus(self):
        """The codecs read off the collected real offers."""
        expected = {
            "baresip-g711.sdp": "pcmu/0 pcma/8 te/101",
            "baresip-opus-g722-g711.sdp": "opus/96 g722/9 pcmu/0 pcma/8 te/101",
            "linphone.sdp": "opus/96 pcmu/0 pcma/8 g729/18 te48/99 te16/100 te/101",
            "chromium-audio.sdp": "opus/111 g722/9 pcmu/0 pcma/8 te48/110 te/126",
            "sipp-uac.sdp": "pcmu/0",
            "firefox-audio.sdp": "opus/109 g722/9 pcmu/0 pcma/8 te/101",
            "zoiper-2.10.sdp": "te/101 pcma/8 pcmu/0",
            "yealink-t22p.sdp": "g722/9 pcmu/0 pcma/8 g729/18 te/101",
            "asterisk-freepbx-opus.sdp": "pcmu/0 pcma/8 opus/107 g722/9 te/101 te48/103",
            "carrier-broadworks-no-dtmf.sdp": "pcma/8",
            "pjsua2.sdp": "pcmu/0 pcma/8 g722/9 te16/120 te/121 te32/122",
        }
        for name, spec in expected.items():
            with open(os.path.join(DATA, name), "rb") as f:
                m = parse(f.read()).media[0]
            self.assertEqual(names(entries(m)), spec, name)


class PerformanceTests(SynchronousTestCase):
    """codec_strategy = "performance": only the caller's codecs, in the
    list's order, and both legs on the same codec."""

    OFFER_TABLE = [
        # caller offer, codecs list, offer to the other leg
        ("opus/96 pcmu/0 pcma/8 te/101", ["opus", "pcmu", "pcma", "g729"], "opus/96 pcmu/0 pcma/8 te/101"),
        ("pcma/8 pcmu/0 te/101", ["pcmu", "pcma"], "pcmu/0 pcma/8 te/101"),
        ("opus/111 g722/9 pcmu/0 pcma/8 te48/110 te/126", ["pcma", "pcmu"], "pcma/8 pcmu/0 te48/110 te/126"),
        ("g729/18 pcmu/0", ["opus", "g729", "pcmu"], "g729/18 pcmu/0"),
        ("pcmu/0 speex/97 pcma/8", ["pcma", "pcmu"], "pcma/8 pcmu/0"),
        ("pcmu/0 te/101", [], "pcmu/0 te/101"),  # empty list: RustPBX's default set
        ("pcmu/0 te/101", ["pcmu", "telephone-event"], "pcmu/0 te/101"),
    ]

    def test_offer_table(self):
        """Each row: the caller's offer, the codecs list, what the other
        leg is offered (caller PTs kept, telephone-event always kept)."""
        for caller, prefs, expected in self.OFFER_TABLE:
            plan = plan_offer(media(caller), prefs, "performance", ALL)
            self.assertEqual(names(plan.offer), expected, (caller, prefs))

    def test_nothing_left_is_488(self):
        """No codec of the offer allowed (or none known): MediaError 488,
        which the B2BUA answers the caller with."""
        for caller, prefs in [("opus/96 te/101", ["pcmu", "pcma"]), ("speex/97", ["pcmu"]), ("te/101", ["pcmu"])]:
            e = self.assertRaises(MediaError, plan_offer, media(caller), prefs, "performance", ALL)
            self.assertEqual(e.status, 488)

    ANSWER_TABLE = [
        # caller offer, codecs, callee answer, leg a, leg b
        ("opus/96 pcmu/0 te/101", ["pcmu", "opus"], "opus/96 te/101", "opus/96 te/101", "opus/96 te/101"),
        ("opus/96 pcmu/0 te/101", ["pcmu", "opus"], "pcmu/0 opus/96", "pcmu/0 te/101", "pcmu/0"),
        ("pcma/8 pcmu/0", ["pcmu", "pcma"], "pcma/8", "pcma/8", "pcma/8"),
        ("opus/111 pcmu/0 te48/110 te/126", ["opus", "pcmu"], "opus/111 te48/110", "opus/111 te48/110", "opus/111 te48/110"),
    ]

    def test_answer_table(self):
        """Leg b uses the first codec of its answer; leg a the same one
        (no transcoding), with the caller's telephone-event at that clock."""
        for caller, prefs, answer, a, b in self.ANSWER_TABLE:
            plan = plan_offer(media(caller), prefs, "performance", ALL)
            result = choose_answer(plan, media(answer))
            self.assertEqual(names(result.a_entries), a, (caller, answer))
            self.assertEqual(names(result.b_entries), b, (caller, answer))
            self.assertFalse(result.transcoding)

    def test_answer_not_offered_is_488(self):
        """An answer naming a codec that was not offered: 488."""
        plan = plan_offer(media("pcmu/0"), ["pcmu"], "performance")
        e = self.assertRaises(MediaError, choose_answer, plan, media("pcma/8"))
        self.assertEqual(e.status, 488)


class QualityTests(SynchronousTestCase):
    """codec_strategy = "quality": Opus > G.729 > G.722 > G.711 on each
    leg, transcoding between them; G.729 pass-through only."""

    OFFER_TABLE = [
        # caller offer, codecs, transcodable, offer to the other leg
        ("pcmu/0 te/101", ["opus", "pcmu", "pcma", "g729"], ALL, "opus/111 pcmu/0 pcma/8 te/101 te48/96"),
        ("opus/96 te48/101", ["pcma"], ALL, "pcma/8 te48/101 te/97"),
        ("pcma/8", ["pcmu", "pcma", "g722"], ALL, "g722/9 pcmu/0 pcma/8"),
        ("pcma/8 pcmu/0", ["pcma", "pcmu"], ALL, "pcma/8 pcmu/0"),
        # G.729 never added (no transcoder), kept when offered (pass-through)
        ("pcmu/0", ["g729", "pcmu"], ALL, "pcmu/0"),
        ("g729/18 pcmu/0", ["opus", "g729", "pcmu"], ALL, "opus/111 g729/18 pcmu/0"),
        # A caller with only G.729: nothing to transcode from, pass-through only
        ("g729/18", ["opus", "g729", "pcmu"], ALL, "g729/18"),
        # An engine that cannot transcode: quality only reorders
        ("pcmu/0 opus/96", ["pcmu", "opus", "g722"], (), "opus/96 pcmu/0"),
        # Added payload types avoid every caller PT, known or not
        ("pcmu/0 speex/111", ["opus", "pcmu"], ALL, "opus/96 pcmu/0"),
    ]

    def test_offer_table(self):
        """Each row: caller offer, codecs list, what the engine transcodes,
        what the other leg is offered."""
        for caller, prefs, can, expected in self.OFFER_TABLE:
            plan = plan_offer(media(caller), prefs, "quality", can)
            self.assertEqual(names(plan.offer), expected, (caller, prefs, can))

    ANSWER_TABLE = [
        # caller offer, codecs, callee answer, leg a, leg b
        # Opus phone calling a PCMA-only trunk: each leg its own codec
        ("opus/96 te48/101", ["opus", "pcma"], "pcma/8 te/97", "opus/96 te48/101", "pcma/8 te/97"),
        # Caller has Opus too: Opus is better on leg a, PCMU on b
        ("opus/96 pcmu/0 te/101", ["opus", "pcmu"], "pcmu/0 te/101", "opus/96 te/101", "pcmu/0 te/101"),
        # Both sides Opus: pass-through
        ("opus/96 pcmu/0", ["opus", "pcmu"], "opus/111", "opus/96", "opus/111"),
        # G.711 on both with equal rank: the pass-through one, not PCMU<->PCMA
        ("pcmu/0 pcma/8", ["pcmu", "pcma", "opus"], "pcma/8", "pcma/8", "pcma/8"),
        # G.729 answered: only pass-through to the caller's G.729
        ("g729/18 pcmu/0", ["opus", "g729", "pcmu"], "g729/18", "g729/18", "g729/18"),
        # Opus answered while the caller has G.729 and PCMU: G.729 cannot
        # be transcoded, so the caller gets PCMU
        ("g729/18 pcmu/0", ["opus", "g729", "pcmu"], "opus/111", "pcmu/0", "opus/111"),
        # G.722 added for a PCMA caller and chosen by the callee
        ("pcma/8", ["pcmu", "pcma", "g722"], "g722/9", "pcma/8", "g722/9"),
        # A trunk list sharing nothing with the caller: the caller keeps
        # its Opus (RustPBX's fallback), the trunk gets PCMA
        ("opus/96 te48/101", ["pcma"], "pcma/8 te/97", "opus/96 te48/101", "pcma/8 te/97"),
        # ... and a list sharing PCMA with the caller: no transcoding
        ("opus/96 pcma/8 te/101", ["pcma"], "pcma/8 te/101", "pcma/8 te/101", "pcma/8 te/101"),
    ]

    def test_answer_table(self):
        """Each row: caller offer, codecs, the callee's answer, what leg a
        and leg b use (with their telephone-event)."""
        for caller, prefs, answer, a, b in self.ANSWER_TABLE:
            plan = plan_offer(media(caller), prefs, "quality", ALL)
            result = choose_answer(plan, media(answer))
            self.assertEqual(names(result.a_entries), a, (caller, answer))
            self.assertEqual(names(result.b_entries), b, (caller, answer))
            self.assertEqual(result.transcoding, a.split()[0].split("/")[0] != b.split()[0].split("/")[0])

    def test_g729_never_transcoded(self):
        """G.729 given as transcodable is still pass-through only: a
        G.729-only caller whose callee answers PCMU cannot be bridged (488)."""
        plan = plan_offer(media("g729/18 te/101"), ["g729", "pcmu"], "quality", ALL + ("g729",))
        self.assertEqual(names(plan.offer), "g729/18 te/101")
        e = self.assertRaises(MediaError, choose_answer, plan, media("pcmu/0"))
        self.assertEqual(e.status, 488)

    def test_nothing_to_offer_is_488(self):
        """A caller whose codecs are neither allowed nor transcodable (G.729
        only, list without it; an unknown codec only): 488."""
        for caller, prefs in [("g729/18", ["pcma"]), ("speex/97", ["pcmu", "opus"])]:
            e = self.assertRaises(MediaError, plan_offer, media(caller), prefs, "quality", ALL)
            self.assertEqual(e.status, 488)

    def test_unknown_strategy(self):
        """A strategy other than performance/quality is a programming error
        (config.py validates codec_strategy): ValueError, not a 488."""
        self.assertRaises(ValueError, plan_offer, media("pcmu/0"), ["pcmu"], "cheap")


class SetCodecsTests(SynchronousTestCase):
    def test_rewrite_keeps_other_attributes(self):
        """set_codecs replaces formats, rtpmap and fmtp (where the first
        rtpmap was), drops rtcp-fb of removed PTs, keeps everything else
        byte for byte (Chromium's offer)."""
        with open(os.path.join(DATA, "chromium-audio.sdp"), "rb") as f:
            sdp = parse(f.read())
        m = sdp.media[0]
        before = [l for l in m.lines if not l[1].startswith(("rtpmap", "fmtp", "rtcp-fb:111"))]
        set_codecs(m, [CodecEntry(0, PCMU), CodecEntry(126, TELEPHONE_EVENT, None)])
        self.assertEqual(m.formats, ["0", "126"])
        self.assertEqual([l for l in m.lines if not l[1].startswith(("rtpmap", "fmtp"))], before)
        self.assertEqual(m.attributes("rtpmap"), ["0 PCMU/8000", "126 telephone-event/8000"])
        self.assertEqual(m.attributes("fmtp"), [])
        again = parse(bytes(sdp))
        self.assertEqual(names(entries(again.media[0])), "pcmu/0 te/126")
        self.assertEqual(again.media[0].attribute("ice-ufrag"), m.attribute("ice-ufrag"))

    def test_added_codec(self):
        """A codec the PBX adds gets an rtpmap and its fmtp; a kept static
        PT without rtpmap gets none; an original rtpmap text is kept."""
        m = parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 1 RTP/AVP 0 9\r\na=rtpmap:9 G722/16000\r\na=ptime:20\r\n").media[0]
        set_codecs(m, [CodecEntry(111, OPUS, "useinbandfec=1"), CodecEntry(9, G722), CodecEntry(0, PCMU)])
        self.assertEqual(m.formats, ["111", "9", "0"])
        self.assertEqual(
            m.lines,
            [("a", "rtpmap:111 opus/48000/2"), ("a", "fmtp:111 useinbandfec=1"), ("a", "rtpmap:9 G722/16000"), ("a", "ptime:20")],
        )

    def test_no_rtpmap_before(self):
        """Without any rtpmap, new lines go before the first attribute."""
        m = parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nb=AS:64\r\na=sendrecv\r\n").media[0]
        set_codecs(m, [CodecEntry(8, PCMA), CodecEntry(101, TELEPHONE_EVENT, "0-16")])
        self.assertEqual(m.lines, [("b", "AS:64"), ("a", "rtpmap:8 PCMA/8000"), ("a", "rtpmap:101 telephone-event/8000"), ("a", "fmtp:101 0-16"), ("a", "sendrecv")])

    def test_plan_applied_round_trip(self):
        """A whole offer/answer through the functions the engines use: the
        rewritten offer parses back to exactly the planned codecs."""
        with open(os.path.join(DATA, "linphone.sdp"), "rb") as f:
            caller = parse(f.read())
        plan = plan_offer(caller.media[0], ["opus", "pcmu", "pcma", "g729"], "quality", ALL)
        to_b = caller.copy()
        set_codecs(to_b.media[0], plan.offer)
        self.assertEqual(entries(parse(bytes(to_b)).media[0]), plan.offer)
        answer = media("pcma/8 te/101")
        result = choose_answer(plan, answer)
        to_a = caller.copy()
        set_codecs(to_a.media[0], result.a_entries)
        self.assertEqual(names(entries(parse(bytes(to_a)).media[0])), "opus/96 te48/99")


def spec_of(entry):
    """The media() spec of one audio entry."""
    return f"{entry.codec.name}/{entry.pt}"


def check_decisions(case, caller, prefs, strategy, can):
    """
    The invariants of both decisions for one offer, list, strategy and
    engine: a 488 or an offer with distinct PTs that set_codecs writes
    exactly (on a copy of the caller's own m-line); only allowed codecs
    offered; performance never adds a codec nor transcodes; quality adds
    only transcodable ones, never G.729; and whatever offered codec the
    callee answers with, the caller gets a codec it offered that is the
    same or transcodable both ways.
    """
    try:
        plan = plan_offer(caller, prefs, strategy, can)
    except MediaError as e:
        case.assertEqual(e.status, 488)
        return None
    pts = [e.pt for e in plan.offer]
    case.assertEqual(len(pts), len(set(pts)))
    allowed = set(prefs) or {"opus", "pcmu", "pcma", "g722", "g729"}
    offered_names = {c.name for _, c in offered(caller)}
    for e in plan.offer_audio:
        case.assertIn(e.codec.name, allowed)
        if e.codec.name not in offered_names:
            case.assertEqual(strategy, "quality")
            case.assertIn(e.codec.name, set(can) - {"g729"})
    sdp = parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n")
    sdp.media.append(caller)
    rewritten = sdp.copy()
    set_codecs(rewritten.media[0], plan.offer)
    case.assertEqual(entries(parse(bytes(rewritten)).media[0]), plan.offer)
    others = [l for l in caller.lines if not l[1].startswith(("rtpmap", "fmtp", "rtcp-fb"))]
    case.assertEqual([l for l in rewritten.media[0].lines if not l[1].startswith(("rtpmap", "fmtp", "rtcp-fb"))], others)
    for value in rewritten.media[0].attributes("rtcp-fb"):
        head = value.partition(" ")[0]
        case.assertTrue(head == "*" or head in rewritten.media[0].formats, value)
    for e in plan.offer_audio:
        result = choose_answer(plan, media(spec_of(e)))
        case.assertEqual(result.b.codec, e.codec)
        case.assertIn(result.a, plan.caller)
        if strategy == "performance":
            case.assertFalse(result.transcoding)
        elif result.transcoding:
            case.assertIn(result.a.codec.name, set(can) - {"g729"})
            case.assertIn(result.b.codec.name, set(can) - {"g729"})
    return plan


class CorpusDecisionTests(SynchronousTestCase):
    def test_real_offers(self):
        """Every audio m-line of the collected real offers, under both
        strategies, several lists and engines with and without
        transcoding: the decision invariants hold, and at least one
        combination per file is not a 488."""
        lists = [[], ["opus", "pcmu", "pcma", "g729"], ["pcma"], ["g722", "pcmu"], ["g729", "pcmu"], ["opus"]]
        engines = [(), ALL, ALL + ("g729",)]
        for name in sorted(os.listdir(DATA)):
            if not name.endswith(".sdp"):
                continue
            with open(os.path.join(DATA, name), "rb") as f:
                sdp = parse(f.read())
            for m in sdp.media:
                if m.media != "audio":
                    continue
                planned = 0
                for strategy in ("performance", "quality"):
                    for prefs in lists:
                        for can in engines:
                            if check_decisions(self, m, prefs, strategy, can):
                                planned += 1
                self.assertGreater(planned, 0, name)


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - make test installs it
    given = None

if given is not None:
    EXAMPLES = int(os.environ.get("RUSTPBX_FUZZ_EXAMPLES", "0"))
    POOL = ["opus", "pcmu", "pcma", "g722", "g729", "te", "te48", "speex"]
    PT_CHOICES = {"pcmu": [0], "pcma": [8], "g722": [9], "g729": [18]}

    @st.composite
    def offers(draw):
        """A caller m-line spec: distinct payload types, known and unknown codecs."""
        names = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=7))
        used, items = set(), []
        for name in names:
            choices = PT_CHOICES.get(name) or [pt for pt in range(96, 128)]
            pt = draw(st.sampled_from(choices))
            if pt not in used:
                used.add(pt)
                items.append(f"{name}/{pt}")
        return " ".join(items)

    class PropertyTests(SynchronousTestCase):
        @settings(max_examples=EXAMPLES or 400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(
            offers(),
            st.lists(st.sampled_from(["opus", "pcmu", "pcma", "g722", "g729"]), unique=True, max_size=5),
            st.sampled_from(["performance", "quality"]),
            st.sets(st.sampled_from(["opus", "pcmu", "pcma", "g722", "g729"])),
        )
        def test_decisions(self, caller_spec, prefs, strategy, can):
            """Random offers, lists, strategies and engines: the invariants
            of L{check_decisions} hold."""
            check_decisions(self, media(caller_spec), prefs, strategy, can)
