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

Every line is also made safe to read and to parse (L{safe_event}): log
lines quote what peers sent (user names, URIs, Call-IDs, User-Agents,
reasons), and a CR/LF there would forge a line of its own (a fake
"banned" line for fail2ban, a fake call), a terminal escape would rewrite
the admin's screen and a 60 KB header would fill the disk.  Control
characters are written as escapes (C{\\x0d}, C{\\x1b}, C{\\u202e}), each
peer-supplied text field is cut at L{FIELD_LIMIT} characters and each line
at L{LINE_LIMIT}.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional

from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, PredicateResult

__all__ = ["LEVELS", "parse_level", "is_noise", "install_log_filter", "safe_text", "safe_event", "SafeLines"]

#: The longest text field (anything a peer may have supplied) a log line
#: quotes, characters.
FIELD_LIMIT = 256

#: The longest log line, characters (before a failure's traceback).
LINE_LIMIT = 4096

#: What a log line must not carry: C0 and C1 controls (CR, LF, ESC, NUL,
#: DEL...), Unicode line and paragraph separators, and the bidirectional
#: overrides and isolates that make a line read differently from its bytes.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")

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


def _escape(match: "re.Match[str]") -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str, limit: int = FIELD_LIMIT) -> str:
    """
    C{text} on one line: every control character written as an escape,
    and cut at C{limit} characters (with how many were left out).
    """
    text = _UNSAFE.sub(_escape, text)
    if len(text) > limit:
        text = f"{text[:limit]}...[{len(text) - limit} more]"
    return text


def safe_event(event: dict) -> dict:
    """
    C{event} as it may be written: its text fields cut at L{FIELD_LIMIT}
    (the fields are what a message quotes; C{log_*} keys are Twisted's),
    and the formatted line made safe by L{safe_text} (an object's C{str()}
    may hold a peer's text too).  The event itself is not changed: the
    copy carries the safe line as its format, so every text observer
    writes it; an event with nothing to change is returned as it is.
    """
    from twisted.logger import formatEvent

    copy = None
    for key, value in event.items():
        if isinstance(value, str) and not key.startswith("log_") and len(value) > FIELD_LIMIT:
            if copy is None:
                copy = dict(event)
            copy[key] = f"{value[:FIELD_LIMIT]}...[{len(value) - FIELD_LIMIT} more]"
    text = formatEvent(copy if copy is not None else event)
    safe = safe_text(text, LINE_LIMIT)
    if copy is None and safe == text:
        return event
    copy = dict(copy if copy is not None else event)
    copy["log_format"] = "{log_safe_text}"
    copy["log_safe_text"] = safe
    return copy


class SafeLines:
    """An observer that hands L{safe_event}'s copy of each event on."""

    def __init__(self, observer: Any) -> None:
        self.observer = observer

    def __call__(self, event: dict) -> None:
        self.observer(safe_event(event))


def _drop_noise(event: dict) -> PredicateResult:
    return PredicateResult.no if is_noise(event) else PredicateResult.maybe


def install_log_filter(level: LogLevel, publisher: Any = None) -> LogLevelFilterPredicate:
    """
    Put a filter (C{level} and up, no noise, lines made safe by
    L{safe_event}) in front of every observer of C{publisher} (the global
    one by default), once logging has begun.
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
        publisher.addObserver(FilteringLogObserver(SafeLines(observer), [predicate, _drop_noise]))
    return predicate


def level_for(option: Optional[str], config_level: Optional[str]) -> LogLevel:
    """The level to use: the command line's, else the config's, else info."""
    return parse_level(option or config_level or "info")
