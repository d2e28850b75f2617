# -*- test-case-name: rustpbx_py.test.test_monitor -*-
"""
Prometheus metrics with RustPBX's names (src/metrics.rs and the
observability addon), so Grafana dashboards built for RustPBX carry over.

Counting stays off the hot path: what the PBX already counts (transactions
received and running, overload and parse errors, live bindings, calls,
digest checks) is read at scrape time by L{PbxCollector}; what must be
counted per event is a dict increment or a bisect into a fixed bucket list
(L{FastHistogram}), done in the few hooks the addon attaches: a final
response sent, a call event, a call record.  Nothing goes through
prometheus_client's locked metric objects on the way.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import time
from bisect import bisect_left
from collections import Counter
from typing import Dict, Iterable, Optional, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from rustpbx_py import __version__
from rustpbx_py.web.history import record_status

#: RustPBX's buckets, "tuned for telephony" (observability addon).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FastHistogram:
    """
    A histogram as a list of counts: C{observe} is one bisect and two
    additions, no lock (the reactor thread is the only writer).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list:
        """Cumulative (le, count) pairs as Prometheus writes them."""
        out = []
        total = 0
        for bound, count in zip(self.bounds, self.counts):
            total += count
            out.append((floatToGoString(bound), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out


class LabelledHistograms(dict):
    """Label values (a tuple) -> L{FastHistogram}, made on first use."""

    def __missing__(self, key) -> FastHistogram:
        histogram = self[key] = FastHistogram()
        return histogram


def call_result(status: Optional[int]) -> str:
    """RustPBX's C{result} label: ok (2xx), redirect, rejected, failed."""
    if status is None:
        return "failed"
    if status < 300:
        return "ok"
    if status < 400:
        return "redirect"
    if status < 500:
        return "rejected"
    return "failed"


#: REGISTER answers that are a failure, as RustPBX's C{reason} label says
#: them (401/407 are challenges, not failures).
_REGISTER_FAILURES = {403: "forbidden", 404: "invalid_user", 423: "interval_too_brief", 500: "storage_error", 503: "unavailable"}


_EXPIRES_PARAM = re.compile(r";\s*expires\s*=\s*(\d+)", re.IGNORECASE)


def _unregisters(request) -> bool:
    """Whether a REGISTER removes its bindings: C{Contact: *}, or every
    contact with expires 0 (its parameter, else the Expires header)."""
    contacts = request.get_all("contact")
    if not contacts:
        return False  # a query
    if any(c.strip() == "*" for c in contacts):
        return True
    header = (request.get("expires") or "").strip()
    for contact in contacts:
        found = _EXPIRES_PARAM.search(contact)
        if (found.group(1) if found else header) != "0":
            return False
    return True


class PbxMetrics:
    """
    The per-event counts of one PBX (the addon's hooks write them) and the
    context to read the rest from at scrape time.
    """

    def __init__(self, context) -> None:
        self.context = context
        self.clock = context.reactor
        self.started = time.time()
        self.node = socket.gethostname()
        #: (status, method) -> final responses sent.
        self.responses: Counter = Counter()
        self.transaction_latency = FastHistogram()
        self.registrations: Counter = Counter()  # realm
        self.registrations_succeeded: Counter = Counter()  # realm
        self.registrations_failed: Counter = Counter()  # (realm, reason)
        self.unregistrations: Counter = Counter()  # realm
        self.calls: Counter = Counter()  # (direction, result, status)
        self.call_duration = LabelledHistograms()  # (direction,)
        self.call_talk_time = LabelledHistograms()  # (direction,)
        self.invite_latency = LabelledHistograms()  # (direction,)
        self.trunk_latency = LabelledHistograms()  # (trunk,)
        self.dialogs_created: Counter = Counter()  # direction
        self.dialogs_terminated: Counter = Counter()  # (direction, reason)
        self.trunk_calls: Counter = Counter()  # (trunk, direction)
        self.trunk_calls_failed: Counter = Counter()  # (trunk, direction, reason)
        self.rtp_sent: Counter = Counter()  # codec
        self.rtp_received: Counter = Counter()  # codec
        self.rtp_lost: Counter = Counter()  # direction
        self.rtp_jitter = LabelledHistograms()  # (direction,)
        self.trunk_transitions: Counter = Counter()  # (trunk, "up"|"down")

    # -- hooks (per event, cheap) ---------------------------------------------

    def transaction_answered(self, tx) -> None:
        """A server transaction sent its final response."""
        request = tx.request
        status = tx.final.status
        method = request.method
        self.responses[status, method] += 1
        self.transaction_latency.observe(self.clock.seconds() - tx.created)
        if method == "REGISTER":
            self._register_answered(tx, request, status)

    def _register_answered(self, tx, request, status: int) -> None:
        realm = getattr(tx.context, "realm", None) or _to_host(request)
        self.registrations[realm] += 1
        if 200 <= status < 300:
            if _unregisters(request):
                self.unregistrations[realm] += 1
            else:
                self.registrations_succeeded[realm] += 1
        elif status not in (401, 407):
            self.registrations_failed[realm, _REGISTER_FAILURES.get(status, str(status))] += 1

    def call_answered(self, call) -> None:
        record = call.record
        self.dialogs_created[record.direction] += 1
        # RustPBX's INVITE latency: from the INVITE to the answer.
        setup = max(self.clock.seconds() - record.start_time, 0.0)
        self.invite_latency[record.direction,].observe(setup)
        if record.trunk:
            self.trunk_latency[record.trunk,].observe(setup)

    def call_record(self, record) -> None:
        """A call ended: RustPBX's MetricsCallRecordHook, plus trunks and RTP."""
        direction = record.direction
        end = record.end_time if record.end_time is not None else self.clock.seconds()
        status = record_status({"end_time": end, "answer_time": record.answer_time,
                                "hangup_reason": record.hangup_reason})
        self.calls[direction, call_result(record.status_code), status] += 1
        self.call_duration[direction,].observe(max(end - record.start_time, 0.0))
        if record.answer_time is not None:
            self.call_talk_time[direction,].observe(max(end - record.answer_time, 0.0))
            self.dialogs_terminated[direction, record.hangup_reason or "unknown"] += 1
        if record.trunk:
            self.trunk_calls[record.trunk, direction] += 1
            if record.status_code is None or record.status_code >= 300:
                reason = str(record.status_code) if record.status_code else (record.hangup_reason or "unknown")
                self.trunk_calls_failed[record.trunk, direction, reason] += 1
        legs = (record.media or {}).get("legs") or {}
        for name in ("a", "b"):
            leg = legs.get(name)
            if not isinstance(leg, dict):
                continue
            codec = str(leg.get("codec") or "unknown")
            received, sent = leg.get("in") or {}, leg.get("out") or {}
            self.rtp_received[codec] += int(received.get("packets") or 0)
            self.rtp_sent[codec] += int(sent.get("packets") or 0)
            # The PBX receives leg a's RTP from the caller: inbound.
            direction = "inbound" if name == "a" else "outbound"
            self.rtp_lost[direction] += int(received.get("lost") or 0)
            if received.get("packets"):
                self.rtp_jitter[direction,].observe(float(received.get("jitter_ms") or 0.0) / 1000.0)

    def trunk_changed(self, name: str, up: bool) -> None:
        self.trunk_transitions[name, "up" if up else "down"] += 1


def _to_host(request) -> str:
    try:
        return request.to_addr.uri.host.lower()
    except Exception:
        return ""


def _module(context, name: str):
    for module in getattr(context, "modules", None) or ():
        if getattr(module, "name", None) == name:
            return module
    return None


def trunk_states(context) -> Dict[str, Optional[bool]]:
    """
    Each trunk's status: False when OPTIONS probing marked it down or its
    registration failed, True otherwise (RustPBX reports a trunk online
    until something says it is not); disabled trunks are left out.
    """
    trunks = getattr(context, "trunks", None)
    if trunks is None:
        return {}
    probe = getattr(trunks, "trunk_status", None)
    call = _module(context, "call")
    registrar = getattr(call, "trunk_registrar", None)
    registrations = getattr(registrar, "registrations", None) or {}
    out: Dict[str, Optional[bool]] = {}
    for name in trunks.names():
        up = True
        status = probe(name) if probe is not None else None
        if status is not None and status.get("state") == "down":
            up = False
        registration = registrations.get(name)
        if registration is not None and registration.state == "failed":
            up = False
        out[name] = up
    return out


def _counter(name: str, doc: str, labels: Iterable[str], counts) -> CounterMetricFamily:
    labels = list(labels)
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(counts.items(), key=lambda kv: str(kv[0])):
        values = [str(k) for k in key] if isinstance(key, tuple) else [str(key)]
        family.add_metric(values, value)
    return family


def _histograms(name: str, doc: str, labels: Iterable[str], histograms) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for key, histogram in sorted(histograms.items(), key=lambda kv: str(kv[0])):
        family.add_metric([str(k) for k in key], histogram.buckets(), histogram.sum)
    return family


class PbxCollector:
    """A prometheus_client collector reading L{PbxMetrics} and the PBX."""

    def __init__(self, metrics: PbxMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        context = m.context
        core = context.core
        info = GaugeMetricFamily("rustpbx_info", "Always 1; carries the version and node labels.", labels=["version", "node"])
        info.add_metric([__version__, m.node], 1)
        yield info
        yield from self._process(m)

        flows = list(core.transports.flows.values())
        connections = GaugeMetricFamily("rustpbx_network_connections", "Open SIP connections (TCP, TLS, WS, WSS).")
        connections.add_metric([], len(flows))
        yield connections
        websockets = GaugeMetricFamily("rustpbx_websocket_connections_active", "Open SIP over WebSocket connections.")
        websockets.add_metric([], sum(1 for f in flows if f.transport in ("WS", "WSS")))
        yield websockets

        layer = core.transactions
        running = GaugeMetricFamily("rustpbx_sip_transactions_running", "SIP transactions in progress (server and client).")
        running.add_metric([], len(layer.server) + len(layer.client))
        yield running
        yield _counter("rustpbx_sip_transactions_received_total", "Server transactions created for received requests.", [], {(): layer.received})
        rejected = {("max_concurrency",): core.counters.get("overload", 0), ("parse_error",): core.counters.get("parse_errors", 0)}
        yield _counter("rustpbx_sip_transactions_rejected_total", "Requests refused before the modules saw them.", ["reason"], rejected)
        latency = HistogramMetricFamily("rustpbx_sip_transaction_latency_seconds", "Time from a request to its final response.")
        latency.add_metric([], m.transaction_latency.buckets(), m.transaction_latency.sum)
        yield latency
        responses = CounterMetricFamily("rustpbx_sip_responses_total", "Final SIP responses sent.", labels=["status_class", "status_code", "method"])
        for (status, method), count in sorted(m.responses.items()):
            responses.add_metric([f"{status // 100}xx", str(status), method], count)
        yield responses

        registry = getattr(context, "locator", None)
        active = GaugeMetricFamily("rustpbx_sip_registrations_active", "Live registered bindings.")
        active.add_metric([], len(registry) if registry is not None and hasattr(registry, "all_bindings") else 0)
        yield active
        yield _counter("rustpbx_sip_registrations_total", "REGISTER requests answered.", ["realm"], m.registrations)
        yield _counter("rustpbx_sip_registrations_succeeded_total", "Successful registrations.", ["realm"], m.registrations_succeeded)
        yield _counter("rustpbx_sip_registrations_failed_total", "Failed registrations (challenges are not failures).", ["realm", "reason"], m.registrations_failed)
        yield _counter("rustpbx_sip_unregistrations_total", "Explicit unregistrations (expires=0, Contact: *).", ["realm"], m.unregistrations)

        calls = getattr(_module(context, "call"), "calls", ()) or ()
        dialogs = GaugeMetricFamily("rustpbx_sip_dialogs_active", "Answered calls not ended yet.")
        dialogs.add_metric([], sum(1 for c in calls if c.record.answer_time is not None and c.record.end_time is None))
        yield dialogs
        yield _histograms("rustpbx_sip_invite_latency_seconds", "Call setup time: INVITE to answer.", ["direction"], m.invite_latency)
        yield _counter("rustpbx_sip_dialogs_created_total", "Dialogs established (calls answered).", ["direction"], m.dialogs_created)
        yield _counter("rustpbx_sip_dialogs_terminated_total", "Dialogs ended.", ["direction", "reason"], m.dialogs_terminated)

        yield _counter("rustpbx_calls_total", "Completed calls.", ["direction", "result", "status"], m.calls)
        yield _histograms("rustpbx_call_duration_seconds", "Wall-clock time from INVITE to the end.", ["direction"], m.call_duration)
        yield _histograms("rustpbx_call_talk_time_seconds", "Talk time of answered calls.", ["direction"], m.call_talk_time)
        yield _counter("rustpbx_trunk_calls_total", "Calls routed through a trunk.", ["trunk_id", "direction"], m.trunk_calls)
        yield _counter("rustpbx_trunk_calls_failed_total", "Failed trunk calls.", ["trunk_id", "direction", "reason"], m.trunk_calls_failed)
        yield _histograms("rustpbx_trunk_latency_seconds", "Call setup time through a trunk: INVITE to answer.", ["trunk_id"], m.trunk_latency)
        status = GaugeMetricFamily("rustpbx_trunk_status", "Trunk online status (1=online, 0=offline).", labels=["trunk_id"])
        for name, up in sorted(trunk_states(context).items()):
            status.add_metric([name], 1 if up else 0)
        yield status

        auth = getattr(_module(context, "auth"), "stats", None) or {}
        attempts, success, failure = Counter(), Counter(), Counter()
        for key, count in list(auth.items()):
            if key[0] == "attempt":
                attempts[key[1]] += count
            elif key[0] == "success":
                success[key[1]] += count
            else:
                failure[key[1], key[2]] += count
        yield _counter("rustpbx_auth_attempts_total", "Digest credentials checked.", ["method"], attempts)
        yield _counter("rustpbx_auth_success_total", "Digest credentials accepted.", ["method"], success)
        yield _counter("rustpbx_auth_failure_total", "Digest credentials refused.", ["method", "reason"], failure)

        yield _counter("rustpbx_rtp_packets_sent_total", "RTP packets the PBX sent (anchored calls, at their end).", ["codec"], m.rtp_sent)
        yield _counter("rustpbx_rtp_packets_received_total", "RTP packets the PBX received (anchored calls, at their end).", ["codec"], m.rtp_received)
        yield _counter("rustpbx_rtp_packets_lost_total", "RTP packets lost on the way to the PBX.", ["direction"], m.rtp_lost)
        yield _histograms("rustpbx_rtp_jitter_seconds", "Interarrival jitter of each anchored leg at its end.", ["direction"], m.rtp_jitter)

    def _process(self, m: PbxMetrics):
        uptime = GaugeMetricFamily("rustpbx_process_uptime_seconds", "Process uptime in seconds.")
        uptime.add_metric([], max(time.time() - m.started, 0.0))
        yield uptime
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = CounterMetricFamily("rustpbx_process_cpu_seconds", "User and system CPU time.")
        cpu.add_metric([], usage.ru_utime + usage.ru_stime)
        yield cpu
        rss = _resident_bytes()
        if rss is not None:
            memory = GaugeMetricFamily("rustpbx_process_resident_memory_bytes", "Process resident memory in bytes.")
            memory.add_metric([], rss)
            yield memory
        try:
            fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            return
        open_fds = GaugeMetricFamily("rustpbx_process_open_fds", "Open file descriptors.")
        open_fds.add_metric([], fds)
        yield open_fds


def _resident_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
