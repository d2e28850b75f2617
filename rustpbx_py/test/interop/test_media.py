"""
The media plane with real phones on loopback: baresip phones (password
users) and SIPp call each other through the PBX, and what each phone
decodes must be the other side's tone.

  - C{media_proxy = "all"}: each phone's SDP names the PBX's relay (the
    ports the record's figures give), never the other phone, and the
    record counts packets both ways on both legs.
  - A phone behind a NAT (a UDP shim between it and the PBX that rewrites
    its SDP's c= to 10.0.0.99, where nothing answers) under the default
    C{"auto"}: the call is anchored because of the private address, and
    latching sends the phone's audio to where its RTP really comes from.
  - SIPp with C{-rtp_echo}: the caller hears its own tone back, relayed
    twice through the PBX.
  - C{media_proxy = "none"}: the SDP the callee gets is the caller's,
    byte for byte, and the phones still hear each other directly.
"""

from __future__ import annotations

import json
import re
import types
from typing import Optional, Tuple

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.phones import TONES, PhonePbx, dominant_tone, until
from rustpbx_py.test.interop.support import free_udp_port, require_tool, run_tool, scenario

#: What the NAT writes over the phone's own address in its SDP (same
#: length, so Content-Length holds): a private address nobody answers on.
UNREACHABLE = b"10.0.0.99"


class NatShim:
    """
    A NAT in front of one UDP phone: it sends to C{inside_port}, the PBX
    sees it coming from C{outside}'s port, and the PBX's datagrams go back
    to wherever the phone last sent from.  Every c= line of the phone's SDP
    is rewritten to L{UNREACHABLE} (the address a phone behind NAT puts
    there: its private one).
    """

    def __init__(self, pbx: Tuple[str, int]) -> None:
        self.pbx = pbx
        self.phone: Optional[Tuple[str, int]] = None
        shim = self

        class Inside(protocol.DatagramProtocol):
            def datagramReceived(self, data, addr):
                shim.phone = addr
                data = data.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 " + UNREACHABLE)
                shim.outside.transport.write(data, shim.pbx)

        class Outside(protocol.DatagramProtocol):
            def datagramReceived(self, data, addr):
                if addr == shim.pbx and shim.phone is not None:
                    shim.inside.transport.write(data, shim.phone)

        self.inside, self.outside = Inside(), Outside()
        self.ports = [reactor.listenUDP(0, self.inside, interface="127.0.0.1"), reactor.listenUDP(0, self.outside, interface="127.0.0.1")]

    @property
    def inside_port(self) -> int:
        return self.ports[0].getHost().port

    def stop(self):
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])


