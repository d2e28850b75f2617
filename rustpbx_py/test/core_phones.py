# -*- test-case-name: rustpbx_py.test.test_outside -*-
"""
Phones on the wire of a real L{SipCore}: every message goes in as bytes
through the core, its transaction layer and module pipeline (call and
presence modules), on a L{task.Clock}; what the PBX sends to a phone is
parsed back from the bytes it wrote on that phone's flow.

Only the wire (flows) and the clock are doubles, as the style guide asks:
the B2BUA, the relays and the presence agent run as in production.
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Tuple

from twisted.internet import task

from rustpbx_py.config import parse_config_text
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.proxy import SipCore
from rustpbx_py.sip.message import Request, Response, parse_message
from rustpbx_py.test.core_wire import ModuleContext, phone_answer, phone_request

BASE = """
[proxy]
addr = "127.0.0.1"
realms = ["example.com"]
# The phones' SDP names 192.0.2.9 whatever their source: under the default
# "auto" that is a phone behind NAT, whose media the relay would anchor.
media_proxy = "none"
"""

_counter = itertools.count(1)


class WireFlow:
    """A UDP flow to one phone; what the PBX sends lands in the phone's inbox."""

    transport = "UDP"
    reliable = False
    connected = True

    def __init__(self, phone: "Phone", remote: Tuple[str, int]) -> None:
        self.phone = phone
        self.remote = remote
        self.local = ("127.0.0.1", 5060)
        self.id = f"UDP:{remote[0]}:{remote[1]}"

    def send(self, data: bytes) -> None:
        self.phone.inbox.append(parse_message(data))

    def to(self, remote):
        return self


class Binding:
    """A registration as the locator returns it."""

    def __init__(self, aor: str, contact: str, flow: WireFlow) -> None:
        self.aor = aor
        self.contact = contact
        self.path: Tuple[str, ...] = ()
        self.flow = flow
        self.destination = ("UDP", flow.remote[0], flow.remote[1])

    def live_flow(self, transports):
        return self.flow


class Locator:
    def __init__(self) -> None:
        self.bindings: dict = {}
        self.observers: list = []

    def lookup(self, aor: str):
        return list(self.bindings.get(aor, ()))


class Users:
    """A user backend that knows some names (synchronous, like memory)."""

    def __init__(self, names) -> None:
        self.names = set(names)

    def get_user(self, username: str, realm: str):
        return username if username in self.names else None


class Phone:
    """One SIP endpoint: sends requests into the core, answers what it gets."""

    def __init__(self, pbx: "CorePbx", user: str, port: int) -> None:
        self.pbx = pbx
        self.user = user
        self.host = "192.0.2.%d" % (port % 200 + 20)
        self.port = 5060
        self.flow = WireFlow(self, (self.host, self.port))
        self.inbox: List = []
        self.answered: dict = {}
        self.contact = f"<sip:{user}@{self.host}:{self.port}>"

    def register(self) -> "Phone":
        locator = self.pbx.locator
        aor = f"{self.user}@example.com"
        first = not locator.bindings.get(aor)
        locator.bindings.setdefault(aor, []).append(Binding(aor, self.contact.strip("<>"), self.flow))
        if first:
            for observer in locator.observers:
                observer(aor, True)
        return self

    def request(
        self,
        method: str,
        uri: str,
        to: Optional[str] = None,
        headers=(),
        body: bytes = b"",
        call_id: Optional[str] = None,
        from_tag: Optional[str] = None,
        cseq: int = 1,
    ) -> Request:
        """Send a new request to the PBX; returns it (its answer arrives in the inbox)."""
        n = next(_counter)
        req = phone_request(
            method,
            uri,
            via=f"SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{self.user}{n};rport",
            from_=f"<sip:{self.user}@example.com>;tag={from_tag or self.user + str(n)}",
            to=to or f"<{uri}>",
            call_id=call_id or f"{self.user}-{n}@{self.host}",
            cseq=cseq,
            contact=self.contact,
            headers=headers,
            body=body,
        )
        self.send(req)
        return req

    def send(self, message) -> None:
        self.pbx.core.message_received(parse_message(message.to_bytes()), self.flow)

    def answer(self, request: Request, status: int, reason: str = "", headers=(), body: bytes = b"", to_tag: str = "") -> Response:
        """Answer a request the PBX sent us."""
        response = phone_answer(request, status, reason, headers, body, to_tag=to_tag or (self.user + "tag"))
        self.answered[request.call_id] = response.get("to")
        self.send(response)
        return response

    def take(self, kind) -> List:
        """Remove and return the received requests of method C{kind} (str), or responses (int status)."""
        found = []
        rest = []
        for m in self.inbox:
            hit = (m.is_request and m.method == kind) if isinstance(kind, str) else (not m.is_request and (kind == 0 or m.status == kind))
            (found if hit else rest).append(m)
        self.inbox = rest
        return found

    def responses(self) -> List[int]:
        return [m.status for m in self.inbox if not m.is_request]

    def requests(self, method: Optional[str] = None) -> List[Request]:
        return [m for m in self.inbox if m.is_request and (method is None or m.method == method)]


