"""
Methods phones use, between real SIPp user agents through the PBX (auth,
registrar, call and presence modules): MESSAGE forked to a user's two
contacts, OPTIONS answered by a user's phone, presence SUBSCRIBE/PUBLISH/NOTIFY between two users, and blind
and attended transfer (REFER with NOTIFY sipfrag, REFER with Replaces).
"""

from __future__ import annotations

import os
from urllib.parse import quote

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.call.dialog import tag_of
from rustpbx_py.test.interop.support import (
    SippMixin,
    call_pbx_toml,
    free_udp_port,
    require_tool,
    scenario,
    start_pbx_toml,
)

#: The call tests' PBX and users, and 1003 (the transfer target).
PBX_TOML = call_pbx_toml(
    tail="""
[[proxy.user_backends.users]]
username = "1003"
password = "target-secret"
"""
)

PASSWORDS = {"caller": "caller-secret", "1002": "callee-secret", "1003": "target-secret"}


def _text(out, err) -> str:
    return (out + err).decode("utf-8", "replace")[-3000:]


class MethodsInteropTests(SippMixin, TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.sipp = require_tool("sipp")
        self.pbx = yield start_pbx_toml(self, PBX_TOML)
        self.port = self.pbx.ports["UDP"]

    def module(self, name: str):
        return next(m for m in self.pbx.modules if m.name == name)

    @defer.inlineCallbacks
    def register(self, user: str, port: int):
        out, err, code = yield self.sipp_run(
            "call_register.xml", port, ["-s", user, "-au", user, "-ap", PASSWORDS[user], "-m", "1"]
        )
        self.assertEqual(code, 0, _text(out, err))

    def as_user(self, user: str, name: str, service: str, extra=()):
        """Run scenario C{name} as C{user} (digest) toward C{service}, once."""
        return self.sipp_run(name, free_udp_port(), ["-s", service, "-au", user, "-ap", PASSWORDS[user], "-m", "1"] + list(extra))

    def uas(self, name: str, port: int, calls: int = 1, extra=()):
        return self.sipp_run(name, port, ["-m", str(calls)] + list(extra), remote=False)

    @defer.inlineCallbacks
    def until(self, predicate, what: str, seconds: float = 30.0):
        """Wait (on the reactor) until C{predicate()} is true."""
        waited = 0.0
        while not predicate():
            if waited > seconds:
                self.fail(f"timed out waiting for {what}")
            yield task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    @defer.inlineCallbacks
    def all_pass(self, runs):
        """Wait for every SIPp run; fail with all their outputs unless each exited 0."""
        results = []
        for run in runs:
            results.append((yield run))
        bad = [_text(out, err) for out, err, code in results if code != 0]
        self.assertEqual(bad, [], "\n=====\n".join(bad))

    def template(self, name: str, **values) -> str:
        with open(scenario(name)) as f:
            text = f.read()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        path = os.path.abspath(self.mktemp()) + ".xml"
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- MESSAGE ---------------------------------------------------------------

    @defer.inlineCallbacks
    def test_message_to_two_contacts(self):
        """1002 registers two phones; caller's MESSAGE (authenticated)
        reaches both with body and Content-Type intact (each SIPp receiver
        checks them) and caller gets 200."""
        ports = [free_udp_port(), free_udp_port()]
        for port in ports:
            yield self.register("1002", port)
        self.assertEqual(len(self.module("registrar").registry.lookup("1002@127.0.0.1")), 2)
        phones = [self.uas("message_uas.xml", port) for port in ports]
        sender = self.as_user("caller", "message_uac.xml", "1002")
        yield self.all_pass([sender] + phones)

    @defer.inlineCallbacks
    def test_options_to_user(self):
        """caller's OPTIONS to 1002 reaches 1002's phone, whose own Allow
        comes back (the PBX's would not list X-PHONE-ONLY)."""
        port = free_udp_port()
        yield self.register("1002", port)
        phone = self.uas("options_uas.xml", port)
        asker = self.as_user("caller", "options_uac.xml", "1002")
        yield self.all_pass([asker, phone])

    # -- presence --------------------------------------------------------------

    @defer.inlineCallbacks
    def test_presence_between_users(self):
        """caller SUBSCRIBEs to 1002's presence and gets "closed"; 1002
        PUBLISHes a PIDF with a note, and caller's next NOTIFY carries it;
        caller unsubscribes and gets the terminated NOTIFY."""
        presence = self.module("presence")
        watcher = self.as_user("caller", "presence_watch.xml", "1002")
        yield self.until(lambda: presence.subscriptions, "the subscription")
        publisher = self.as_user("1002", "presence_publish.xml", "1002")
        yield self.all_pass([publisher, watcher])
        self.assertEqual(presence.subscriptions, {})

    # -- transfers -------------------------------------------------------------

    @defer.inlineCallbacks
    def test_blind_transfer(self):
        """caller talks to 1002 and REFERs it to 1003: 1002 gets the REFER
        with Refer-To and Referred-By, its NOTIFYs (Event: refer;id=<its
        CSeq>) reach caller as refer;id=5, the CSeq of caller's REFER, with
        the sipfrag; 1002's new call reaches 1003 with Referred-By."""
        b_port, c_port = free_udp_port(), free_udp_port()
        yield self.register("1002", b_port)
        yield self.register("1003", c_port)
        transferee = self.uas("xfer_transferee.xml", b_port)
        target = self.uas("call_uas.xml", c_port)
        transferor = self.template("xfer_transferor.xml.in", REFER_TO=f"sip:1003@127.0.0.1:{self.port}")
        refer = yield self.as_user("caller", transferor, "1002")
        newcall = self.template("xfer_newcall.xml.in", HEADERS="Referred-By: <sip:caller@127.0.0.1>")
        invite = yield self.as_user("1002", newcall, "1003")
        yield self.all_pass([defer.succeed(refer), defer.succeed(invite), transferee, target])

    @defer.inlineCallbacks
    def test_attended_transfer(self):
        """caller talks to 1002, consults 1003, then REFERs 1002 to 1003
        with a Replaces naming its consultation dialog with the PBX; 1002's
        INVITE with that Replaces reaches 1003 with a Replaces naming 1003's
        own dialog with the PBX (checked in 1003's message log)."""
        b_port, c_port = free_udp_port(), free_udp_port()
        yield self.register("1002", b_port)
        yield self.register("1003", c_port)
        log = os.path.abspath(self.mktemp()) + ".log"
        target = self.uas("call_uas.xml", c_port, calls=2, extra=["-trace_msg", "-message_file", log])
        consult_id = "consult-1@127.0.0.1"
        consult = self.as_user("caller", "xfer_consult.xml", "1003", ["-cid_str", consult_id])
        calls = self.module("call")

        def consult_call():
            for call in calls.calls:
                if call.tx.request.call_id == consult_id and call.state == "answered" and call.a is not None:
                    return call
            return None

        yield self.until(consult_call, "the consultation call")
        call2 = consult_call()
        # caller's view of its consultation dialog: the PBX's tag is its to-tag.
        replaces = f"{consult_id};to-tag={call2.a.local_tag};from-tag=consult-tag"
        expected = f"{call2.b.call_id};to-tag={tag_of(call2.b.remote)};from-tag={call2.b.local_tag}"

        transferee = self.uas("xfer_transferee.xml", b_port)
        refer_to = f"sip:1003@127.0.0.1:{self.port}?Replaces={quote(replaces, safe='@')}"
        transferor = self.template("xfer_transferor.xml.in", REFER_TO=refer_to)
        refer = yield self.as_user("caller", transferor, "1002")
        newcall = self.template("xfer_newcall.xml.in", HEADERS=f"Referred-By: <sip:caller@127.0.0.1>\nReplaces: {replaces}")
        invite = yield self.as_user("1002", newcall, "1003")
        # 1003 would now hang up the replaced dialog; the PBX does it here.
        call2.hangup("bySystem")
        yield self.all_pass([defer.succeed(refer), defer.succeed(invite), transferee, consult, target])
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.assertIn(f"Replaces: {expected}", text)
