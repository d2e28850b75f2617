"""
L{rustpbx_py.status} on a whole PBX (real core, transaction layer, UDP
protocol, acl/auth/registrar/call modules) with scripted phones on a
L{task.Clock}: what the console and the API show is what the registrar and
the B2BUA hold, and the admin's hang-up and unregister act on them.
"""

from __future__ import annotations

from typing import List

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py import status
from rustpbx_py.call import record as R
from rustpbx_py.sip.message import Request
from rustpbx_py.test.sip_phones import Network, Phone

USERS = [
    {"type": "memory", "users": [
        {"username": "alice", "password": "wonderland"},
        {"username": "bob", "password": "builder"},
    ]}
]
SDP_PCMA = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0\r\n"


class ListeningPhone(Phone):
    """A phone that keeps every request it receives; it may only ring."""

    ring_only = False

    def __init__(self, *args, **kwargs) -> None:
        Phone.__init__(self, *args, **kwargs)
        self.requests: List[Request] = []

    def _request_received(self, request: Request) -> None:
        self.requests.append(request)
        if self.ring_only and request.method == "INVITE":
            self._incoming.setdefault(request.call_id, (request, "ringer"))
            self._respond(request, 180, "ringer")
            return
        if self.ring_only and request.method == "CANCEL":
            self._respond(request, 200)
            invite, tag = self._incoming[request.call_id]
            self._respond(invite, 487, tag)
            return
        Phone._request_received(self, request)

    def methods(self) -> List[str]:
        return [r.method for r in self.requests]


class StatusTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.net = Network(self.clock, realms=["example.com"], user_backends=USERS)
        self.addCleanup(self.net.stop)
        self.context = self.net.context
        self.alice = ListeningPhone(self.net, "alice", "wonderland", ("198.51.100.10", 5062), ("10.0.0.10", 5060),
                                    user_agent="Alice/1.0")
        self.bob = ListeningPhone(self.net, "bob", "builder", ("198.51.100.20", 5064), ("10.0.0.20", 5060),
                                  user_agent="Bob/2.0")

    def register_both(self) -> None:
        self.alice.register(120)
        self.bob.register(300)
        self.assertEqual(self.alice.answers[-1], ("REGISTER", 200))
        self.assertEqual(self.bob.answers[-1], ("REGISTER", 200))

    def test_registrations(self) -> None:
        """
        Every binding is listed with its contact, the source address the
        REGISTER came from, transport, user agent, the lifetime granted and
        what is left of it, and when it registered.
        """
        self.assertEqual(status.registrations(self.context), [])
        registered_at = self.clock.seconds()
        self.register_both()
        self.clock.advance(20)
        rows = status.registrations(self.context)
        self.assertEqual([r["aor"] for r in rows], ["alice@example.com", "bob@example.com"])
        alice, bob = rows
        self.assertEqual(alice["contact"], "sip:alice@10.0.0.10:5060")
        self.assertEqual(alice["source"], "198.51.100.10:5062")
        self.assertEqual(alice["transport"], "UDP")
        self.assertEqual(alice["user_agent"], "Alice/1.0")
        self.assertEqual(alice["expires"], 120)
        self.assertEqual(alice["expires_in"], 100)
        self.assertEqual(alice["registered_at"], registered_at)
        self.assertEqual(alice["expires_at"], registered_at + 120)
        self.assertTrue(alice["nat"], "a private Contact from a public source is behind NAT")
        self.assertFalse(alice["webrtc"], "registered over UDP: not a WebRTC endpoint")
        self.assertEqual((bob["expires"], bob["expires_in"], bob["user_agent"]), (300, 280, "Bob/2.0"))
        (binding,) = self.context.locator.lookup("alice@example.com")
        self.assertEqual(status.binding_summary(self.context, binding), alice)
        self.clock.advance(101)
        self.assertEqual([r["aor"] for r in status.registrations(self.context)], ["bob@example.com"])

    def test_unregister(self) -> None:
        """
        Unregistering an AOR removes its bindings from the registry (calls
        to it are no longer forked to the phone); a contact that is not
        registered removes nothing.
        """
        self.register_both()
        removed = []
        status.unregister(self.context, "bob@example.com", "sip:bob@10.0.0.99:5060").addCallback(removed.append)
        self.assertEqual(removed, [0])
        status.unregister(self.context, "bob@example.com", "<sip:bob@10.0.0.20:5060>").addCallback(removed.append)
        self.assertEqual(removed, [0, 1])
        self.assertEqual([r["aor"] for r in status.registrations(self.context)], ["alice@example.com"])
        self.alice.call("bob", 10)
        self.assertEqual(self.alice.answers[-1][0], "INVITE")
        self.assertGreaterEqual(self.alice.answers[-1][1], 400)
        self.assertNotIn("INVITE", self.bob.methods())
        status.unregister(self.context, "alice@example.com").addCallback(removed.append)
        self.assertEqual(removed, [0, 1, 1])
        self.assertEqual(status.registrations(self.context), [])

    def test_active_call(self) -> None:
        """
        An answered call shows caller, callee, state, times, the codec the
        answer chose on each leg (not anchored here), and both legs.
        """
        self.register_both()
        self.assertEqual(status.active_calls(self.context), [])
        started = self.clock.seconds()
        self.alice.call("bob", 60)
        self.clock.advance(7)
        (call,) = status.active_calls(self.context)
        self.assertEqual((call["caller"], call["callee"]), ("alice@example.com", "bob@example.com"))
        self.assertEqual(call["state"], "answered")
        self.assertEqual(call["start_time"], started)
        self.assertEqual(call["answer_time"], started)
        self.assertEqual(call["duration"], 7)
        self.assertEqual(call["talk_time"], 7)
        self.assertEqual(call["codecs"], {"a": "PCMU", "b": "PCMU"})
        self.assertEqual(call["media"]["anchored"], False)
        self.assertEqual([leg["name"] for leg in call["legs"]], ["a", "b"])
        self.assertEqual(call["legs"][0]["peer"], "198.51.100.10:5062")
        self.assertEqual(call["legs"][1]["peer"], "198.51.100.20:5064")
        self.assertTrue(call["call_id"].startswith("call-"))
        self.assertNotEqual(call["b_call_id"], call["call_id"])
        (live,) = self.net.module("call").calls
        self.assertEqual(status.call_summary(self.context, live), call)
        self.net.advance(60)
        self.assertEqual(status.active_calls(self.context), [])
        self.assertEqual(status.call_summary(self.context, live)["state"], "ended")

    def test_hang_up_answered(self) -> None:
        """
        Hanging up an answered call sends BYE to both phones, ends the call
        at once and records the reason RustPBX's console hang-up leaves
        (bySystem), keeping the 200 as its status.
        """
        self.register_both()
        self.alice.call("bob", 600)
        (live,) = self.net.module("call").calls
        (call,) = status.active_calls(self.context)
        self.assertFalse(status.hang_up(self.context, "no-such-call"))
        self.assertTrue(status.hang_up(self.context, call["id"]))
        self.net.pump()
        self.assertIn("BYE", self.alice.methods())
        self.assertIn("BYE", self.bob.methods())
        self.assertEqual(status.active_calls(self.context), [])
        self.assertEqual(live.record.hangup_reason, R.BY_SYSTEM)
        self.assertEqual(live.record.status_code, 200)
        self.assertFalse(status.hang_up(self.context, call["id"]), "an ended call cannot be hung up again")

    def test_hang_up_by_call_id(self) -> None:
        """Either side's Call-ID names the call as well as the record id."""
        self.register_both()
        self.alice.call("bob", 600)
        (call,) = status.active_calls(self.context)
        self.assertTrue(status.hang_up(self.context, call["b_call_id"]))
        self.assertEqual(status.active_calls(self.context), [])
        self.alice.call("bob", 600)
        (call,) = status.active_calls(self.context)
        self.assertTrue(status.hang_up(self.context, call["call_id"]))
        self.assertEqual(status.active_calls(self.context), [])

    def test_hang_up_ringing(self) -> None:
        """
        A call still ringing is cancelled towards the callee and the caller
        gets 503; while it rings it shows as ringing with no codec yet.
        """
        self.bob.ring_only = True
        self.register_both()
        self.alice.call("bob", 600)
        (call,) = status.active_calls(self.context)
        self.assertEqual(call["state"], "ringing")
        self.assertIsNone(call["answer_time"])
        self.assertEqual(call["talk_time"], 0.0)
        self.assertEqual(call["codecs"], {"a": None, "b": None})
        (live,) = self.net.module("call").calls
        self.assertTrue(status.hang_up(self.context, call["id"]))
        self.net.pump()
        self.assertIn("CANCEL", self.bob.methods())
        self.assertEqual(self.alice.answers[-1], ("INVITE", 503))
        self.assertEqual(live.record.hangup_reason, R.BY_SYSTEM)
        self.assertEqual(status.active_calls(self.context), [])

    def test_transactions(self) -> None:
        """
        Transactions in flight are counted by side, method and state: a
        REGISTER's server transactions stay (completed) for Timer J, then
        go.
        """
        empty = status.transactions(self.context)
        self.assertEqual(empty["total"], 0)
        self.assertEqual(empty["server"], {"total": 0, "by_method": {}, "by_state": {}})
        self.alice.register(120)
        counts = status.transactions(self.context)
        self.assertEqual(counts["server"]["by_method"], {"REGISTER": 2})
        self.assertEqual(counts["server"]["by_state"], {"completed": 2})
        self.assertEqual(counts["client"]["total"], 0)
        self.assertEqual(counts["total"], 2)
        self.assertEqual(counts["pending"], 0)
        self.net.advance(40)
        self.assertEqual(status.transactions(self.context)["total"], 0)

    def test_client_transactions(self) -> None:
        """The B leg's INVITE of a ringing call is a client transaction in proceeding."""
        self.bob.ring_only = True
        self.register_both()
        self.alice.call("bob", 600)
        counts = status.transactions(self.context)
        self.assertEqual(counts["client"]["by_method"], {"INVITE": 1})
        self.assertEqual(counts["client"]["by_state"], {"proceeding": 1})
        self.assertEqual(counts["server"]["by_method"].get("INVITE"), 2, "the 407'd INVITE and the call's")
        self.assertEqual(counts["pending"], 1)


