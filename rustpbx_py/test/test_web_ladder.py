"""
L{rustpbx_py.web.ladder} (the SIP flow ladder) and L{rustpbx_py.web.chart}
(the dashboard's calls chart): the SVG is well-formed XML, has a column per
endpoint and an arrow per message going the right way, escapes what the
phones wrote, and links each arrow to its message.  The flow is a real
call's, recorded by the B2BUA on the sip_phones bench.
"""

from __future__ import annotations

from typing import List
from xml.etree import ElementTree

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.test.sip_phones import Network, Phone
from rustpbx_py.test.test_status import USERS
from rustpbx_py.web import chart, ladder
from rustpbx_py.web.history import HourCount

NS = {"svg": ladder.SVG_NS}


def recorded_call() -> tuple:
    """The SIP flow of alice calling bob for 3 s through the real B2BUA."""
    clock = task.Clock()
    clock.advance(1_700_000_000)
    net = Network(clock, realms=["example.com"], user_backends=USERS)
    alice = Phone(net, "alice", "wonderland", ("198.51.100.10", 5062), ("10.0.0.10", 5060))
    bob = Phone(net, "bob", "builder", ("198.51.100.20", 5064), ("10.0.0.20", 5060))
    alice.register()
    bob.register()
    clock.advance(0.25)
    alice.call("bob", 3)
    (live,) = net.module("call").calls
    net.advance(4)
    net.stop()
    return live.record.sip_flow.items, live.record


def parse(tag) -> ElementTree.Element:
    return ElementTree.fromstring(ladder.render(tag))


class LadderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.items, self.record = recorded_call()

    def test_columns(self) -> None:
        """Caller's address on the left, the PBX in the middle, the callee's on the right."""
        columns = ladder.layout_columns(ladder.read_flow(self.items), "alice@example.com", "bob@example.com")
        self.assertEqual([c.subtitle for c in columns], ["198.51.100.10:5062", "B2BUA", "198.51.100.20:5064"])
        self.assertEqual(columns[0].title, "caller alice@example.com")
        self.assertEqual(columns[2].title, "callee bob@example.com")

    def test_labels(self) -> None:
        """Requests by method, responses by status and reason, (SDP) when they carry one; the media note kept."""
        labels = [(m.leg, m.direction, m.label, m.kind) for m in ladder.read_flow(self.items)]
        self.assertEqual(labels[0], ("a", "in", "INVITE (SDP)", "request"))
        self.assertEqual(labels[1], ("a", "out", "100 Trying", "provisional"))
        self.assertIn(("b", "in", "200 OK (SDP)", "success"), labels)
        self.assertIn(("a", "out", "200 OK (SDP)", "success"), labels)
        self.assertEqual([l for l in labels if l[1] == "note"][0][3], "note")
        self.assertEqual(labels[-1][:3], ("b", "in", "200 OK"))
        self.assertEqual(ladder.read_flow(self.items)[-1].cseq.split()[1], "BYE")

    def test_svg(self) -> None:
        """
        One link per message to #msg-N, each arrow drawn from the sender's
        column to the receiver's, times relative to the first message.
        """
        svg = parse(ladder.ladder_svg(self.items, self.record.caller, self.record.callee))
        self.assertEqual(svg.tag, f"{{{ladder.SVG_NS}}}svg")
        links = svg.findall("svg:a", NS)
        self.assertEqual([a.get("href") for a in links], [f"#msg-{i}" for i in range(len(self.items))])
        messages = ladder.read_flow(self.items)
        caller_x, pbx_x, callee_x = (ladder.TIME_WIDTH + ladder.COLUMN_WIDTH // 2 + i * ladder.COLUMN_WIDTH
                                     for i in range(3))
        for link, m in zip(links, messages):
            title = link.find("svg:g/svg:title", NS).text
            texts = [t.text for t in link.findall("svg:g/svg:text", NS)]
            if m.kind == "note":
                self.assertTrue(title.startswith("media: "))
                continue
            self.assertEqual(title, m.first_line)
            line = link.find("svg:g/svg:line", NS)
            x1, x2 = int(line.get("x1")), int(line.get("x2"))
            peer = caller_x if m.leg == "a" else callee_x
            self.assertEqual((x1, x2), (peer, pbx_x) if m.direction == "in" else (pbx_x, peer))
            self.assertIn(m.label, texts)
        bye = [link for link, m in zip(links, messages) if m.label == "BYE"][0]
        self.assertIn("+3.000", [t.text for t in bye.findall("svg:g/svg:text", NS)])

    def test_escaped(self) -> None:
        """What a phone wrote (a hostile reason phrase, a note) is text in the SVG, never markup."""
        items = [
            {"time": 1.0, "leg": "a", "direction": "in", "peer": "192.0.2.1:5060",
             "message": "INVITE sip:x@y SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"},
            {"time": 1.5, "leg": "a", "direction": "out", "peer": "192.0.2.1:5060",
             "message": "SIP/2.0 486 <script>alert(1)</script>\r\n\r\n"},
            {"time": 2.0, "leg": "media", "direction": "note", "peer": "", "message": "media: a & b <c>"},
            "not an item",
        ]
        text = ladder.render(ladder.ladder_svg(items, "<img>", "")).decode()
        self.assertNotIn("<script>", text)
        self.assertIn("&lt;script&gt;", text)
        self.assertNotIn("<img>", text)
        parse(ladder.ladder_svg(items))
        details = ladder.render(ladder.flow_details(items)).decode()
        self.assertNotIn("<script>", details)

    def test_empty(self) -> None:
        """A record without a flow draws the PBX column and says so."""
        svg = parse(ladder.ladder_svg([]))
        self.assertEqual(svg.findall("svg:a", NS), [])
        self.assertIn("no SIP messages were kept for this call", ladder.render(ladder.ladder_svg(None)).decode())

    def test_forks(self) -> None:
        """Each address the B side reached gets its own column, numbered."""
        items = [
            {"time": 0, "leg": "a", "direction": "in", "peer": "192.0.2.1:5060", "message": "INVITE sip:b@x SIP/2.0\r\n\r\n"},
            {"time": 0, "leg": "b", "direction": "out", "peer": "192.0.2.2:5060", "message": "INVITE sip:b@p1 SIP/2.0\r\n\r\n"},
            {"time": 0, "leg": "b", "direction": "out", "peer": "192.0.2.3:5070", "message": "INVITE sip:b@p2 SIP/2.0\r\n\r\n"},
        ]
        columns = ladder.layout_columns(ladder.read_flow(items))
        self.assertEqual([c.title for c in columns], ["caller", "rustpbx_py", "callee 1", "callee 2"])

    def test_details(self) -> None:
        """Each message is a <details id="msg-N"> holding its whole text."""
        html = ladder.render(ladder.flow_details(self.items)).decode()
        root = ElementTree.fromstring(html)
        entries = root.findall("details")
        self.assertEqual([d.get("id") for d in entries], [f"msg-{i}" for i in range(len(self.items))])
        # (An XML parser reads CRLF as LF.)
        self.assertEqual(entries[0].find("pre").text, self.items[0]["message"].replace("\r\n", "\n"))
        self.assertIn("INVITE (SDP)", "".join(entries[0].find("summary").itertext()))

    def test_document(self) -> None:
        """The standalone SVG document parses as XML."""
        data = ladder.svg_document(self.items)
        self.assertTrue(data.startswith(b"<?xml"))
        ElementTree.fromstring(data)


