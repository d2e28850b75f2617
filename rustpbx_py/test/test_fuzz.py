# -*- test-case-name: rustpbx_py.test.test_fuzz -*-
"""
Fuzzing the parser and the code around it with Hypothesis: the UDP and
TCP framing, the SIP core (Via stamping, the request checks, the 400 it
builds for what does not parse, the transaction layer) and the parser's
lazily parsed headers.

What must hold for every input: nothing raises out of a transport's
C{datagramReceived}/C{dataReceived}, nothing is logged as a failure, and
the parser itself raises only its own L{SipParseError} and
L{HeaderError}.  Inputs are mutations of real messages (the benchmark
corpus and the RFC 4475 torture messages) with the tokens that broke
things before (a bare CR, a Content-Length of 5,000 digits, NULs, port
70000, ...), plus arbitrary bytes.

In C{make test} each target runs a bounded number of examples (about
25 s for the module); a longer run, documented in bench/README.md:

    RUSTPBX_FUZZ_EXAMPLES=200000 .venv/bin/python -m twisted.trial rustpbx_py.test.test_fuzz
"""

from __future__ import annotations

import glob
import os
from typing import List, Optional

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.config import default_config
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.protocols.stream import SipStreamFactory
from rustpbx_py.protocols.udp import SipDatagramProtocol
from rustpbx_py.proxy import SipCore
from rustpbx_py.sip.headers import HeaderError
from rustpbx_py.sip.message import SipParseError, parse_message
from rustpbx_py.sip.validate import check_message
from rustpbx_py.transaction.responses import build_response

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - make test installs it (setup.cfg extra "test")
    _NO_HYPOTHESIS = "hypothesis is not installed (make test installs the setup.cfg extra 'test')"
else:
    _NO_HYPOTHESIS = None

_HERE = os.path.dirname(__file__)
_ROOT = os.path.dirname(os.path.dirname(_HERE))


def _seeds() -> List[bytes]:
    paths = sorted(glob.glob(os.path.join(_HERE, "data", "torture", "*.dat")))
    paths += sorted(glob.glob(os.path.join(_ROOT, "bench", "corpus", "*.sip")))
    seeds = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if b"\r\n" not in data:
            data = data.replace(b"\n", b"\r\n")
        seeds.append(data)
    seeds.append(
        b"INVITE sip:1001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKf1;rport\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: f1\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:a@10.0.0.1:5060>\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: 4\r\n\r\nv=0\n"
    )
    return seeds


SEEDS = _seeds()


class _FailureWatch:
    """Every failure or error logged while it is installed."""

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, event) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.seen.append(event)


class _UdpTransport:
    def write(self, data, addr) -> None:
        pass

    def getHost(self):
        return IPv4Address("UDP", "127.0.0.1", 5060)


def _udp_protocol(core: SipCore, sent: Optional[list] = None) -> SipDatagramProtocol:
    """The core's UDP listener, started on L{_UdpTransport}; what it
    writes is appended to C{sent} when given."""
    protocol = SipDatagramProtocol(core)
    protocol.transport = _UdpTransport()
    if sent is not None:
        protocol.transport.write = lambda data, addr: sent.append(data)
    protocol.startProtocol()
    return protocol


def _core(clock) -> SipCore:
    core = SipCore(default_config(useragent="Fuzz/1"), clock, Pipeline([]))
    core.accepting = True
    return core


