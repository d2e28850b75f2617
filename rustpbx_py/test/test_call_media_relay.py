"""
The B2BUA's media hooks through the real built-in relay
(L{rustpbx_py.media.session.BuiltinEngine}): the call layer on its bench
(real core, memory SIP socket, task.Clock), the relay on real UDP sockets
on 127.0.0.1, and two RTP "phones" that are plain UDP sockets.
"""

from __future__ import annotations

import struct

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.call import record as R
from rustpbx_py.sip.sdp import SessionDescription
from rustpbx_py.test.call_fakes import CallHarness


def rtp(seq: int, ssrc: int, payload: bytes = b"\xff" * 160, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 0, seq, seq * 160, ssrc) + payload


def sdp_at(port: int, name: str = "phone") -> bytes:
    return (
        f"v=0\r\no={name} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


class Endpoint(protocol.DatagramProtocol):
    """A phone's RTP socket: keeps what it receives."""

    def __init__(self) -> None:
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))


class RelayCallTests(CallHarness, TestCase):
    timeout = 20

    def setUp(self):
        from rustpbx_py.media.session import BuiltinEngine

        self.setup_module(toml='addr = "127.0.0.1"\nmedia_proxy = "all"\n')
        self.engine = BuiltinEngine(reactor, self.module.config, clock=self.clock)
        self.context.media_engine = self.engine
        self.addCleanup(self.engine.stop)
        self.phones = {}
        for name in ("a", "b"):
            endpoint = Endpoint()
            port = reactor.listenUDP(0, endpoint, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.phones[name] = (endpoint, port.getHost().port, port)

    def port_of(self, name: str) -> int:
        return self.phones[name][1]

    @defer.inlineCallbacks
    def flow(self, relay_a: int, relay_b: int, packets: int = 20):
        """Each phone sends C{packets} RTP packets to its relay port; fires
        once each has received the other's."""
        (ea, _, pa), (eb, _, pb) = self.phones["a"], self.phones["b"]
        for i in range(packets):
            pa.write(rtp(100 + i, 0xAAAA, marker=(i == 0)), ("127.0.0.1", relay_a))
            pb.write(rtp(500 + i, 0xBBBB, marker=(i == 0)), ("127.0.0.1", relay_b))
            yield task.deferLater(reactor, 0.005, lambda: None)
        for _ in range(200):
            if len(ea.received) >= packets - 8 and len(eb.received) >= packets - 8:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def test_call_through_the_relay(self):
        """The fork's offer and the caller's answer name the relay's two
        ports on the PBX's address; RTP crosses both ways, latched to the
        phones' real sockets; the record gets the figures."""
        tx, call = self.invite(body=sdp_at(self.port_of("a"), "alice"))
        fork = self.core.last("INVITE")
        offer = SessionDescription.parse(fork.request.body)
        relay_b = offer.media[0].port
        self.assertEqual(offer.address(offer.media[0]), "192.0.2.1")
        self.assertNotEqual(relay_b, self.port_of("a"))
        fork.answer(200, body=sdp_at(self.port_of("b"), "bob"))
        answer = SessionDescription.parse(tx.last.body)
        relay_a = answer.media[0].port
        self.assertNotIn(relay_a, (relay_b, self.port_of("b")))
        self.caller_ack(call)
        yield self.flow(relay_a, relay_b)
        (ea, _, _), (eb, _, _) = self.phones["a"], self.phones["b"]
        self.assertGreater(len(eb.received), 10)
        self.assertGreater(len(ea.received), 10)
        self.assertEqual(eb.received[0][1], ("127.0.0.1", relay_b))
        self.caller_request(call, "BYE", 2)
        media = call.record.media
        self.assertTrue(media["anchored"])
        legs = media["legs"]
        self.assertEqual(legs["a"]["remote"], ("127.0.0.1", self.port_of("a")))
        self.assertEqual(legs["b"]["remote"], ("127.0.0.1", self.port_of("b")))
        self.assertGreater(legs["a"]["in"]["packets"], 10)
        self.assertGreater(legs["b"]["out"]["packets"], 10)
        notes = [i["message"] for i in call.record.sip_flow.items if i["leg"] == "media"]
        self.assertIn(f"media: leg a latched to 127.0.0.1:{self.port_of('a')}", notes)

    @defer.inlineCallbacks
    def test_ports_returned_and_exhausted(self):
        """With room for one call only, a second call gets 503 and no
        fork; after the first ends its ports serve a third (once the
        reactor has closed the sockets)."""
        config = self.module.config
        base = self.port_of("a") + 1000
        config.rtp_start_port, config.rtp_end_port = base - base % 2, base - base % 2 + 3
        tx1, call1 = self.invite(body=sdp_at(self.port_of("a")), call_id="one")
        self.assertEqual(len(self.core.requests("INVITE")), 1)
        tx2, call2 = self.invite(body=sdp_at(self.port_of("a")), call_id="two")
        self.assertEqual(tx2.last.status, 503)
        self.assertEqual(len(self.core.requests("INVITE")), 1)
        self.core.last("INVITE").answer(486)
        self.assertEqual(tx1.last.status, 486)
        yield task.deferLater(reactor, 0.01, lambda: None)
        tx3, call3 = self.invite(body=sdp_at(self.port_of("a")), call_id="three")
        self.assertEqual(len(self.core.requests("INVITE")), 2)
        tx3.cancel()

    def test_rtp_timeout(self):
        """No RTP either way for rtp_timeout (30 s): both legs get BYE and
        the record's reason is rtpTimeout."""
        tx, call = self.invite(body=sdp_at(self.port_of("a")))
        self.core.last("INVITE").answer(200, body=sdp_at(self.port_of("b")))
        self.caller_ack(call)
        self.clock.advance(40)
        self.assertEqual(len(self.core.requests("BYE")), 2)
        self.assertEqual(call.record.hangup_reason, R.RTP_TIMEOUT)


class WebRtcTargetTests(CallHarness, TestCase):
    """
    Callees known to be WebRTC endpoints (RustPBX's supports_webrtc: a
    binding over WS/WSS or of a user with is_support_webrtc) get a WebRTC
    offer from the built-in relay when a desk phone calls them, under the
    default media_proxy = "auto".
    """

    timeout = 20

    #: the caller's offer names the address its signalling comes from (no NAT)
    CALLER_SDP = sdp_at(40000, "alice").replace(b"127.0.0.1", b"192.0.2.10")

    def setUp(self):
        from rustpbx_py.media.session import BuiltinEngine

        self.setup_module(toml='addr = "127.0.0.1"\n')
        self.engine = BuiltinEngine(reactor, self.module.config, clock=self.clock)
        self.context.media_engine = self.engine
        self.addCleanup(self.engine.stop)

    def test_desk_phone_calls_webrtc_user(self):
        """bob's binding is WebRTC (over UDP: his user has is_support_webrtc):
        the fork's INVITE carries UDP/TLS/RTP/SAVPF with ice-lite, the
        relay's fingerprint, setup:actpass, rtcp-mux, BUNDLE and a=ssrc; the
        record says why the call was anchored."""
        (binding,) = self.locator.bindings["bob@example.com"]
        binding.webrtc = True
        tx, call = self.invite(body=self.CALLER_SDP)
        offer = SessionDescription.parse(self.core.last("INVITE").request.body)
        m = offer.media[0]
        self.assertEqual(m.proto, "UDP/TLS/RTP/SAVPF")
        self.assertEqual(offer.attribute("ice-lite"), "")
        self.assertEqual(offer.attribute("group"), "BUNDLE 0")
        self.assertEqual(m.attribute("setup"), "actpass")
        self.assertTrue(m.attribute("fingerprint").startswith("sha-256 "))
        self.assertEqual(m.attribute("rtcp-mux"), "")
        self.assertIn(" cname:", m.attribute("ssrc"))
        self.assertIn("WebRTC on one side only", call.media.decision.reason)
        tx.cancel()

    def test_desk_phone_calls_desk_phone(self):
        """The same call to a plain binding is not anchored under auto: the
        offer goes through as the caller wrote it."""
        tx, call = self.invite(body=self.CALLER_SDP)
        self.assertEqual(self.core.last("INVITE").request.body, self.CALLER_SDP)
        self.assertFalse(call.media.decision.anchor)
        tx.cancel()
