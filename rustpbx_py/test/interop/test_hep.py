"""
HEP export with real traffic: SIPp registers and calls through a running
PBX whose SIP is exported over HEP3 (UDP, then TCP) to a collector in the
test; every packet is decoded by hep-js, sipcapture's own HEP library for
Node.js (an implementation independent of ours), and must carry the SIP
message, its Call-ID as correlation id, the addresses, capture id and
password.
"""

from __future__ import annotations

import json
import os
import re
import struct

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from rustpbx_py.protocols.hep import HepExporter
from rustpbx_py.test.interop.jssip import JS_DIR, NODE_MODULES, require_js
from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool, run_tool, start_pbx_toml


class _Collector(protocol.DatagramProtocol):
    def __init__(self):
        self.packets = []

    def datagramReceived(self, data, addr):
        self.packets.append(data)


class _TcpCollector(protocol.Protocol):
    def dataReceived(self, data):
        self.factory.stream += data


class HepInteropTests(SippMixin, TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.node = require_js()
        if not os.path.exists(os.path.join(NODE_MODULES, "hep-js", "package.json")):
            from twisted.trial.unittest import SkipTest

            raise SkipTest(f"hep-js is not installed in {NODE_MODULES} (make test runs npm ci there)")
        self.sipp = require_tool("sipp")
        self.pbx = yield start_pbx_toml(self, call_pbx_toml())
        self.port = self.pbx.ports["UDP"]

    @defer.inlineCallbacks
    def decode(self, packets):
        """Every packet through hep-js."""
        stdin = "".join(p.hex() + "\n" for p in packets).encode()
        out, err, code = yield run_tool([self.node, os.path.join(JS_DIR, "hep_decode.js")], stdin=stdin, cwd=JS_DIR)
        self.assertEqual(code, 0, err.decode("utf-8", "replace"))
        return [json.loads(line) for line in out.decode().splitlines()]

    @defer.inlineCallbacks
    def traffic(self):
        """SIPp registers 1002 and calls it: REGISTER/401/200, INVITE/407,
        INVITE/100/180/200/ACK both legs, BYE/200 both legs."""
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)
        callee = self.sipp_run("call_uas.xml", callee_port, ["-m", "1"], remote=False)
        caller_port = free_udp_port()
        out, err, code = yield self.sipp_run("call_uac.xml", caller_port, ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"])
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        return callee_port, caller_port

    def check(self, decoded, exporter, callee_port, caller_port):
        self.assertNotIn(False, decoded, "hep-js could not decode a packet")
        self.assertEqual(len(decoded), exporter.sent)
        self.assertEqual(exporter.dropped, 0)
        pbx = ("127.0.0.1", self.port)
        peers = set()
        methods = []
        for packet in decoded:
            info = packet["rcinfo"]
            self.assertEqual((info["protocolFamily"], info["protocol"], info["payloadType"]), (2, 17, 1))
            self.assertEqual((info["captureId"], info["capturePass"], info["hepNodeName"]), (2001, "homer-pw", "pbx-test"))
            src, dst = (info["srcIp"], info["srcPort"]), (info["dstIp"], info["dstPort"])
            self.assertIn(pbx, (src, dst))
            peers.add(dst if src == pbx else src)
            payload = packet["payload"]
            call_id = [line.split(":", 1)[1].strip() for line in payload.split("\r\n") if line.lower().startswith("call-id:")][0]
            self.assertEqual(info["correlation_id"], call_id)
            first = payload.split("\r\n", 1)[0]
            methods.append(("out" if src == pbx else "in", first.split(" ")[1] if first.startswith("SIP/2.0") else first.split(" ")[0]))
        self.assertEqual(peers, {("127.0.0.1", callee_port), ("127.0.0.1", caller_port)})
        for expected in [("in", "REGISTER"), ("out", "401"), ("in", "INVITE"), ("out", "407"), ("out", "INVITE"), ("in", "180"),
                         ("out", "180"), ("in", "200"), ("out", "200"), ("in", "ACK"), ("out", "ACK"), ("in", "BYE"), ("out", "BYE")]:
            self.assertIn(expected, methods)

    @defer.inlineCallbacks
    def test_udp(self):
        collector = _Collector()
        listening = reactor.listenUDP(0, collector, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        exporter = HepExporter(reactor, self.pbx.core, "127.0.0.1", listening.getHost().port, capture_id=2001, password="homer-pw", node_name="pbx-test")
        yield exporter.start()
        self.addCleanup(exporter.stop)
        callee_port, caller_port = yield self.traffic()
        # Let the last datagrams arrive.
        for _ in range(50):
            if len(collector.packets) >= exporter.sent:
                break
            yield _sleep(0.05)
        decoded = yield self.decode(collector.packets)
        self.check(decoded, exporter, callee_port, caller_port)

    @defer.inlineCallbacks
    def test_tcp(self):
        factory = protocol.ServerFactory.forProtocol(_TcpCollector)
        factory.stream = b""
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        exporter = HepExporter(reactor, self.pbx.core, "127.0.0.1", listening.getHost().port, transport="tcp",
                               capture_id=2001, password="homer-pw", node_name="pbx-test")
        yield exporter.start()
        yield exporter._connected
        self.addCleanup(exporter.stop)
        callee_port, caller_port = yield self.traffic()
        packets = []
        for _ in range(50):
            stream, packets = factory.stream, []
            while len(stream) >= 6:
                (length,) = struct.unpack("!H", stream[4:6])
                packets.append(stream[:length])
                stream = stream[length:]
            if len(packets) >= exporter.sent:
                break
            yield _sleep(0.05)
        decoded = yield self.decode(packets)
        self.check(decoded, exporter, callee_port, caller_port)


def _sleep(seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


class SngrepTests(SippMixin, TestCase):
    """sngrep (Debian's, built with EEP/HEP) as the capture server: it
    takes the PBX's HEP packets only with the right password and groups
    the SIP messages they carry into dialogs by Call-ID.  It reads an
    empty pcap file instead of sniffing, so all it sees comes over HEP."""

    timeout = 120

    @defer.inlineCallbacks
    def test_sngrep_receives(self):
        sngrep = require_tool("sngrep")
        self.sipp = require_tool("sipp")
        hep_port = free_udp_port()
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        rc = os.path.join(workdir, "sngreprc")
        with open(rc, "w") as f:
            f.write("set eep.listen.pass homer-pw\n")
        empty = os.path.join(workdir, "empty.pcap")
        with open(empty, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        done: defer.Deferred = defer.Deferred()
        from rustpbx_py.test.interop.support import _Collector as Output

        output = Output(done, None)
        args = [sngrep, "-N", "-f", rc, "-I", empty, "-L", f"udp:127.0.0.1:{hep_port}"]
        process = reactor.spawnProcess(output, sngrep, args, env=dict(os.environ), path=workdir)
        self.addCleanup(lambda: None if done.called else (process.signalProcess("KILL"), done)[1])
        yield self._bound(hep_port)

        self.pbx = yield start_pbx_toml(
            self,
            call_pbx_toml(
                'addons = ["monitor"]',
                f'[monitor]\nhep_target = "127.0.0.1:{hep_port}"\nhep_password = "homer-pw"\nhep_capture_id = 2001\n',
            ),
        )
        self.port = self.pbx.ports["UDP"]
        (addon,) = self.pbx.addons
        exporter = addon.hep
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)
        callee = self.sipp_run("call_uas.xml", callee_port, ["-m", "1"], remote=False)
        out, err, code = yield self.sipp_run("call_uac.xml", free_udp_port(), ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"])
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        yield callee
        # A packet with a wrong password is refused by sngrep.
        from rustpbx_py.protocols.hep import encode

        message = (
            b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKintruder\r\n"
            b"From: <sip:a@127.0.0.9>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: intruder\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        intruder = encode(message, ("127.0.0.9", 5060), ("127.0.0.1", 5060), reactor.seconds(), 1, password="wrong")
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(intruder, ("127.0.0.1", hep_port))
        s.close()
        yield _sleep(1.5)
        process.signalProcess("TERM")
        out, err, code = yield done
        counts = re.findall(rb"Dialog count: (\d+)", out)
        self.assertTrue(counts, (out + err)[-2000:])
        # The REGISTER, the caller's INVITE and the PBX's INVITE to 1002
        # (each its own Call-ID); not the intruder's OPTIONS.
        self.assertEqual(int(counts[-1]), 3)
        self.assertGreater(exporter.sent, 15)
        self.assertEqual(exporter.dropped, 0)

    @defer.inlineCallbacks
    def _bound(self, port):
        """Wait until something (sngrep) listens on UDP C{port}."""
        import socket

        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
            finally:
                s.close()
            yield _sleep(0.05)
        self.fail("sngrep did not start listening")
