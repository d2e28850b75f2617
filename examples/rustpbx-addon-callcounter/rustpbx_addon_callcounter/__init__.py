"""
An example rustpbx_py addon, packaged on its own: it counts calls by how
they ended and logs a summary line when the PBX stops.

Enable it with C{addons = ["callcounter"]} in the C{[proxy]} section.
"""

from collections import Counter

from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.interfaces import IAddon


@implementer(IAddon)
class CallCounter:
    """Counts call events and finished calls."""

    id = "callcounter"
    log = Logger()

    def __init__(self, context) -> None:
        self.context = context
        self.events: Counter = Counter()
        self.endings: Counter = Counter()
        self.running = False

    def start(self) -> None:
        self.running = True
        self.log.info("callcounter addon started")

    def stop(self) -> None:
        self.running = False
        self.log.info(
            "callcounter addon stopped: events {events}, endings {endings}",
            events=dict(self.events),
            endings=dict(self.endings),
        )

    def web_resources(self) -> dict:
        return {}

    def on_call_event(self, event: str, call) -> None:
        self.events[event] += 1

    def on_call_record(self, record) -> None:
        self.endings[record.hangup_reason] += 1
