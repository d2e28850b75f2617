# -*- test-case-name: rustpbx_py.test.test_monitor -*-
"""
The monitor addon itself: attaches its hooks to the PBX (final responses,
registry bindings, call events and records, trunk status), builds the
metrics registry, and serves its resources.
"""

from __future__ import annotations

import socket
from typing import Optional

from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py import __version__, status
from rustpbx_py.addons.monitor.config import MetricsConfig, MonitorConfig
from rustpbx_py.addons.monitor.feed import EventLog, FeedFactory
from rustpbx_py.addons.monitor.health import Health, LagProbe
from rustpbx_py.addons.monitor.metrics import PbxCollector, PbxMetrics, trunk_states
from rustpbx_py.interfaces import IAddon

#: Call module events -> feed event types.
CALL_EVENTS = {"created": "call.created", "ringing": "call.ringing", "answered": "call.answered", "hangup": "call.ended"}


@implementer(IAddon)
class MonitorAddon:
    """Prometheus metrics, health, snapshot and live feed of one PBX."""

    id = "monitor"
    log = Logger()

    def __init__(self, context) -> None:
        self.context = context
        tables = getattr(context.config, "addon_tables", {}) or {}
        self.metrics_config: MetricsConfig = tables.get("metrics") or MetricsConfig()
        self.config: MonitorConfig = tables.get("monitor") or MonitorConfig()
        self.node = socket.gethostname()
        self.metrics = PbxMetrics(context)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PbxCollector(self.metrics))
        self.events = EventLog(context.reactor, self.config.feed_replay)
        self.lag = LagProbe(context.reactor)
        self.health = Health(context, self.lag, self.config.reactor_lag_limit, self.config.database_timeout)
        self.feed = FeedFactory(self.events, self.snapshot)
        #: The port of our own listener (None when the console's site serves us).
        self.port = None
        self._trunk_up: dict = {}
        self._hooked: list = []
        #: The HEP exporter ([monitor] hep_target), None when it is unset.
        self.hep = None

    # -- life cycle ------------------------------------------------------------

    def start(self):
        context = self.context
        self.lag.start()
        layer = context.core.transactions
        layer.answer_observers.append(self._answered)
        self._hooked.append((layer.answer_observers, self._answered))
        registry = getattr(context, "locator", None)
        observers = getattr(registry, "binding_observers", None)
        if observers is not None:
            observers.append(self._binding)
            self._hooked.append((observers, self._binding))
        trunks = getattr(context, "trunks", None)
        watchers = getattr(trunks, "status_observers", None)
        if watchers is not None:
            watchers.append(self._trunk_status)
            self._hooked.append((watchers, self._trunk_status))
        self._trunk_up = dict(trunk_states(context))
        if getattr(context, "web", None) is None:
            self._listen()
        from rustpbx_py.protocols.hep import exporter_from_settings

        self.hep = exporter_from_settings(context.reactor, context.core, self.config)
        if self.hep is not None:
            return self.hep.start()
        return None

    def stop(self):
        self.lag.stop()
        hep, self.hep = self.hep, None
        if hep is not None:
            hep.stop()
        for observers, fn in self._hooked:
            if fn in observers:
                observers.remove(fn)
        self._hooked = []
        port, self.port = self.port, None
        for listener in list(self.events.listeners):
            self.events.listeners.remove(listener)
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        return None

    def _listen(self) -> None:
        listen = self.config.listen
        if listen is None:
            if self.web_resources():
                self.log.warn(
                    "monitor: the console's HTTP site is not running and [monitor] listen is not set: "
                    "/metrics, /healthz and the snapshot are not served"
                )
            return
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        from rustpbx_py.addons.monitor.web import mount

        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        root = Resource()
        for path, resource in self.web_resources().items():
            mount(root, path, resource)
        site = Site(root)
        site.displayTracebacks = False
        site.log = lambda request: None  # no access line per scrape
        self.port = self.context.reactor.listenTCP(int(port), site, interface=host if host not in ("", "0.0.0.0") else "")
        bound = self.port.getHost()
        self.log.info("monitor: serving /metrics, /healthz and /api/monitor on {host}:{port}", host=bound.host, port=bound.port)

    # -- IAddon ----------------------------------------------------------------

    def web_resources(self) -> dict:
        from autobahn.twisted.resource import WebSocketResource

        from rustpbx_py.addons.monitor.web import GuardedResource, HealthPage, MetricsPage, SnapshotPage

        resources = {}
        metrics = self.metrics_config
        token = self.config.token if self.config.token is not None else metrics.token
        if metrics.enabled:
            resources[metrics.path.strip("/")] = MetricsPage(self.registry, metrics.token)
            resources[metrics.healthz_path.strip("/")] = HealthPage(self.health)
        resources["api/monitor/snapshot"] = SnapshotPage(self.snapshot, token)
        resources["api/monitor/feed"] = GuardedResource(WebSocketResource(self.feed), token)
        return resources

    def on_call_event(self, event: str, call) -> None:
        if event == "answered":
            self.metrics.call_answered(call)
        kind = CALL_EVENTS.get(event)
        if kind is not None:
            # The record's figures, not status.call_summary: that one reads
            # the SDP for the codecs (a parse per event on the hot path);
            # the snapshot has them.
            self.events.publish(kind, _call_record(call))

    def on_call_record(self, record) -> None:
        self.metrics.call_record(record)

    # -- hooks -----------------------------------------------------------------

    def _answered(self, tx) -> None:
        try:
            self.metrics.transaction_answered(tx)
        except Exception:
            self.log.failure("monitor: counting a response failed")

    def _binding(self, event: str, binding) -> None:
        self.events.publish(f"registration.{event}", self._binding_data(binding))

    def _trunk_status(self, name: str, up: bool) -> None:
        if self._trunk_up.get(name) == up:
            return
        self._trunk_up[name] = up
        self.metrics.trunk_changed(name, up)
        self.events.publish("trunk.up" if up else "trunk.down", {"trunk": name, **self._trunk(name)})

    # -- the live state --------------------------------------------------------

    def snapshot(self) -> dict:
        """Calls, registrations, transactions and trunks, right now."""
        context = self.context
        return {
            "time": context.reactor.seconds(),
            "node": self.node,
            "version": __version__,
            "seq": self.events.seq,
            "calls": status.active_calls(context),
            "registrations": status.registrations(context),
            "transactions": status.transactions(context),
            "trunks": [self._trunk(name) for name in self._trunk_names()],
        }

    def _trunk_names(self) -> list:
        trunks = getattr(self.context, "trunks", None)
        return list(trunks.names()) if trunks is not None else []

    def _trunk(self, name: str) -> dict:
        """One trunk: up or down, its OPTIONS probing state and last RTT,
        and its registration (TrunkSet.trunk_status, when it has it)."""
        from rustpbx_py.addons.monitor.metrics import _module

        context = self.context
        out = {"name": name, "up": trunk_states(context).get(name, True)}
        probe = getattr(context.trunks, "trunk_status", None)
        if probe is not None:
            out.update(probe(name))
            return out
        registrar = getattr(_module(context, "call"), "trunk_registrar", None)
        registration = (getattr(registrar, "registrations", None) or {}).get(name)
        out["registration"] = registration.status() if registration is not None else None
        return out

    def _binding_data(self, binding) -> dict:
        return status.binding_summary(self.context, binding)


def _call_record(call) -> dict:
    """What a call event says without reading the SDP: the record's
    parties, direction, trunk, times and, once ended, how."""
    record = call.record
    return {
        **status.call_parties(call),
        "end_time": record.end_time,
        "status_code": record.status_code,
        "hangup_reason": record.hangup_reason,
    }
