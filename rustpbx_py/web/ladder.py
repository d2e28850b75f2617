# -*- test-case-name: rustpbx_py.test.test_web_ladder -*-
"""
A call's SIP flow drawn as a ladder diagram, the way sngrep shows it: one
column per endpoint (the caller's address on the left, the PBX in the
middle, each callee address the B side reached on the right), one arrow per
message with its method or status, the time on the left, and the media
notes the B2BUA wrote as boxes on the PBX's column.

The input is the C{sip_flow} column of a call record (see
L{rustpbx_py.call.record.SipFlow.items}): C{time}, C{leg} (C{a}, C{b},
C{media}), C{direction} (C{in}, C{out}, C{note}), C{peer} (C{host:port})
and C{message} (the text).  The output is an inline SVG
(L{twisted.web.template.Tag}, so every text is escaped by the flattener)
whose arrows link to C{#msg-N}; L{flow_details} renders the messages those
anchors name, each in a C{<details>} to expand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

from twisted.web.template import Tag, flattenString, tags

SVG_NS = "http://www.w3.org/2000/svg"

#: Layout, in SVG user units (pixels).
TIME_WIDTH = 130
COLUMN_WIDTH = 210
HEADER = 64
ROW = 36
MARGIN = 20

#: Stroke colour per kind of message.
COLOURS = {
    "request": "#1f5fa8",
    "provisional": "#6b6b6b",
    "success": "#2e7d32",
    "failure": "#c62828",
    "note": "#8a6d00",
}

PBX = "pbx"


@dataclass
class FlowMessage:
    """One item of a SIP flow, read for drawing."""

    index: int
    time: float
    leg: str
    direction: str
    peer: str
    text: str
    #: What the arrow says: C{INVITE (SDP)}, C{180 Ringing}, or a note.
    label: str
    #: request, provisional, success, failure or note.
    kind: str
    #: The CSeq header value (C{1 INVITE}), or "".
    cseq: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()


@dataclass
class Column:
    key: str
    title: str
    subtitle: str


def _header(text: str, name: str) -> str:
    """The first value of header C{name} (long or compact form) in a message text."""
    compact = {"content-type": "c", "cseq": "", "call-id": "i"}.get(name, "")
    head = text.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    for line in head.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == name or (compact and key == compact):
            return value.strip()
    return ""


def _has_sdp(text: str) -> bool:
    return _header(text, "content-type").lower().startswith("application/sdp")


def read_flow(items: Optional[Iterable[Dict[str, Any]]]) -> List[FlowMessage]:
    """The items of a C{sip_flow} column as L{FlowMessage}s, in order; an
    item that is not a dict is skipped (a damaged row still draws)."""
    out: List[FlowMessage] = []
    for item in items or ():
        if not isinstance(item, dict):
            continue
        text = str(item.get("message") or "")
        direction = str(item.get("direction") or "")
        index = len(out)
        try:
            when = float(item.get("time") or 0.0)
        except (TypeError, ValueError):
            when = 0.0
        if direction == "note":
            label, kind, cseq = text.strip(), "note", ""
        else:
            first = text.split("\n", 1)[0].strip()
            cseq = _header(text, "cseq")
            if first.startswith("SIP/2.0"):
                parts = first.split(" ", 2)
                code = parts[1] if len(parts) > 1 else "?"
                label = " ".join(parts[1:]) or first
                kind = "provisional" if code.startswith("1") else "success" if code.startswith("2") else "failure"
            else:
                label = first.split(" ", 1)[0] or "?"
                kind = "request"
            if _has_sdp(text):
                label += " (SDP)"
        out.append(FlowMessage(index, when, str(item.get("leg") or ""), direction, str(item.get("peer") or ""),
                               text, label, kind, cseq))
    return out


def layout_columns(messages: Sequence[FlowMessage], caller: str = "", callee: str = "") -> List[Column]:
    """
    The ladder's columns, left to right: every address the caller's side
    used (leg C{a}), the PBX, every address of the callee's side (leg
    C{b}, one per fork or retry), each in order of first appearance.
    """
    left: List[str] = []
    right: List[str] = []
    for m in messages:
        if m.direction == "note":
            continue
        side = left if m.leg == "a" else right
        key = _peer_key(m)
        if key not in left and key not in right:
            side.append(key)
    columns = []
    for n, key in enumerate(left):
        title = "caller" if len(left) == 1 else f"caller {n + 1}"
        columns.append(Column(key, f"{title} {caller}".strip(), key.split("|", 1)[1] or "?"))
    columns.append(Column(PBX, "rustpbx_py", "B2BUA"))
    for n, key in enumerate(right):
        title = "callee" if len(right) == 1 else f"callee {n + 1}"
        columns.append(Column(key, f"{title} {callee}".strip(), key.split("|", 1)[1] or "?"))
    return columns


def _peer_key(m: FlowMessage) -> str:
    return f"{'a' if m.leg == 'a' else 'b'}|{m.peer}"


def _clock(when: float) -> str:
    whole = int(when)
    return time.strftime("%H:%M:%S", time.gmtime(whole)) + f".{int(round((when - whole) * 1000)) % 1000:03d}"


def _shorten(text: str, chars: int) -> str:
    chars = max(chars, 4)
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _el(name: str, children: Iterable[Any] = (), **attributes: Any) -> Tag:
    """An SVG element; attribute names use _ for - (C{font_size})."""
    attrs = {k.rstrip("_").replace("_", "-"): str(v) for k, v in attributes.items() if v is not None}
    return Tag(name, attributes=attrs, children=list(children))


def ladder_svg(items: Optional[Iterable[Dict[str, Any]]], caller: str = "", callee: str = "",
               anchor: str = "msg-") -> Tag:
    """
    The SVG ladder of a call's SIP flow.  Each arrow is a link to
    C{#<anchor><index>} (see L{flow_details}) with the message's first
    line as its tooltip; C{caller} and C{callee} name the end columns.
    """
    messages = read_flow(items)
    columns = layout_columns(messages, caller, callee)
    x_of = {c.key: TIME_WIDTH + COLUMN_WIDTH // 2 + i * COLUMN_WIDTH for i, c in enumerate(columns)}
    width = TIME_WIDTH + len(columns) * COLUMN_WIDTH + MARGIN
    height = HEADER + max(len(messages), 1) * ROW + MARGIN
    start = messages[0].time if messages else 0.0

    defs = _el("defs", [
        _el("marker", [_el("path", d="M0,0 L10,5 L0,10 z", fill=colour)],
            id=f"{anchor}arrow-{kind}", viewBox="0 0 10 10", refX=10, refY=5,
            markerWidth=8, markerHeight=8, orient="auto-start-reverse")
        for kind, colour in COLOURS.items() if kind != "note"
    ])
    body: List[Tag] = [defs, _el("rect", x=0, y=0, width=width, height=height, fill="#ffffff")]
    for c in columns:
        x = x_of[c.key]
        body.append(_el("line", x1=x, y1=HEADER - 8, x2=x, y2=height - MARGIN // 2,
                        stroke="#b0b0b0", stroke_dasharray="4 4"))
        body.append(_el("rect", x=x - COLUMN_WIDTH // 2 + 8, y=8, width=COLUMN_WIDTH - 16, height=HEADER - 20,
                        rx=4, fill="#eef3f8" if c.key == PBX else "#f4f4f4", stroke="#9aa7b4"))
        body.append(_el("text", [_shorten(c.title, 30)], x=x, y=28, text_anchor="middle", font_weight="bold"))
        body.append(_el("text", [_shorten(c.subtitle, 30)], x=x, y=44, text_anchor="middle", font_size=11,
                        fill="#555555"))
    for row, m in enumerate(messages):
        y = HEADER + row * ROW + 14
        group: List[Tag] = [
            _el("title", [m.first_line if m.kind != "note" else m.text]),
            # The whole row takes the click, not only the thin line and text.
            _el("rect", x=0, y=y - 13, width=width, height=ROW - 2, fill="transparent", class_="flow-hit"),
            _el("text", [_clock(m.time)], x=8, y=y, font_size=11, font_family="monospace"),
            _el("text", [f"+{m.time - start:.3f}"], x=8, y=y + 13, font_size=10, font_family="monospace",
                fill="#777777"),
        ]
        colour = COLOURS[m.kind]
        if m.kind == "note":
            x = x_of[PBX]
            box = COLUMN_WIDTH * 2 - 40
            group.append(_el("rect", x=x - box // 2, y=y - 10, width=box, height=20, rx=3,
                             fill="#fff8dc", stroke="#d8c27a"))
            group.append(_el("text", [_shorten(m.label, box // 6)], x=x, y=y + 4, text_anchor="middle",
                             font_size=10, fill=colour))
        else:
            peer_x, pbx_x = x_of[_peer_key(m)], x_of[PBX]
            x1, x2 = (peer_x, pbx_x) if m.direction == "in" else (pbx_x, peer_x)
            group.append(_el("line", x1=x1, y1=y + 6, x2=x2, y2=y + 6, stroke=colour, stroke_width=1.6,
                             marker_end=f"url(#{anchor}arrow-{m.kind})"))
            chars = abs(x2 - x1) // 7
            group.append(_el("text", [_shorten(m.label, chars)], x=(x1 + x2) // 2, y=y + 1, text_anchor="middle",
                             font_size=12, fill=colour))
        body.append(_el("a", [_el("g", group, class_="flow-row flow-" + m.kind)], href=f"#{anchor}{m.index}"))
    if not messages:
        body.append(_el("text", ["no SIP messages were kept for this call"], x=TIME_WIDTH, y=HEADER + 16,
                        fill="#777777"))
    return _el("svg", body, xmlns=SVG_NS, width=width, height=height, viewBox=f"0 0 {width} {height}",
               font_family="sans-serif", font_size=12, class_="sip-flow", role="img",
               aria_label="SIP flow ladder diagram")


def flow_details(items: Optional[Iterable[Dict[str, Any]]], anchor: str = "msg-") -> Tag:
    """
    The messages of a SIP flow, each a C{<details id="msg-N">} whose
    summary says when, which leg, which way and the first line, and whose
    body is the whole message: what the ladder's arrows link to.
    """
    messages = read_flow(items)
    start = messages[0].time if messages else 0.0
    entries = []
    for m in messages:
        arrow = {"in": "\u2192 PBX", "out": "PBX \u2192", "note": "note"}.get(m.direction, m.direction)
        where = f"{m.peer} {arrow}" if m.direction == "in" else f"{arrow} {m.peer}" if m.direction == "out" else arrow
        summary = tags.summary(
            tags.span(_clock(m.time), class_="flow-time"), " ",
            tags.span(f"+{m.time - start:.3f}", class_="flow-delta"), " ",
            tags.span(f"leg {m.leg}", class_="flow-leg"), " ",
            tags.span(where, class_="flow-where"), " ",
            tags.strong(m.label, class_="flow-" + m.kind),
        )
        entries.append(tags.details(summary, tags.pre(m.text), id=f"{anchor}{m.index}", class_="flow-message"))
    return tags.div(*entries, class_="flow-messages")


def render(tag: Tag) -> bytes:
    """Flatten a tag tree that holds no Deferreds (these renderers' output)."""
    out: List[bytes] = []
    failures: List[Any] = []
    flattenString(None, tag).addCallbacks(out.append, failures.append)
    if failures:
        failures[0].raiseException()
    return out[0]


def svg_document(items: Optional[Iterable[Dict[str, Any]]], caller: str = "", callee: str = "") -> bytes:
    """The ladder as a standalone C{image/svg+xml} document."""
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + render(ladder_svg(items, caller, callee))


__all__ = ["ladder_svg", "flow_details", "read_flow", "layout_columns", "svg_document", "render", "FlowMessage"]
