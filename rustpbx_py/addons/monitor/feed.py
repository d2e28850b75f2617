# -*- test-case-name: rustpbx_py.test.test_monitor -*-
"""
The live feed: a snapshot of the PBX, then one JSON message per event,
each with the next sequence number, over a WebSocket (Autobahn).

A client that lost its connection reconnects with C{?after=SEQ} (the last
sequence number it saw) and gets exactly the events it missed, from a
bounded replay buffer (C{[monitor] feed_replay}); when they are no longer
all there, or the SEQ is from before a restart, it gets a fresh snapshot
instead, whose C{seq} is where the events after it start.

Messages::

    {"type": "snapshot", "seq": 41, "time": ..., "data": {...}}
    {"type": "call.answered", "seq": 42, "time": ..., "data": {...}}
    {"type": "resume", "seq": 41, "time": ..., "data": {"missed": 3}}
"""

from __future__ import annotations

import json
from collections import deque
from typing import Callable, Deque, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.logger import Logger

#: What a client may still have unsent before it is dropped, bytes: a
#: stalled consumer must not make the PBX buffer without bound.
MAX_CLIENT_BACKLOG = 4 * 1024 * 1024

#: The event types the feed sends (besides snapshot and resume).
EVENT_TYPES = (
    "call.created",
    "call.ringing",
    "call.answered",
    "call.ended",
    "registration.added",
    "registration.refreshed",
    "registration.removed",
    "registration.expired",
    "trunk.up",
    "trunk.down",
)


class EventLog:
    """Numbered events, the last C{size} kept, pushed to the listeners."""

    log = Logger()

    def __init__(self, clock, size: int) -> None:
        self.clock = clock
        self.seq = 0
        self.events: Deque[dict] = deque(maxlen=size)
        self.listeners: list = []

    def publish(self, kind: str, data: dict) -> dict:
        self.seq += 1
        event = {"type": kind, "seq": self.seq, "time": self.clock.seconds(), "data": data}
        self.events.append(event)
        if self.listeners:
            text = json.dumps(event, default=str).encode("utf-8")
            for listener in list(self.listeners):
                try:
                    listener(text)
                except Exception:
                    self.log.failure("monitor feed: a client failed on an event")
        return event

    def since(self, after: int) -> Optional[list]:
        """
        The events after C{after}, or None when some of them are no longer
        kept (or C{after} is ahead of us: a previous run's number).
        """
        if after > self.seq or after < 0:
            return None
        if after == self.seq:
            return []
        oldest = self.events[0]["seq"] if self.events else self.seq + 1
        if after + 1 < oldest:
            return None
        return [e for e in self.events if e["seq"] > after]


class FeedProtocol(WebSocketServerProtocol):
    """One feed client."""

    log = Logger()

    def onConnect(self, request):
        self.after: Optional[int] = None
        values = request.params.get("after")
        if values:
            try:
                self.after = int(values[0])
            except ValueError:
                self.after = None
        return None

    def onOpen(self):
        log: EventLog = self.factory.events
        missed = log.since(self.after) if self.after is not None else None
        if missed is None:
            self._send({"type": "snapshot", "seq": log.seq, "time": log.clock.seconds(), "data": self.factory.snapshot()})
        else:
            self._send({"type": "resume", "seq": self.after, "time": log.clock.seconds(), "data": {"missed": len(missed)}})
            for event in missed:
                self._send(event)
        log.listeners.append(self._push)

    def _send(self, message: dict) -> None:
        self.sendMessage(json.dumps(message, default=str).encode("utf-8"), isBinary=False)

    def _push(self, text: bytes) -> None:
        transport = self.transport
        buffered = 0
        if transport is not None:
            buffered = len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)
        if buffered > MAX_CLIENT_BACKLOG:
            self.log.warn("monitor feed: dropping a client that does not read ({n} bytes queued)", n=buffered)
            self._stop_listening()
            self.dropConnection(abort=True)
            return
        self.sendMessage(text, isBinary=False)

    def onMessage(self, payload, isBinary):
        """The feed is one-way: what a client sends is ignored."""

    def _stop_listening(self) -> None:
        listeners = self.factory.events.listeners
        if self._push in listeners:
            listeners.remove(self._push)

    def onClose(self, wasClean, code, reason):
        self._stop_listening()


class FeedFactory(WebSocketServerFactory):
    """Serves the feed of one L{EventLog}; C{snapshot()} builds the first message."""

    protocol = FeedProtocol

    def __init__(self, events: EventLog, snapshot: Callable[[], dict], server: str = "rustpbx_py") -> None:
        WebSocketServerFactory.__init__(self, server=server)
        self.events = events
        self.snapshot = snapshot
        # No handshake timers: the feed needs none, and their shared txaio
        # timer outlives the connections in tests.
        self.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