class TunedBaresip(BaresipPhone):
    """A baresip phone with account parameters: C{audio_codecs} (e.g.
    C{PCMA/8000}) and C{mediaenc} (C{srtp-mand}: RTP/SAVP with a=crypto,
    the srtp module loaded)."""

    def __init__(self, *args, account: str = "", srtp: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.account = account
        if srtp:
            self.extra_modules = ("srtp",)

    def account_line(self) -> str:
        return super().account_line() + self.account


def audio_ports(output: str):
    """The m=audio ports in a phone's SIP trace (what it sent and received)."""
    return {int(p) for p in re.findall(r"m=audio (\d+) ", output)}


class MediaTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        require_tool("baresip")
        module_path()

    @defer.inlineCallbacks
    def start(self, extra: str):
        self.pbx = yield PhonePbx.start(self, extra)
        return self.pbx

    @defer.inlineCallbacks
    def phone(self, user: str, pbx=None, contacts=("alice", "bob", "carol")):
        phone = BaresipPhone(self, pbx or self.pbx, user, "udp", contacts=tuple(c for c in contacts if c != user))
        yield phone.start()
        return phone

    @defer.inlineCallbacks
    def talk(self, caller: BaresipPhone, callee: BaresipPhone):
        yield caller.dial_up(callee)
        yield caller.hears(callee)
        yield callee.hears(caller)
        yield caller.hang_up(callee)

    @defer.inlineCallbacks
    def record(self):
        """The one call record (media as a dict, the SIP flow as a list), once written."""
        service = self.pbx.service
        calls = next(m for m in service.modules if m.name == "call")
        for _ in range(100):
            yield calls.records.drained()
            rows = yield service.context.store.run_query("SELECT end_time, media, sip_flow, hangup_reason FROM call_records")
            if rows and all(r[0] is not None for r in rows):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        (row,) = rows
        return json.loads(row[1]) if row[1] else None, json.loads(row[2]), row[3]

    def assert_flowed(self, legs: dict) -> None:
        for leg in ("a", "b"):
            for direction in ("in", "out"):
                figures = legs[leg][direction]
                self.assertGreater(figures["packets"], 20, (leg, direction, legs))
                self.assertGreater(figures["bytes"], 20 * 160, (leg, direction, legs))

    @defer.inlineCallbacks
    def test_all_anchors_between_baresip_phones(self):
        """
        media_proxy = "all": alice's 200 and bob's INVITE name the relay's
        ports (the record's local ports), never the other phone's; each
        hears the other; packets counted both ways on both legs, and the
        latched remotes are the phones' own RTP ports.
        """
        yield self.start('media_proxy = "all"')
        alice = yield self.phone("alice")
        bob = yield self.phone("bob")
        yield self.talk(alice, bob)
        media, flow, reason = yield self.record()
        self.assertEqual((media["mode"], media["anchored"]), ("all", True))
        legs = media["legs"]
        relay_a, relay_b = legs["a"]["local"][1], legs["b"]["local"][1]
        alice_rtp, bob_rtp = legs["a"]["remote"][1], legs["b"]["remote"][1]
        self.assertEqual(audio_ports(alice.process.output), {alice_rtp, relay_a})
        self.assertEqual(audio_ports(bob.process.output), {bob_rtp, relay_b})
        self.assertEqual(legs["a"]["local"][0], "127.0.0.1")
        self.assert_flowed(legs)
        notes = [i["message"] for i in flow if i["leg"] == "media"]
        self.assertIn("media: all, anchored (media_proxy all)", notes[0])
        self.assertIn(f"media: leg a latched to 127.0.0.1:{alice_rtp}", notes)

    @defer.inlineCallbacks
    def alice_behind_nat(self):
        """
        Start the PBX under the default "auto" and register alice through
        a L{NatShim} and bob directly; fire with (alice, bob).
        """
        yield self.start("")
        shim = NatShim(("127.0.0.1", self.pbx.ports["UDP"]))
        self.addCleanup(shim.stop)
        behind = types.SimpleNamespace(ports={"UDP": shim.inside_port}, cert=self.pbx.cert)
        alice = yield self.phone("alice", behind)
        bob = yield self.phone("bob")
        return alice, bob

    @defer.inlineCallbacks
    def test_phone_behind_nat_latched(self):
        """
        Under the default "auto", alice's SDP (through a NAT) names
        10.0.0.99: the call is anchored for it, and latching sends bob's
        audio to where alice's RTP comes from; both hear each other.
        """
        alice, bob = yield self.alice_behind_nat()
        yield self.talk(alice, bob)
        media, flow, reason = yield self.record()
        self.assertEqual((media["mode"], media["anchored"]), ("auto", True))
        self.assertIn("10.0.0.99", media["reason"])
        self.assertEqual(media["legs"]["a"]["remote"][0], "127.0.0.1")
        self.assert_flowed(media["legs"])
        sent_to_bob = [i["message"] for i in flow if i["leg"] == "b" and i["direction"] == "out" and i["message"].startswith("INVITE")]
        self.assertNotIn("10.0.0.99", sent_to_bob[0])

    @defer.inlineCallbacks
    def test_called_phone_behind_nat(self):
        """
        bob calls alice, who registered through the NAT: her binding is
        NAT-fixed, which anchors the call under "auto" before her answer
        (naming 10.0.0.99) is even known; latching finds her real RTP.
        """
        alice, bob = yield self.alice_behind_nat()
        yield self.talk(bob, alice)
        media, flow, reason = yield self.record()
        self.assertEqual((media["mode"], media["anchored"]), ("auto", True))
        self.assertIn("behind NAT", media["reason"])
        self.assertEqual(media["legs"]["b"]["remote"][0], "127.0.0.1")
        self.assert_flowed(media["legs"])

    @defer.inlineCallbacks
    def test_srtp_to_rtp(self):
        """
        alice (TLS, srtp-mand: RTP/SAVP + a=crypto) calls bob (UDP, no
        srtp module) under the default "auto": SRTP on one side only, so
        the call is anchored; bob's INVITE is plain RTP/AVP without keys,
        alice's 200 has RTP/SAVP with the relay's key; they hear each other.
        """
        import os

        path = module_path()
        if not os.path.exists(os.path.join(path, "srtp.so")):
            from twisted.trial.unittest import SkipTest

            raise SkipTest(f"baresip's srtp module is not in {path}")
        yield self.start("")
        alice = TunedBaresip(self, self.pbx, "alice", "tls", contacts=("bob",), account=";mediaenc=srtp-mand", srtp=True)
        yield alice.start()
        bob = yield self.phone("bob")
        yield self.talk(alice, bob)
        media, flow, reason = yield self.record()
        self.assertEqual((media["mode"], media["anchored"]), ("auto", True))
        self.assertIn("SRTP", media["reason"])
        (to_bob,) = [i["message"] for i in flow if i["leg"] == "b" and i["direction"] == "out" and i["message"].startswith("INVITE")]
        self.assertIn("RTP/AVP", to_bob)
        self.assertNotIn("a=crypto", to_bob)
        (to_alice,) = [i["message"] for i in flow if i["leg"] == "a" and i["direction"] == "out" and i["message"].startswith("SIP/2.0 200") and "m=audio" in i["message"]]
        self.assertIn("RTP/SAVP", to_alice)
        self.assertIn("a=crypto:", to_alice)
        self.assert_flowed(media["legs"])

    @defer.inlineCallbacks
    def test_opus_to_pcma(self):
        """
        alice offers Opus only, bob takes PCMA only; codec_strategy =
        "quality" with media_proxy = "all": the relay offers bob what he
        can take and transcodes; each hears the other's tone.
        """
        yield self.start('media_proxy = "all"\ncodec_strategy = "quality"\ncodecs = ["opus", "g722", "pcmu", "pcma"]')
        alice = yield self.phone_with("alice", codec="opus")
        bob = yield self.phone_with("bob", account=";audio_codecs=PCMA/8000")
        yield self.talk(alice, bob)
        media, flow, reason = yield self.record()
        (to_bob,) = [i["message"] for i in flow if i["leg"] == "b" and i["direction"] == "out" and i["message"].startswith("INVITE")]
        (from_bob,) = [i["message"] for i in flow if i["leg"] == "b" and i["direction"] == "in" and i["message"].startswith("SIP/2.0 200") and "m=audio" in i["message"]]
        self.assertIn("PCMA/8000", to_bob)
        self.assertIn("PCMA/8000", from_bob)
        self.assertNotIn("opus", from_bob.lower())
        (to_alice,) = [i["message"] for i in flow if i["leg"] == "a" and i["direction"] == "out" and i["message"].startswith("SIP/2.0 200") and "m=audio" in i["message"]]
        self.assertIn("opus/48000", to_alice.lower())
        self.assert_flowed(media["legs"])

    @defer.inlineCallbacks
    def phone_with(self, user: str, account: str = "", codec: str = "g711"):
        phone = TunedBaresip(self, self.pbx, user, "udp", contacts=tuple(c for c in ("alice", "bob") if c != user), codec=codec, account=account)
        yield phone.start()
        return phone

    @defer.inlineCallbacks
    def test_sipp_rtp_echo(self):
        """
        SIPp (carol) answers with -rtp_echo under media_proxy = "all":
        alice's tone goes through the relay to SIPp and back, so alice
        hears herself; SIPp's 200 reached her naming the relay.
        """
        sipp = require_tool("sipp")
        yield self.start('media_proxy = "all"')
        port, media_port = free_udp_port(), free_udp_port()
        workdir = self.mktemp()
        import os

        os.makedirs(workdir)
        base = [sipp, f"127.0.0.1:{self.pbx.ports['UDP']}", "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-m", "1"]
        out, err, code = yield run_tool(
            base + ["-sf", scenario("call_register.xml"), "-s", "carol", "-au", "carol", "-ap", "carol-secret"], cwd=workdir
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-2000:])
        callee = run_tool(
            [sipp, "-sf", scenario("call_uas.xml"), "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-m", "1",
             "-mp", str(media_port), "-rtp_echo", "-timeout", "60"],
            timeout=70, cwd=workdir,
        )
        alice = yield self.phone("alice")
        mark = alice.mark()
        yield alice.command("dial", "sip:carol@127.0.0.1")
        yield alice.wait_event("CALL_ESTABLISHED", since=mark)
        result = []

        def hears_herself() -> bool:
            files = alice.recordings()
            if not files:
                return False
            tone, text = dominant_tone(files[-1], sorted(set(TONES.values())))
            result[:] = [text]
            return tone == TONES["alice"]

        try:
            yield until(hears_herself, 8, "alice hearing her own tone echoed by SIPp")
        except AssertionError as e:
            raise AssertionError(f"{e}; {result}")
        yield alice.command("hangup")
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-2000:])
        media, flow, reason = yield self.record()
        self.assertTrue(media["anchored"])
        self.assertEqual(media["legs"]["b"]["remote"][1], media_port)
        self.assertIn(media["legs"]["a"]["local"][1], audio_ports(alice.process.output))
        self.assertNotIn(media_port, audio_ports(alice.process.output))
        self.assert_flowed(media["legs"])

    @defer.inlineCallbacks
    def test_none_leaves_sdp_untouched(self):
        """media_proxy = "none": the INVITE bob gets carries alice's SDP
        byte for byte, and so does alice's 200 carry bob's; they hear each
        other phone to phone."""
        yield self.start('media_proxy = "none"')
        alice = yield self.phone("alice")
        bob = yield self.phone("bob")
        yield self.talk(alice, bob)
        media, flow, reason = yield self.record()
        self.assertEqual(media, {"mode": "none", "anchored": False, "reason": "media_proxy none: SDP relayed untouched"})

        def body(leg: str, direction: str, start: str) -> str:
            (message,) = [i["message"] for i in flow if i["leg"] == leg and i["direction"] == direction and i["message"].startswith(start) and "m=audio" in i["message"]]
            return message.split("\r\n\r\n", 1)[1]

        self.assertEqual(body("b", "out", "INVITE"), body("a", "in", "INVITE"))
        self.assertEqual(body("a", "out", "SIP/2.0 200"), body("b", "in", "SIP/2.0 200"))
