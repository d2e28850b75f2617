# -*- test-case-name: rustpbx_py.test.test_acl_office -*-
"""
A whole PBX on a L{task.Clock} -- the real core, transaction layer, UDP
protocol and the configured modules -- and scripted UDP phones that talk to
it, for tests of behaviour that only shows with many clients at once
(an office behind one NAT address, a scanner beside it).

The only doubles are the UDP socket (L{MemoryUDPSocket} keeps datagrams;
L{Network.pump} delivers them) and the clock.  Phones are small scripted
user agents: they register (answering the 401), send OPTIONS and CRLF
keep-alives, place calls (answering the 407, ACKing), answer calls and
hang up, and count what they got back.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import task

from rustpbx_py.config import default_config
from rustpbx_py.interfaces import IProxyModuleFactory
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.protocols.udp import SipDatagramProtocol
from rustpbx_py.proxy import SipCore
from rustpbx_py.sip import digest
from rustpbx_py.sip.headers import parse_auth_params
from rustpbx_py.sip.message import Request, Response, parse_message
from rustpbx_py.test.core_wire import MemoryUDPSocket, branch_of, phone_request

Address = Tuple[str, int]

PBX_ADDRESS: Address = ("192.0.2.1", 5060)
SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


class Network:
    """
    The PBX and the phones: datagrams from the PBX are delivered to the
    phone at the destination address by L{pump}; a phone's datagrams go
    straight into the PBX's UDP protocol.
    """

    def __init__(self, clock: task.Clock, config: Any = None, **proxy: Any) -> None:
        """
        @param config: a whole L{rustpbx_py.config.Config} (e.g. loaded from
            a file); else one of defaults with the C{proxy} keys.
        """
        from rustpbx_py.call.trunks import TrunkSet
        from rustpbx_py.server import ServerContext, find_factories
        from rustpbx_py.users import build_user_backends

        self.clock = clock
        proxy.setdefault("udp_port", 0)
        proxy.setdefault("media_proxy", "none")
        config = self.config = config if config is not None else default_config(**proxy)
        core = self.core = SipCore(config, clock)
        #: The datagrams the PBX sent, not yet delivered by L{pump}.
        self.outbox: List[Tuple[bytes, Address]] = []
        self.socket = MemoryUDPSocket(PBX_ADDRESS, lambda data, addr: self.outbox.append((data, addr)))
        self.udp = SipDatagramProtocol(core)
        self.udp.makeConnection(self.socket)
        core.transports.udp.append(self.udp)
        users = build_user_backends(config, None, clock)
        context = self.context = ServerContext(config, clock, None, core, users)
        context.trunks = TrunkSet(config.proxy.trunks, clock)
        factories = find_factories(IProxyModuleFactory)
        self.modules = []
        for name in config.proxy.modules:
            module = factories[name].build(context)
            self.modules.append(module)
            if getattr(module, "registry", None) is not None and context.locator is None:
                context.locator = module.registry
        context.modules = self.modules
        #: The server context the modules were built with (for
        #: L{rustpbx_py.status} and the web console's tests).
        self.context = context
        core.pipeline = Pipeline(self.modules)
        for module in self.modules:
            module.start()
        core.accepting = True
        self.phones: Dict[Address, "Phone"] = {}
        self.lost: List[Tuple[bytes, Address]] = []

    def module(self, name: str) -> Any:
        return next(m for m in self.modules if m.name == name)

    def stop(self) -> None:
        for module in reversed(self.modules):
            module.stop()
        self.core.shutdown()

    def send(self, data: bytes, source: Address) -> None:
        """A datagram from C{source} to the PBX, then everything it causes."""
        self.udp.datagramReceived(data, source)
        self.pump()

    def pump(self) -> None:
        sent = self.outbox
        while sent:
            data, addr = sent.pop(0)
            phone = self.phones.get(addr)
            if phone is None:
                self.lost.append((data, addr))
                continue
            phone.received(parse_message(data))

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let C{seconds} pass in steps, delivering what each step sends."""
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            self.pump()


