# -*- test-case-name: rustpbx_py.test.test_trunk_health -*-
"""
Trunk health: SIP OPTIONS probing of the trunks with
C{health_check_enabled}, as RustPBX's C{src/proxy/trunk_health.rs} does.

Each such trunk gets an OPTIONS at its C{dest} every
C{health_check_interval_secs} (30 s by default), counted from the end of
the previous probe, so probes never overlap.  A probe succeeds when the
trunk answers 2xx (RustPBX counts nothing else: a 404 or 503 from a
trunk that cannot place calls is a failure too); it fails on a non-2xx
final answer, a transport error, or no final answer within
L{PROBE_TIMEOUT} seconds.  C{health_check_probe_count} failures in a row
(3 by default) mark the trunk down: routes leave it out
(L{rustpbx_py.call.routing.Router}) and try its
C{health_check_fallback_trunk} instead.  The probes go on while it is
down, and the first 2xx marks it up again.

The state lives on the shared L{rustpbx_py.call.trunks.TrunkSet}
(L{TrunkSet.trunk_status}, L{TrunkSet.status_observers}), where routing,
the console and the monitor addon read it.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from rustpbx_py.protocols.transports import TransportError
from rustpbx_py.sip.headers import join_hostport
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.responses import new_call_id, new_tag

__all__ = ["PROBE_TIMEOUT", "TrunkProbe", "TrunkHealthChecker"]

#: How long a probe waits for a final answer (RustPBX: 10 s), seconds.
PROBE_TIMEOUT = 10.0


class TrunkProbe:
    """
    Probes one trunk with OPTIONS and keeps its
    L{rustpbx_py.call.trunks.TrunkHealth} on the trunk set.

    @param locate: () -> Deferred of the RFC 3263 targets of C{dest}; the
        first one is probed (None: C{destination} as written).
    """

    log = Logger()

    def __init__(self, name: str, trunks, core, clock, proxy, locate: Optional[Callable[[], defer.Deferred]] = None) -> None:
        self.name = name
        self.trunks = trunks
        self.core = core
        self.clock = clock
        self.locate = locate
        config = self.config = trunks.get(name)
        self.interval = float(config.health_check_interval_secs)
        self.threshold = int(config.health_check_probe_count)
        self.destination = trunks.destination(name)
        dest_uri = trunks.dest_uri(name)
        self.scheme = dest_uri.scheme
        #: What each round probes: (label, (transport, host, port) or None
        #: for C{dest} itself, located as the trunk's calls are).
        self.targets: List[Tuple[str, Optional[Tuple[str, str, int]]]] = [(join_hostport(dest_uri.host, dest_uri.port), None)]
        self.per_ip = bool(getattr(config, "health_check_per_ip", False))
        if self.per_ip:
            self.targets += per_ip_targets(self.destination, getattr(config, "inbound_hosts", None) or [], self.targets[0][0])
        self.useragent = proxy.useragent
        self.callid_suffix = proxy.callid_suffix
        self.health = trunks.health(name)
        self.running = False
        self.probes = 0
        self._cseq = 0
        self._timer = None
        self._timeout = None
        #: The round in flight: answers to an older one are ignored.
        self._current = 0
        self._sent_at = 0.0
        #: target index -> (answered 2xx, RTT, error) in the current round.
        self._results: Dict[int, Tuple[bool, Optional[float], Optional[str]]] = {}

    @property
    def uri(self) -> str:
        """The Request-URI probing C{dest} (RustPBX's sip:health@dest)."""
        return self._uri(self.targets[0][0])

    def _uri(self, hostport: str) -> str:
        return f"{self.scheme}:health@{hostport}"

    def start(self) -> None:
        """Send the first probe now."""
        self.running = True
        self.health.options = "waiting"
        self._probe()

    def stop(self) -> None:
        self.running = False
        for call in (self._timer, self._timeout):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._timeout = None
        self._current += 1

    # -- one round -----------------------------------------------------------------

    def _probe(self) -> None:
        """One round: an OPTIONS to each target at once (only C{dest} unless
        C{health_check_per_ip})."""
        self._timer = None
        if not self.running:
            return
        self._current += 1
        probe = self._current
        self.probes += 1
        self._results = {}
        self._sent_at = self.clock.seconds()
        self._timeout = self.clock.callLater(PROBE_TIMEOUT, self._timed_out, probe)
        for index, (label, where) in enumerate(self.targets):
            if where is not None:
                d = self.core.resolve(*where)
            elif self.locate is None:
                transport, host, port = self.destination
                d = self.core.resolve(transport, host, port)
            else:
                d = self.locate()
                d.addCallback(self._first_target)
            d.addCallbacks(self._send, self._unreachable, callbackArgs=(probe, index), errbackArgs=(probe, index))
            d.addErrback(self._broken, probe, index)

    def _broken(self, failure, probe: int, index: int) -> None:
        self.log.failure("trunk {trunk}: OPTIONS probe failed", failure, trunk=self.name)
        self._result(probe, index, False, f"OPTIONS probe failed: {failure.getErrorMessage()}")

    def _first_target(self, targets):
        if not targets:
            raise TransportError(f"{self.destination.host} does not resolve")
        target = targets[0]
        host = target.name if target.transport in ("tls", "wss") else target.host
        return self.core.resolve(target.transport, host, target.port)

    def _unreachable(self, failure, probe: int, index: int) -> None:
        if failure.check(TransportError) is None:
            self.log.failure("trunk {trunk}: OPTIONS probe could not be sent", failure, trunk=self.name)
        self._result(probe, index, False, f"cannot reach {self.targets[index][0]}: {failure.getErrorMessage()}")

    def _send(self, flow, probe: int, index: int) -> None:
        if probe != self._current:
            return
        core = self.core
        self._cseq += 1
        uri = self._uri(self.targets[index][0])
        host, port = core.transports.advertised(flow.transport, flow.remote[0])
        request = Request("OPTIONS", uri)
        request.add("Via", core.via_for(flow))
        request.add("Max-Forwards", "70")
        request.add("From", f"<sip:health-check@{join_hostport(host, port)}>;tag={new_tag()}")
        request.add("To", f"<{uri}>")
        request.add("Call-ID", new_call_id(self.callid_suffix))
        request.add("CSeq", f"{self._cseq} OPTIONS")
        request.add("Accept", "application/sdp")
        if self.useragent:
            request.add("User-Agent", self.useragent)
        core.send_request(request, flow, lambda tx, response: self._response(probe, index, response))

    def _response(self, probe: int, index: int, response: Response) -> None:
        if response.status < 200:
            return
        if 200 <= response.status < 300:
            self._result(probe, index, True, None)
        else:
            self._result(probe, index, False, f"OPTIONS answered {response.status} {response.reason}".strip())

    def _result(self, probe: int, index: int, ok: bool, why: Optional[str]) -> None:
        if probe != self._current or not self.running or index in self._results:
            return
        self._results[index] = (ok, self.clock.seconds() - self._sent_at if ok else None, why)
        if len(self._results) == len(self.targets):
            self._end_round(probe)

    def _timed_out(self, probe: int) -> None:
        why = f"no answer to OPTIONS within {PROBE_TIMEOUT:.0f} s"
        for index in range(len(self.targets)):
            self._results.setdefault(index, (False, None, why))
        self._end_round(probe)

    # -- results -----------------------------------------------------------------

    def _end_round(self, probe: int) -> None:
        if probe != self._current or not self.running:
            return
        self._current += 1
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        health = self.health
        health.last_probe = self.clock.seconds()
        self._timer = self.clock.callLater(self.interval, self._probe)
        results = [self._results[i] for i in range(len(self.targets))]
        if self.per_ip:
            health.per_ip = [
                {"target": label, "healthy": ok, "rtt": rtt, "last_error": why}
                for (label, _), (ok, rtt, why) in zip(self.targets, results)
            ]
        rtts = [rtt for ok, rtt, _ in results if ok]
        if rtts:
            # RustPBX: the RTT of the first target that answered.
            health.rtt = rtts[0]
        failed = [(label, why) for (label, _), (ok, _, why) in zip(self.targets, results) if not ok]
        if not failed:
            self._succeeded()
        elif self.per_ip:
            self._failed(f"{failed[0][0]}: {failed[0][1]}")
        else:
            self._failed(failed[0][1] or "OPTIONS failed")

    def _succeeded(self) -> None:
        health = self.health
        health.failures = 0
        health.last_error = None
        health.options = "ok"
        if health.state == "down":
            self.log.info("trunk {trunk}: answers OPTIONS again; it is up", trunk=self.name)
        self.trunks.set_state(self.name, "up")

    def _failed(self, why: str) -> None:
        health = self.health
        health.failures += 1
        health.last_error = why
        health.options = "failed"
        if health.failures >= self.threshold and health.state != "down":
            self.log.warn(
                "trunk {trunk}: marked down after {count} failed OPTIONS probes in a row ({why})",
                trunk=self.name,
                count=health.failures,
                why=why,
            )
            self.trunks.set_state(self.name, "down")


def per_ip_targets(destination, inbound_hosts: List[str], dest_label: str) -> List[Tuple[str, Tuple[str, str, int]]]:
    """
    RustPBX's C{health_check_per_ip} targets besides C{dest}: each
    C{inbound_hosts} entry, with C{dest}'s port when it names none, each
    C{host:port} once (C{dest}'s included).  A network (CIDR) entry is not
    something one can send OPTIONS to and is left out; a single-address
    one (C{/32}, C{/128}) is that address.
    """
    transport, _, default_port = destination
    seen = {dest_label}
    found: List[Tuple[str, Tuple[str, str, int]]] = []
    for text in inbound_hosts:
        target = _inbound_target(str(text), default_port)
        if target is None:
            continue
        host, port = target
        label = join_hostport(host, port)
        if label in seen:
            continue
        seen.add(label)
        found.append((label, (transport, host, port)))
    return found


def _inbound_target(text: str, default_port: int) -> Optional[Tuple[str, int]]:
    t = text.strip().strip("<>")
    for prefix in ("sips:", "sip:"):
        if t.lower().startswith(prefix):
            t = t[len(prefix):]
    t = t.split(";", 1)[0]
    if "/" in t:
        try:
            network = ipaddress.ip_network(t, strict=False)
        except ValueError:
            return None
        if network.num_addresses != 1:
            return None
        return str(network.network_address), default_port
    port = ""
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host = t
    if not host:
        return None
    return host, int(port) if port.isdigit() else default_port


class TrunkHealthChecker:
    """The OPTIONS probes of every enabled trunk with C{health_check_enabled}."""

    def __init__(self, proxy, trunks, core, clock, resolver=None) -> None:
        """
        @param resolver: a L{rustpbx_py.protocols.resolve.SipResolver}: a
            C{dest} given by name is located with RFC 3263 (None: C{dest}
            as written).
        """
        self.proxy = proxy
        self.trunks = trunks
        self.core = core
        self.clock = clock
        self.resolver = resolver
        self.probes: Dict[str, TrunkProbe] = {}

    def update(self, previous) -> None:
        """
        Follow a reload of the trunks (L{TrunkSet.replace}; C{previous}:
        trunk name -> its config before): probes of trunks gone, changed or
        no longer checked stop; new and changed trunks get theirs.
        """
        for name, probe in list(self.probes.items()):
            if name not in self.trunks or self.trunks.get(name) != previous.get(name):
                probe.stop()
                del self.probes[name]
        self.start()

    def start(self) -> None:
        for name in self.trunks.names():
            config = self.trunks.get(name)
            if not getattr(config, "health_check_enabled", False) or self.trunks.is_disabled(name) or name in self.probes:
                continue
            locate = None
            if self.resolver is not None:
                where = self.trunks.locations(name)[0]
                locate = lambda where=where: self.resolver.locate(where.host, where.port, where.transport, where.secure)  # noqa: E731
            probe = self.probes[name] = TrunkProbe(name, self.trunks, self.core, self.clock, self.proxy, locate)
            probe.start()

    def stop(self) -> None:
        for probe in self.probes.values():
            probe.stop()

    def statuses(self) -> List[dict]:
        return [self.trunks.trunk_status(name) for name in self.probes]
