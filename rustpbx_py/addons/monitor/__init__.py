"""
The C{monitor} addon: what an admin watches a running PBX with.

 - C{GET /metrics}: Prometheus exposition with RustPBX's metric names
   (L{rustpbx_py.addons.monitor.metrics});
 - C{GET /healthz}: liveness and readiness (L{rustpbx_py.addons.monitor.health});
 - C{GET /api/monitor/snapshot} and the WebSocket feed at
   C{/api/monitor/feed} (L{rustpbx_py.addons.monitor.feed}).

Enabled with C{addons = ["monitor"]} in C{[proxy]}; configured by the
C{[metrics]} (RustPBX's keys) and C{[monitor]} tables
(L{rustpbx_py.addons.monitor.config}).
"""
