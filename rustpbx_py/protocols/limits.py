# -*- test-case-name: rustpbx_py.test.test_limits -*-
"""
What a connection may cost: how many a source address may hold, how many
the process may hold, and how long a connection may stay without doing
its part (finish TLS, send a first valid SIP message, send anything).

Without these, one address could hold every file descriptor with idle
TCP connections, after which C{accept()} fails with EMFILE on every
event-loop turn, Twisted logs each failure, and no phone can connect.
Kamailio's C{tcp_max_connections} and Asterisk's C{tcpauthtimeout} /
C{tcpauthlimit} are the models; the per-source cap is what stops one
address from starving the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from twisted.logger import Logger

#: File descriptors kept for everything that is not a SIP connection
#: (the database, UDP and RTP sockets, log files), at least.
FD_RESERVE = 128


def raise_open_files_limit() -> int:
    """
    Raise this process's soft limit of open files to its hard limit (the
    systemd unit sets C{LimitNOFILE}); the soft limit now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1048576)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections(open_files: int) -> int:
    """Connections the process may hold when C{tcp_max_connections} is
    unset: the open-files limit minus a reserve (a tenth, at least
    L{FD_RESERVE}), so C{accept()} never runs out of descriptors."""
    return max(16, open_files - max(FD_RESERVE, open_files // 10))


@dataclass
class StreamLimits:
    """
    The limits of the stream listeners (TCP, TLS, WS, WSS), shared by all
    of them.  Timeouts are seconds; 0 turns one off.

    @ivar per_ip: connections one source address may hold (inbound).
    @ivar total: connections the process may hold (inbound).
    @ivar first_message_timeout: time from accept to the first valid SIP
        message (TLS handshake and WebSocket upgrade included).
    @ivar handshake_timeout: time from accept to a finished TLS handshake.
    @ivar idle_timeout: time without any data (keep-alives count).
    """

    per_ip: int = 200
    total: int = 10000
    first_message_timeout: float = 30.0
    handshake_timeout: float = 10.0
    idle_timeout: float = 3660.0
    counts: Dict[str, int] = field(default_factory=dict)
    open: int = 0
    refused: int = 0
    _last_warning: Optional[float] = None

    log = Logger()

    #: Seconds between two warnings about refused connections.
    WARN_EVERY = 60.0

    def admit(self, host: str, transport: str, clock) -> bool:
        """
        May a new inbound connection from C{host} be served?  Counted when
        yes (L{release} uncounts it); when no, the refusal is counted and
        a warning is logged at most once a minute, so a flood at the limit
        costs no log spam.
        """
        held = self.counts.get(host, 0)
        if held >= self.per_ip or self.open >= self.total:
            self.refused += 1
            now = clock.seconds()
            if self._last_warning is None or now - self._last_warning >= self.WARN_EVERY:
                self._last_warning = now
                if held >= self.per_ip:
                    why = f"{host} holds {held} connections (proxy.tcp_max_connections_per_ip)"
                else:
                    why = f"{self.open} connections are open (proxy.tcp_max_connections)"
                self.log.warn(
                    "refusing {transport} connections: {why}; {refused} refused so far",
                    transport=transport,
                    why=why,
                    refused=self.refused,
                )
            return False
        self.counts[host] = held + 1
        self.open += 1
        return True

    def release(self, host: str) -> None:
        """An admitted connection from C{host} closed."""
        held = self.counts.get(host, 0)
        if held <= 1:
            self.counts.pop(host, None)
        else:
            self.counts[host] = held - 1
        if self.open > 0:
            self.open -= 1


class ConnectionTimers:
    """
    The timers of one inbound connection: TLS handshake, first valid SIP
    message, idle.  C{close} is called (once) when one runs out.
    """

    __slots__ = ("limits", "clock", "close", "_handshake", "_first", "_idle")

    log = Logger()

    def __init__(self, limits: StreamLimits, clock, close, tls: bool, inbound: bool = True) -> None:
        self.limits = limits
        self.clock = clock
        self.close = close
        self._handshake = None
        self._first = None
        self._idle = None
        if inbound and tls and limits.handshake_timeout > 0:
            self._handshake = clock.callLater(limits.handshake_timeout, self._expired, "TLS handshake")
        if inbound and limits.first_message_timeout > 0:
            self._first = clock.callLater(limits.first_message_timeout, self._expired, "first SIP message")
        self.touch()

    def _expired(self, what: str) -> None:
        self.cancel()
        self.close(what)

    def handshake_done(self) -> None:
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        self._handshake = None

    def message(self) -> None:
        """A valid SIP message arrived."""
        if self._first is not None:
            if self._first.active():
                self._first.cancel()
            self._first = None

    def touch(self) -> None:
        """Data arrived: the idle timer starts again."""
        timeout = self.limits.idle_timeout
        if timeout <= 0:
            return
        idle = self._idle
        if idle is not None and idle.active():
            idle.reset(timeout)
        else:
            self._idle = self.clock.callLater(timeout, self._expired, "idle")

    def cancel(self) -> None:
        for name in ("_handshake", "_first", "_idle"):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)