_counter = itertools.count(1)


class Phone:
    """
    A scripted SIP phone at public address C{public} (its NAT's), private
    address C{private}, user C{user}/C{password} in C{domain}.

    @ivar answers: (method, status) of every final response it got.
    """

    def __init__(
        self,
        net: Network,
        user: str,
        password: Optional[str],
        public: Address,
        private: Address = ("10.0.0.2", 5060),
        domain: str = "example.com",
        user_agent: str = "OfficePhone/1.0",
    ) -> None:
        self.net = net
        self.user = user
        self.password = password
        self.public = public
        self.private = private
        self.domain = domain
        self.user_agent = user_agent
        self.cseq = 0
        self.answers: List[Tuple[str, int]] = []
        self.sent: Dict[str, int] = {}
        self.calls_answered = 0
        self.calls_established = 0
        self.calls_ended = 0
        self._pending: Dict[Tuple[str, int], Callable[[Response], None]] = {}
        self._incoming: Dict[str, Tuple[Request, str]] = {}  # Call-ID -> (INVITE, our tag)
        net.phones[public] = self

    # -- sending ---------------------------------------------------------------

    def _request(
        self,
        method: str,
        uri: str,
        to: str,
        call_id: str,
        cseq: int,
        from_tag: str,
        headers: Tuple[Tuple[str, str], ...] = (),
        body: bytes = b"",
        branch: Optional[str] = None,
    ) -> Request:
        host, port = self.private
        return phone_request(
            method,
            uri,
            via=f"SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + str(next(_counter))};rport",
            from_=f"<sip:{self.user}@{self.domain}>;tag={from_tag}",
            to=to,
            call_id=call_id,
            cseq=cseq,
            contact=f"<sip:{self.user}@{host}:{port}>",
            user_agent=self.user_agent,
            headers=tuple(headers) + ((("Content-Type", "application/sdp"),) if body else ()),
            body=body,
        )

    def transmit(self, message: Any) -> None:
        if isinstance(message, Request):
            self.sent[message.method] = self.sent.get(message.method, 0) + 1
        self.net.send(message.to_bytes(), self.public)

    def send(self, req: Request, on_final: Callable[[Response], None]) -> None:
        cseq, method = req.cseq
        self._pending[(req.call_id, cseq)] = on_final
        self.transmit(req)

    def crlf(self) -> None:
        """A CRLF keep-alive (RFC 5626 3.5.1)."""
        self.net.send(b"\r\n\r\n", self.public)

    def _authorization(self, response: Response, method: str, uri: str, password: Optional[str] = None) -> Tuple[str, str]:
        header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        _, params = parse_auth_params(response.get(header))
        algorithm = params.get("algorithm", "MD5")
        ha1 = digest.compute_ha1(algorithm, self.user, params["realm"], password or self.password or "")
        cnonce = f"c{next(_counter)}"
        value = digest.compute_response(algorithm, ha1, method, uri, params["nonce"], "00000001", cnonce, "auth")
        name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        return name, (
            f'Digest username="{self.user}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
            f'response="{value}", algorithm={algorithm}, qop=auth, nc=00000001, cnonce="{cnonce}"'
        )

    # -- what a phone does -----------------------------------------------------

    def register(self, expires: int = 120, password: Optional[str] = None) -> None:
        """REGISTER, answering one 401."""
        call_id = f"reg-{self.user}-{self.public[1]}"
        uri = f"sip:{self.domain}"
        to = f"<sip:{self.user}@{self.domain}>"
        headers = (("Expires", str(expires)),)

        def final(response: Response, challenged: bool = False) -> None:
            self.answers.append(("REGISTER", response.status))
            if response.status == 401 and not challenged:
                self.cseq += 1
                auth = self._authorization(response, "REGISTER", uri, password)
                req = self._request("REGISTER", uri, to, call_id, self.cseq, "r" + self.user, headers + (auth,))
                self.send(req, lambda r: final(r, True))

        self.cseq += 1
        self.send(self._request("REGISTER", uri, to, call_id, self.cseq, "r" + self.user, headers), final)

    def options(self, uri: Optional[str] = None) -> None:
        """OPTIONS to the PBX (a keep-alive) or to C{uri}."""
        self.cseq += 1
        uri = uri or f"sip:{self.domain}"
        req = self._request("OPTIONS", uri, f"<{uri}>", f"opt-{next(_counter)}", self.cseq, f"o{next(_counter)}")
        self.send(req, lambda r: self.answers.append(("OPTIONS", r.status)))

    def call(self, callee: str, duration: float) -> None:
        """INVITE C{callee} (answering the 407), ACK the 2xx, BYE after C{duration}."""
        uri = f"sip:{callee}@{self.domain}"
        call_id = f"call-{next(_counter)}@{self.private[0]}"
        tag = f"t{next(_counter)}"

        def final(response: Response, challenged: bool = False) -> None:
            self.answers.append(("INVITE", response.status))
            cseq = response.cseq[0]
            if response.status >= 300:
                # ACK for a non-2xx: same branch, To with the response's tag.
                ack = self._request("ACK", uri, response.get("to"), call_id, cseq, tag, branch=branch_of(response))
                self.transmit(ack)
                if response.status == 407 and not challenged:
                    self.cseq += 1
                    auth = self._authorization(response, "INVITE", uri)
                    req = self._request("INVITE", uri, f"<{uri}>", call_id, self.cseq, tag, (auth,), SDP)
                    self.send(req, lambda r: final(r, True))
                return
            self.calls_established += 1
            to = response.get("to")
            self.transmit(self._request("ACK", uri, to, call_id, cseq, tag))
            self.net.clock.callLater(duration, self._bye, uri, to, call_id, tag)

        self.cseq += 1
        self.send(self._request("INVITE", uri, f"<{uri}>", call_id, self.cseq, tag, body=SDP), final)

    def _bye(self, uri: str, to: str, call_id: str, tag: str) -> None:
        self.cseq += 1

        def final(response: Response) -> None:
            self.answers.append(("BYE", response.status))
            if response.status == 200:
                self.calls_ended += 1

        self.send(self._request("BYE", uri, to, call_id, self.cseq, tag), final)

    # -- receiving -------------------------------------------------------------

    def received(self, message: Any) -> None:
        if isinstance(message, Response):
            if message.status < 200:
                return
            handler = self._pending.pop((message.call_id, message.cseq[0]), None)
            if handler is not None:
                handler(message)
            return
        self._request_received(message)

    def _respond(self, request: Request, status: int, tag: Optional[str] = None, body: bytes = b"") -> None:
        response = Response(status, {180: "Ringing", 200: "OK"}.get(status, ""))
        for via in request.get_all("via"):
            response.add("Via", via)
        response.add("From", request.get("from"))
        to = request.get("to")
        if tag and ";tag=" not in to:
            to += f";tag={tag}"
        response.add("To", to)
        response.add("Call-ID", request.call_id)
        response.add("CSeq", request.get("cseq"))
        if status == 200 and request.method == "INVITE":
            response.add("Contact", f"<sip:{self.user}@{self.private[0]}:{self.private[1]}>")
        if body:
            response.add("Content-Type", "application/sdp")
        response.body = body
        self.transmit(response)

    def _request_received(self, request: Request) -> None:
        method = request.method
        if method == "INVITE":
            known = self._incoming.get(request.call_id)
            tag = known[1] if known else f"a{next(_counter)}"
            if known is None:
                self._incoming[request.call_id] = (request, tag)
                self.calls_answered += 1
                self._respond(request, 180, tag)
            self._respond(request, 200, tag, SDP)
        elif method == "ACK":
            pass
        elif method == "CANCEL":
            self._respond(request, 200)
        else:
            self._respond(request, 200)