if _NO_HYPOTHESIS is None:
    EXAMPLES = int(os.environ.get("RUSTPBX_FUZZ_EXAMPLES", "0")) or None

    #: Bytes that broke the code around the parser before, and SIP's delimiters.
    TOKENS = [
        b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\x00", b"\xff", b"\xc3\xa9", b":", b";", b",", b"<", b">",
        b'"', b"\\", b"=", b" ", b"\t", b"@", b"[", b"]", b"%", b"?", b"9" * 5000, b"-1", b"99999999999",
        b"70000", b"0x10", b"1e5", b";rport", b";rport=70000", b";received=", b";maddr=host.invalid",
        b";branch=", b";branch=z9hG4bK", b";tag=", b"sip:", b"sips:", b"tel:", b"[::1]", b"[::1]:70000",
        b"\r\nContent-Length: ", b"\r\nl: ", b"\r\nVia: SIP/2.0/UDP ", b"\r\nv: SIP/2.0/TCP h", b"SIP/2.0",
        b"\r\nContact: *", b"\r\nRequire: ", b"\r\nExpires: ", b"\r\nCSeq: ", b"\r\nMax-Forwards: ",
        b"\r\nRoute: <sip:h;lr>", b"\r\nRecord-Route: ", b"\r\nSupported: ", b"\r\nContent-Type: multipart/mixed;boundary=x",
    ]

    _op = st.tuples(
        st.integers(0, 4),
        st.floats(0, 1, allow_nan=False),
        st.sampled_from(TOKENS),
        st.binary(min_size=1, max_size=8),
        st.integers(1, 40),
    )


    @st.composite
    def mutated(draw) -> bytes:
        """A real message with a few insertions, deletions, replaced bytes and
        duplicated slices."""
        data = bytearray(draw(st.sampled_from(SEEDS)))
        for op, where, token, raw, n in draw(st.lists(_op, min_size=1, max_size=6)):
            pos = int(where * len(data))
            if op == 0:
                data[pos:pos] = token
            elif op == 1:
                del data[pos : pos + n]
            elif op == 2:
                data[pos:pos] = raw
            elif op == 3:
                data[pos : pos + len(raw)] = raw
            else:
                data[pos:pos] = data[pos : pos + n * 5]
        return bytes(data)


    inputs = st.one_of(mutated(), mutated(), mutated(), st.binary(max_size=400))


    class FuzzTests(SynchronousTestCase):
        """No input reaches past the parser's own errors."""

        def setUp(self) -> None:
            self.watch = _FailureWatch()
            globalLogPublisher.addObserver(self.watch)
            self.addCleanup(globalLogPublisher.removeObserver, self.watch)
            self.clock = task.Clock()
            self.core = _core(self.clock)

        def assertNothingLogged(self, data: bytes) -> None:
            if self.watch.seen:
                event = self.watch.seen[0]
                self.watch.seen = []
                failure = event.get("log_failure")
                self.fail(f"{data[:200]!r} logged {failure.getTraceback() if failure else event}")

        @settings(max_examples=EXAMPLES or 2500, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(inputs)
        def test_parser(self, data: bytes) -> None:
            """The parser raises only SipParseError; a message it returns has
            headers that raise only HeaderError when read, passes or fails the
            request checks without raising, and a response built for it (when
            the parser says one is possible) can be written out."""
            try:
                message = parse_message(data)
            except SipParseError as e:
                message = e.message
                if message is None or e.status is None:
                    return
            for name in ("via", "from_addr", "to_addr", "call_id", "cseq", "contacts", "ruri", "max_forwards", "expires"):
                try:
                    getattr(message, name)
                except HeaderError:
                    pass
                except AttributeError:
                    pass
            check_message(message)
            if message.is_request and message.top_via is not None:
                build_response(message, 400, "Bad Request", server="Fuzz/1").to_bytes()

        @settings(max_examples=EXAMPLES or 1500, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(inputs, st.sampled_from(["10.0.0.1", "10.0.0.2", "192.0.2.9"]))
        def test_udp_through_core(self, data: bytes, source: str) -> None:
            """A datagram through the UDP listener and the real core (Via
            stamping, checks, 400/501/200 answers, transactions): nothing
            raises, nothing logs a failure."""
            protocol = _udp_protocol(self.core)
            protocol.datagramReceived(data, (source, 5060))
            self.clock.advance(40)
            self.assertNothingLogged(data)

        @settings(max_examples=EXAMPLES or 1000, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(inputs, st.lists(st.integers(1, 400), max_size=8))
        def test_tcp_framing_through_core(self, data: bytes, cuts: List[int]) -> None:
            """The same bytes over a TCP connection, cut into segments anywhere
            (and sent twice, so framing after a bad message is exercised):
            nothing raises out of dataReceived, nothing logs a failure."""
            factory = SipStreamFactory(self.core, "TCP", 0, self.clock)
            protocol = factory.buildProtocol(None)
            transport = StringTransport(
                peerAddress=IPv4Address("TCP", "10.0.0.9", 40000), hostAddress=IPv4Address("TCP", "127.0.0.1", 5060)
            )
            protocol.makeConnection(transport)
            stream = data + data
            i = 0
            for n in cuts + [len(stream)]:
                protocol.dataReceived(stream[i : i + n])
                i += n
            protocol.connectionLost(None)
            self.clock.advance(40)
            self.assertNothingLogged(data)

    class ModulesFuzzTests(SynchronousTestCase):
        """The same inputs through the real modules (acl, auth, registrar,
        call, presence) behind the core, with a registered user."""

        def setUp(self) -> None:
            from rustpbx_py.test.sip_phones import Network, Phone

            self.watch = _FailureWatch()
            globalLogPublisher.addObserver(self.watch)
            self.addCleanup(globalLogPublisher.removeObserver, self.watch)
            self.clock = task.Clock()
            users = [{"type": "memory", "users": [{"username": "alice", "password": "a-pw"}]}]
            self.net = Network(self.clock, user_backends=users, realms=["example.com"])
            self.addCleanup(self.net.stop)
            Phone(self.net, "alice", "a-pw", ("203.0.113.1", 5060), ("10.0.0.1", 5060)).register(3600)

        assertNothingLogged = FuzzTests.assertNothingLogged

        @settings(max_examples=EXAMPLES or 600, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(inputs, st.sampled_from(["203.0.113.1", "203.0.113.2", "198.51.100.7"]))
        def test_udp_through_modules(self, data: bytes, source: str) -> None:
            """A datagram through the whole pipeline: nothing raises, no
            module's failure is logged (the core would answer it 500)."""
            self.net.udp.datagramReceived(data, (source, 5060))
            self.net.outbox.clear()
            self.clock.advance(40)
            self.assertNothingLogged(data)


else:

    class FuzzTests(SynchronousTestCase):  # type: ignore[no-redef]
        """Skipped without Hypothesis."""

        skip = _NO_HYPOTHESIS

        def test_fuzz(self) -> None:
            """Never runs: the whole class is skipped."""


class KnownInputTests(SynchronousTestCase):
    """The inputs that raised before the fuzz target existed, kept as
    plain tests."""

    def test_non_utf8_user_name_logged(self):
        """An INVITE from an unknown user whose name holds a byte that is
        not UTF-8 (found by the long fuzz run through the modules): every
        log line it causes can be written as UTF-8 (the log file's writer
        raised UnicodeEncodeError on the surrogate)."""
        from twisted.logger import formatEvent

        from rustpbx_py.test.sip_phones import Network, Phone

        clock = task.Clock()
        users = [{"type": "memory", "users": [{"username": "alice", "password": "a-pw"}]}]
        net = Network(clock, user_backends=users, realms=["example.com"])
        self.addCleanup(net.stop)
        Phone(net, "alice", "a-pw", ("203.0.113.1", 5060), ("10.0.0.1", 5060)).register(3600)
        lines = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        net.udp.datagramReceived(
            b"INVITE sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.2;branch=z9hG4bKs1\r\n"
            b"From: sip:caller\xcf@example.net;tag=1\r\nTo: <sip:user@example.com>\r\nCall-ID: s1\r\n"
            b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:a@203.0.113.2>\r\nContent-Length: 0\r\n\r\n",
            ("203.0.113.2", 5060),
        )
        clock.advance(40)
        texts = [formatEvent(e) for e in lines]
        self.assertTrue(any("caller" in t for t in texts), texts)
        for text in texts:
            text.encode("utf-8")

    def setUp(self) -> None:
        self.core = _core(task.Clock())

    def stream(self):
        protocol = SipStreamFactory(self.core, "TCP", 0, task.Clock()).buildProtocol(None)
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "10.0.0.9", 40000), hostAddress=IPv4Address("TCP", "127.0.0.1", 5060)
        )
        protocol.makeConnection(transport)
        return protocol, transport

    def test_huge_content_length_tcp(self):
        """A Content-Length of 5,000 digits over TCP: 513 and the
        connection closed, no ValueError out of int()."""
        protocol, transport = self.stream()
        protocol.dataReceived(
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.9;branch=z9hG4bKcl\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: cl\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"SIP/2.0 513 "), transport.value()[:80])
        self.assertTrue(transport.disconnecting)

    def test_huge_content_length_udp(self):
        """The same over UDP: a 400, no exception."""
        sent: list = []
        protocol = _udp_protocol(self.core, sent)
        protocol.datagramReceived(
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKcl\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: cl\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n",
            ("10.0.0.9", 5060),
        )
        self.assertEqual([d[:12] for d in sent], [b"SIP/2.0 400 "])

    def test_bare_cr_in_header(self):
        """A bare CR inside a copied header (To): the 400 cannot carry it,
        so the request is dropped without an exception."""
        sent: list = []
        protocol = _udp_protocol(self.core, sent)
        protocol.datagramReceived(
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKcr\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\rX\r\nCall-ID: cr\r\nCSeq: 1 OPTIONS\r\n\r\n",
            ("10.0.0.9", 5060),
        )
        self.assertEqual(sent, [])
        self.assertEqual(self.core.counters["parse_errors"], 1)