class ChartTests(SynchronousTestCase):
    def test_bars(self) -> None:
        """
        One bar group per hour, heights scaled to the busiest hour, the
        failed part on top in its own colour, figures in each tooltip.
        """
        hours: List[HourCount] = [HourCount(3600.0 * i) for i in range(24)]
        hours[5] = HourCount(5 * 3600.0, calls=10, failed=4)
        hours[23] = HourCount(23 * 3600.0, calls=5, failed=0)
        svg = parse(chart.calls_chart(hours))
        groups = svg.findall("svg:g", NS)
        self.assertEqual(len(groups), 24)
        self.assertEqual(groups[5].find("svg:title", NS).text, "05:00: 10 calls, 4 failed")
        ok = groups[5].find("svg:rect[@class='chart-calls']", NS)
        failed = groups[5].find("svg:rect[@class='chart-failed']", NS)
        plot = chart.HEIGHT - chart.TOP - chart.BOTTOM
        self.assertAlmostEqual(float(ok.get("height")), plot * 0.6, places=0)
        self.assertAlmostEqual(float(failed.get("height")), plot * 0.4, places=0)
        self.assertAlmostEqual(float(failed.get("y")) + float(failed.get("height")), float(ok.get("y")), places=0)
        last = groups[23].find("svg:rect[@class='chart-calls']", NS)
        self.assertAlmostEqual(float(last.get("height")), plot * 0.5, places=0)
        self.assertIsNone(groups[0].find("svg:rect[@class='chart-calls']", NS))
        labels = [t.text for t in svg.findall("svg:text", NS)]
        self.assertIn("10", labels)
        self.assertEqual([l for l in labels if l.endswith(":00")], ["00:00", "06:00", "12:00", "18:00"])

    def test_no_calls(self) -> None:
        """A quiet day draws an empty chart with a scale of 1."""
        svg = parse(chart.calls_chart([HourCount(3600.0 * i) for i in range(24)]))
        self.assertEqual(svg.findall("svg:g/svg:rect[@class='chart-calls']", NS), [])