class PhoneDialog:
    """A phone's side of a dialog with the PBX, to send in-dialog requests."""

    def __init__(self, phone: Phone, call_id: str, local: str, remote: str, cseq: int) -> None:
        self.phone = phone
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.cseq = cseq

    def request(self, method: str, headers=(), body: bytes = b"", cseq: Optional[int] = None) -> Request:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        phone = self.phone
        n = next(_counter)
        req = phone_request(
            method,
            "sip:pbx@127.0.0.1:5060",
            via=f"SIP/2.0/UDP {phone.host}:{phone.port};branch=z9hG4bK{phone.user}d{n};rport",
            from_=self.local,
            to=self.remote,
            call_id=self.call_id,
            cseq=cseq,
            contact=phone.contact if method not in ("ACK", "BYE") else None,
            headers=headers,
            body=body,
        )
        phone.send(req)
        return req

    @property
    def local_tag(self) -> str:
        from rustpbx_py.call.dialog import tag_of

        return tag_of(self.local)

    @property
    def remote_tag(self) -> str:
        from rustpbx_py.call.dialog import tag_of

        return tag_of(self.remote)


SDP = b"v=0\r\no=x 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def place_call(caller: Phone, callee: Phone, uri: Optional[str] = None, headers=()):
    """
    caller calls callee through the PBX, callee answers, caller ACKs.
    Returns (caller's dialog, callee's dialog, the INVITE callee got).
    """
    invite = caller.request("INVITE", uri or f"sip:{callee.user}@example.com", headers=[("Content-Type", "application/sdp")] + list(headers), body=SDP)
    (got,) = callee.take("INVITE")
    callee.answer(got, 200, "OK", [("Contact", callee.contact)], SDP, to_tag=f"{callee.user}-{next(_counter)}")
    oks = [r for r in caller.take(0) if r.status == 200]
    ok = oks[-1]
    a = PhoneDialog(caller, invite.call_id, invite.get("from"), ok.get("to"), 1)
    a.request("ACK", cseq=1)
    b = PhoneDialog(callee, got.call_id, callee.answered[got.call_id], got.get("from"), 0)
    return a, b, got


class CorePbx:
    """
    A real core with the call and presence modules on a clock, a locator
    of fake bindings and a user backend knowing C{users}.
    """

    def __init__(self, toml: str = "", users=("alice", "bob", "carol", "dave")) -> None:
        from rustpbx_py.modules.call import CallModule
        from rustpbx_py.modules.presence import PresenceModule

        self.clock = task.Clock()
        self.config = parse_config_text(BASE + toml)
        self.core = SipCore(self.config, self.clock)
        self.locator = Locator()
        self.context = ModuleContext(self.config, self.clock, self.core, self.locator, Users(users))
        self.call = CallModule(self.context)
        self.call.records = None
        self.presence = PresenceModule(self.context)
        self.context.modules = [self.call, self.presence]
        self.core.pipeline = Pipeline(self.context.modules)
        self.call.start()
        self.presence.start()
        self.core.accepting = True
        self._ports = itertools.count(1)

    def phone(self, user: str, register: bool = True) -> Phone:
        phone = Phone(self, user, next(self._ports))
        return phone.register() if register else phone

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def stop(self) -> None:
        self.call.stop()
        self.presence.stop()
        self.core.shutdown()