class AnchoredCallTests(SynchronousTestCase):
    def test_codecs_from_session(self) -> None:
        """
        An anchored call's codecs are the media session's, per leg (they
        differ when the engine transcodes).
        """
        from rustpbx_py.test.test_call_media import RecordingEngine, RecordingSession

        class Transcoding(RecordingSession):
            def stats(self):
                return {"a": {"codec": "opus"}, "b": {"codec": "PCMA"}}

        class Engine(RecordingEngine):
            def session(self, call_id, policy):
                session = Transcoding(self, call_id, policy)
                self.sessions.append(session)
                return session

        clock = task.Clock()
        clock.advance(1_700_000_000)
        net = Network(clock, realms=["example.com"], user_backends=USERS, media_proxy="all")
        self.addCleanup(net.stop)
        net.context.media_engine = engine = Engine()
        alice = Phone(net, "alice", "wonderland", ("198.51.100.10", 5062), ("10.0.0.10", 5060))
        bob = Phone(net, "bob", "builder", ("198.51.100.20", 5064), ("10.0.0.20", 5060))
        alice.register()
        bob.register()
        alice.call("bob", 60)
        (call,) = status.active_calls(net.context)
        self.assertEqual(len(engine.sessions), 1)
        self.assertEqual(call["media"]["anchored"], True)
        self.assertEqual(call["media"]["mode"], "all")
        self.assertEqual(call["codecs"], {"a": "opus", "b": "PCMA"})


class FirstCodecTests(SynchronousTestCase):
    def test_first_codec(self) -> None:
        """The answer's first audio payload names the codec; no SDP, no codec."""
        self.assertEqual(status.first_codec(SDP_PCMA), "PCMA")
        self.assertIsNone(status.first_codec(b""))
        self.assertIsNone(status.first_codec(b"not sdp"))


class TrunkTests(SynchronousTestCase):
    def test_trunks(self) -> None:
        """Each configured trunk's health, in order; not probed yet: state unknown."""
        clock = task.Clock()
        net = Network(clock, realms=["example.com"], user_backends=USERS,
                      trunks={"carrier": {"dest": "sip:192.0.2.50:5060"}, "backup": {"dest": "sip:192.0.2.51:5060"}})
        self.addCleanup(net.stop)
        rows = status.trunks(net.context)
        self.assertEqual([(t["trunk"], t["state"], t["failures"]) for t in rows],
                         [("carrier", "unknown", 0), ("backup", "unknown", 0)])


class NoModulesTests(SynchronousTestCase):
    def test_empty_context(self) -> None:
        """A PBX without registrar or call module shows nothing, and acts on nothing."""

        class Context:
            modules: list = []
            locator = None
            core = None
            reactor = task.Clock()

        context = Context()
        self.assertEqual(status.registrations(context), [])
        self.assertEqual(status.active_calls(context), [])
        self.assertFalse(status.hang_up(context, "x"))
        self.assertEqual(status.transactions(context)["total"], 0)
        self.assertEqual(status.trunks(context), [])
        done = []
        status.unregister(context, "alice@example.com").addCallback(done.append)
        self.assertEqual(done, [0])
