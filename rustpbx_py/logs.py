# -*- test-case-name: rustpbx_py.test.test_logs -*-
"""
What reaches the PBX's log: a level (C{twistd pbx --log-level}, or the
config's C{log_level}, RustPBX's key) and no Twisted housekeeping noise.

twistd writes every event to its log file; L{install_log_filter} puts a
filter in front of the observers twistd installed, once logging has begun
(the service calls it from C{startService}).  The filter drops events
below the level and the lines Twisted prints for every socket it opens,
which say nothing to an admin and carry object addresses: "Starting
protocol <... at 0x7f...>", "Starting factory <...>", and the port opened
and closed for each DNS query ("DNSDatagramProtocol starting on 40000",
"(UDP Port 40000 Closed)").  Our own listeners and factories are quiet
already (C{noisy = False}); these patterns catch the ones Twisted makes
for us.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional

from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, PredicateResult

__all__ = ["LEVELS", "parse_level", "is_noise", "install_log_filter"]

#: Level names accepted by C{--log-level} and C{log_level} (RustPBX's
#: tracing names; C{trace} is our debug).
LEVELS = {
    "trace": LogLevel.debug,
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

_NOISE = re.compile(
    r"^(?:"
    r"(?:Starting|Stopping) (?:protocol|factory) <"  # Factory/DatagramProtocol.noisy
    r"|(?:DNS|Sip)\w*(?:Protocol|Factory) starting on \d+$"  # a port per DNS query; ours say more
    r"|\S*resolv\.conf changed, reparsing$"
    r"|\(UDP Port \d+ Closed\)$"
    r"|\(TCP Port \d+ Closed\)$"
    r"|<twisted\.names\."  # "<twisted.names.dns.DNSDatagramProtocol ...>" variants
    r")"
)


def parse_level(text: str) -> LogLevel:
    """
    The level named C{text} (see L{LEVELS}, any case).

    @raise ValueError: with a message naming the accepted names.
    """
    level = LEVELS.get(str(text).strip().lower())
    if level is None:
        raise ValueError(f"expected a log level ({', '.join(LEVELS)}), found {text!r}")
    return level


def is_noise(event: dict) -> bool:
    """Whether C{event} is Twisted housekeeping an admin has no use for."""
    if event.get("log_namespace") != "log_legacy":
        return False
    text = event.get("log_text")
    return isinstance(text, str) and _NOISE.match(text) is not None


def _drop_noise(event: dict) -> PredicateResult:
    return PredicateResult.no if is_noise(event) else PredicateResult.maybe


def install_log_filter(level: LogLevel, publisher: Any = None) -> LogLevelFilterPredicate:
    """
    Put a filter (C{level} and up, no noise) in front of every observer of
    C{publisher} (the global one by default), once logging has begun.
    Returns the level predicate: C{setLogLevelForNamespace} changes the
    level of one namespace (a module's Logger is named after the module)
    or, with None, of everything.
    """
    if publisher is None:
        from twisted.logger import globalLogPublisher as publisher
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observers: List[Any] = list(getattr(publisher, "_observers", []))
    for observer in observers:
        if isinstance(observer, FilteringLogObserver):
            continue
        publisher.removeObserver(observer)
        publisher.addObserver(FilteringLogObserver(observer, [predicate, _drop_noise]))
    return predicate


def level_for(option: Optional[str], config_level: Optional[str]) -> LogLevel:
    """The level to use: the command line's, else the config's, else info."""
    return parse_level(option or config_level or "info")
