"""
Presence and message waiting with a real client: Debian's baresip with its
C{presence} and C{mwi} modules against the PBX's presence module.  One
phone PUBLISHes its state, the other watches it as a contact (SUBSCRIBE,
NOTIFY with PIDF) and sees it change; both subscribe to their own
message-summary.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.baresip import BaresipPhone
from rustpbx_py.test.interop.phones import PhonePbx, until


class PresencePhone(BaresipPhone):
    """
    A baresip phone that also loads presence and mwi, publishes every 60 s
    and watches its contacts.
    """

    def write_config(self) -> None:
        super().write_config()
        path = os.path.join(self.dir, "config")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("module_tmp account.so", "module_app presence.so\nmodule_app mwi.so\nmodule_tmp account.so"))
        path = os.path.join(self.dir, "accounts")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.rstrip("\n") + ";pubint=60\n")
        # baresip subscribes only to contacts marked presence=p2p (through
        # its outbound proxy, the PBX, all the same).
        with open(os.path.join(self.dir, "contacts"), "w") as f:
            f.write("".join(f'"{c}" <sip:{c}@127.0.0.1>;presence=p2p\n' for c in self.contacts))


class BaresipPresenceTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def shows(self, phone, state: str, user: str, seconds: float = 10.0):
        """Wait until C{phone}'s contact list shows C{user} as C{state} (Online, Offline)."""
        wanted = f"{state} {user} <sip:{user}@127.0.0.1>"
        text = ""
        for _ in range(int(seconds / 0.2)):
            listing = yield phone.command("contacts")
            text = re.sub(r"\x1b\[[0-9;]*m", "", listing.get("data") or "")
            if wanted in text:
                return
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.fail(f"{phone.user} never showed {wanted!r}: {text!r}")

    @defer.inlineCallbacks
    def test_watch_and_publish(self):
        """
        bob PUBLISHes (baresip's publisher, PIDF) and the PBX keeps his
        document; alice, who has bob as a contact, SUBSCRIBEs through the
        PBX and its contact list shows bob Online; when bob goes offline (a
        new PUBLISH, basic closed), alice's NOTIFY says so and she shows him
        Offline; both phones hold a message-summary subscription with the
        PBX (baresip's mwi logs nothing when it gets its NOTIFY, and would
        log the subscription closing on an error answer).
        """
        pbx = yield PhonePbx.start(self)
        presence = next(m for m in pbx.service.modules if m.name == "presence")
        bob = yield PresencePhone(self, pbx, "bob").start()
        yield until(lambda: "bob@127.0.0.1" in presence.publications, 10, "bob's PUBLISH")
        mark = len(bob.process.output)
        alice = yield PresencePhone(self, pbx, "alice", contacts=("bob",)).start()

        def watching(event: str, aor: str) -> bool:
            return any(s.event == event and s.aor == aor for s in presence.subscriptions.values())

        yield until(lambda: watching("presence", "bob@127.0.0.1"), 10, "alice's presence subscription")
        yield self.shows(alice, "Online", "bob")
        yield until(lambda: watching("message-summary", "alice@127.0.0.1"), 10, "alice's message-summary subscription")
        yield until(lambda: watching("message-summary", "bob@127.0.0.1"), 10, "bob's message-summary subscription")
        out = len(alice.process.output)
        yield bob.command("presence_offline")
        yield alice.process.wait_output(r"(?s)\nNOTIFY sip:alice[^\n]*\n[^#]*?<basic>closed</basic>", since=out, timeout=10)
        yield self.shows(alice, "Offline", "bob")
        self.assertNotIn("mwi: subscription for", bob.process.output[mark:])
