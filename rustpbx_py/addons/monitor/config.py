# -*- test-case-name: rustpbx_py.test.test_monitor -*-
"""
The monitor addon's configuration tables, declared with the same key
machinery as C{[proxy]} (L{rustpbx_py.config._key}) so that they are
validated like every other key: the plugin lists them in its
C{config_tables} and L{rustpbx_py.config.load_config} builds them into
C{config.addon_tables["metrics"]} and C{config.addon_tables["monitor"]}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rustpbx_py.config import (
    _any_str,
    _bool,
    _enum,
    _http_addr,
    _int,
    _key,
    _path,
    _reader,
    _seconds,
    _show,
    _str,
    _url_path,
)


@_reader('a capture server "host:port"', '"host:port"')
def _hep_target(ctx, key, value):
    from rustpbx_py.protocols.hep import parse_target

    try:
        parse_target(value if isinstance(value, str) else "")
    except ValueError:
        return ctx.expected(key, 'a capture server "host:port" such as "10.0.0.5:9060" ("[v6]:port" for IPv6)', value)
    return value


@dataclass
class MetricsConfig:
    """
    C{[metrics]}: RustPBX's observability keys (src/addons/observability),
    so a RustPBX file carries over.
    """

    enabled: bool = _key(_bool, True, doc="Serve GET /metrics and GET /healthz (false: neither).")
    path: str = _key(_url_path, "/metrics", doc="Path of the Prometheus scrape endpoint.")
    healthz_path: str = _key(_url_path, "/healthz", doc="Path of the liveness/readiness probe (never needs the token).")
    token: Optional[str] = _key(_str, doc="Bearer token /metrics requires (Authorization: Bearer TOKEN); unset: open.")


@dataclass
class MonitorConfig:
    """C{[monitor]}: rustpbx_py's own monitor settings."""

    listen: Optional[str] = _key(
        _http_addr,
        doc='"host:port" the addon serves its resources on itself when the console\'s HTTP site is not running; unset: they are then not served.',
    )
    token: Optional[str] = _key(
        _str,
        doc="Bearer token the snapshot and the live feed require (also ?token= for browsers); unset: [metrics] token, and with neither they answer loopback clients only.",
    )
    feed_replay: int = _key(
        _int(0, 1000000),
        1000,
        doc="Live feed events kept for clients that reconnect with ?after=SEQ; an older SEQ gets a fresh snapshot.",
    )
    reactor_lag_limit: float = _key(
        _seconds,
        1.0,
        doc="Seconds the event loop may lag behind its timers before /healthz says not ready (503).",
    )
    database_timeout: float = _key(
        _seconds,
        2.0,
        doc="Seconds /healthz waits for the database to answer SELECT 1 before it counts as unreachable.",
    )
    hep_target: Optional[str] = _key(
        _hep_target,
        doc='HEP3 capture server (Homer heplify-server, sngrep -L ...) "host:port" every SIP message received and sent is copied to; unset: no HEP export.',
    )
    hep_transport: str = _key(_enum("udp", "tcp", "tls", fold=str.lower), "udp", doc="Transport to the HEP capture server: udp (one datagram per message), tcp (one connection, re-made when lost) or tls (the same over TLS, the server's certificate verified against the host name of hep_target).")
    hep_tls_ca: Optional[str] = _key(_path, doc="PEM bundle the capture server's certificate must chain to with hep_transport = \"tls\"; unset: the system's trust store.")
    hep_capture_id: int = _key(_int(0, 4294967295), 1, doc="HEP capture agent id that tells this PBX's packets apart at the capture server.")
    hep_password: Optional[str] = _key(_any_str, doc="HEP authentication key (the capture server's password), sent in every packet; unset: none.")
    hep_node_name: Optional[str] = _key(_str, doc="HEP node name sent in every packet; unset: none.")

    def _check(self, ctx, prefix: str, given: set) -> bool:
        if self.hep_tls_ca is not None:
            key = (prefix + "." if prefix else "") + "hep_tls_ca"
            if self.hep_transport != "tls":
                ctx.problem(key, f'expected only with hep_transport = "tls", found it with {_show(self.hep_transport)}')
            else:
                from rustpbx_py.protocols.tls import load_trust_root

                try:
                    load_trust_root(self.hep_tls_ca)
                except OSError as e:
                    ctx.problem(key, f"expected a readable PEM bundle, found {_show(self.hep_tls_ca)} ({e.strerror or e})")
                except Exception as e:
                    ctx.problem(key, f"expected a PEM bundle of CA certificates, found {_show(self.hep_tls_ca)} ({e})")
        return True
