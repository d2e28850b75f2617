# -*- test-case-name: rustpbx_py.test.test_memory -*-
"""
What a call leaves behind: nothing that only the cyclic garbage collector
can free.

The PBX runs with full collections postponed (L{rustpbx_py.server.
tune_garbage_collector}: they paused call handling for up to half a
second); every reference cycle a call made was then kept until one came,
about 27 KB a call, 660 MB after 20,000 calls.  Here calls, registrations
and OPTIONS go through the real core, transaction layer and modules on a
L{task.Clock} with the collector disabled, and one collection afterwards
must find no object of ours: everything a call made was freed by reference
counting the moment it ended.
"""

from __future__ import annotations

import collections
import gc
import sys

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.test.sip_phones import Network, Phone

USERS = [
    {
        "type": "memory",
        "users": [{"username": "alice", "password": "a-pw"}, {"username": "bob", "password": "b-pw"}],
    }
]


def _ours(obj) -> bool:
    """Whether C{obj} is an object, function or method of the PBX's code
    (not of the tests' scripted phones)."""
    kind = type(obj)
    if kind.__name__ == "method":
        obj = obj.__func__
        kind = type(obj)
    module = getattr(obj, "__module__", None) if kind.__name__ == "function" else kind.__module__
    return bool(module) and module.startswith("rustpbx_py.") and not module.startswith("rustpbx_py.test")


class PhonesMixin:
    """A PBX on a clock with two registered phones, alice and bob."""

    #: More [proxy] settings for the PBX under test.
    proxy: dict = {}

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.net = Network(self.clock, user_backends=USERS, realms=["example.com"], **self.proxy)
        self.addCleanup(self.net.stop)
        self.alice = Phone(self.net, "alice", "a-pw", ("203.0.113.1", 5060), ("10.0.0.1", 5060))
        self.bob = Phone(self.net, "bob", "b-pw", ("203.0.113.2", 5060), ("10.0.0.2", 5060))
        self.alice.register(3600)
        self.bob.register(3600)

    def traffic(self, n: int) -> None:
        """C{n} rounds of: alice calls bob (answered, hung up after 1 s),
        calls a user who is not registered, sends OPTIONS, and bob
        refreshes his registration; then every transaction timer runs out."""
        for _ in range(n):
            self.alice.call("bob", 1.0)
            self.alice.call("nobody", 1.0)
            self.alice.options()
            self.bob.register(3600)
            self.net.advance(2)
        self.net.advance(70)


class CycleTests(PhonesMixin, SynchronousTestCase):
    def test_calls_leave_no_cycles(self):
        """200 rounds with the collector off: a collection then finds no
        object of the PBX's code (calls, legs, transactions, timers, call
        records, the modules' closures) among the unreachable ones."""
        self.traffic(5)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        self.traffic(200)
        self.assertEqual(self.alice.calls_ended, 205)
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            ours = collections.Counter(
                getattr(o, "__qualname__", type(o).__qualname__) for o in gc.garbage if _ours(o)
            )
        finally:
            gc.set_debug(0)
            del gc.garbage[:]
        self.assertEqual(ours, {}, "cyclic garbage left per 200 rounds")


class FlatMemoryTests(PhonesMixin, SynchronousTestCase):
    """
    The short soak of C{make test} (bench/soak.py is the long one, with
    SIPp against a real twistd).

    What a call leaves behind on purpose, all bounded (L{RetentionTests}
    checks that it goes): two entries in the auth module's dialog cache
    (RustPBX's C{dialog_auth_cache}, LRU of C{cache_size} dialogs) until
    64*T1 after it ended, the nonce-counts of the nonces its digest used
    (for the nonce lifetime, at most 100,000), and its call record, which
    goes to the database.  The cache is made small here so that it is full
    before the first measurement; what is measured is everything else.
    """

    proxy = {"dialog_auth_cache": {"cache_size": 500}}

    def test_flat_with_server_gc_tuning(self):
        """5,000 calls (2,500 rounds) with the collector tuned as the
        server tunes it (full collections a thousand times rarer): the
        memory the interpreter holds after all of them is within 20 % of
        what it held after the first 1,000 calls.  Before calls broke their
        own cycles it grew with every call."""
        from twisted.logger import globalLogPublisher

        from rustpbx_py.server import GC_GEN2_THRESHOLD

        # The PBX logs a line per call; an observer another test left that
        # keeps every event (a list's append) would be the growth measured.
        # Only failures are watched meanwhile.
        failures = []
        self.patch(
            globalLogPublisher,
            "_observers",
            [lambda event: failures.append(event) if event.get("log_failure") is not None else None],
        )
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        gc.collect()
        gc.set_threshold(threshold[0], threshold[1], GC_GEN2_THRESHOLD)

        def rounds(n: int) -> int:
            for _ in range(n // 100):
                self.traffic(100)
                # The scripted phones' own bookkeeping is not the PBX's.
                del self.alice.answers[:]
                del self.bob.answers[:]
                self.bob._incoming.clear()
            return sys.getallocatedblocks()

        rounds(100)
        after_1000_calls = rounds(400)
        after_5000_calls = rounds(2000)
        self.assertEqual(self.alice.calls_ended, 2500)
        self.assertEqual(failures, [])
        self.assertLess(after_5000_calls, after_1000_calls * 1.2, (after_1000_calls, after_5000_calls))


def live_objects() -> collections.Counter:
    """The PBX's objects alive now, by class (what the collector tracks:
    every instance of a class of ours)."""
    gc.collect()
    counts: collections.Counter = collections.Counter()
    for o in gc.get_objects():
        kind = type(o)
        module = kind.__dict__.get("__module__") if isinstance(kind.__dict__.get("__module__"), str) else None
        if module and module.startswith("rustpbx_py.") and not module.startswith("rustpbx_py.test"):
            counts[f"{module}.{kind.__qualname__}"] += 1
    return counts


class QuiesceMixin(PhonesMixin):
    """Closing every window a call keeps things for, and the tables that hold them."""

    def quiesce(self) -> None:
        """Let every window close (transactions 64*T1, nonce lifetime and
        the late-2xx window 300 s), then run the server's housekeeping."""
        from rustpbx_py.call.dialog import forget_tags

        self.net.advance(301, 10)
        for module in self.net.modules:
            prune = getattr(module, "prune", None)
            if callable(prune):
                prune()
        forget_tags()
        for phone in (self.alice, self.bob):
            del phone.answers[:]
            phone._incoming.clear()

    def tables(self) -> dict:
        call, auth, layer = self.net.module("call"), self.net.module("auth"), self.net.core.transactions
        from rustpbx_py.call.dialog import _TAGS

        return {
            "server transactions": len(layer.server),
            "client transactions": len(layer.client),
            "calls": len(call.calls),
            "legs": len(call.legs),
            "late-2xx window": len(call.ended_b_calls),
            "auth dialog cache": len(auth.dialog_cache),
            "nonce-counts": len(auth.nonces),
            "tag cache": len(_TAGS),
        }



class RetentionTests(QuiesceMixin, SynchronousTestCase):
    """
    What a call leaves behind once every window that needs it has closed:
    nothing.  RSS after a burst of calls comes back only when this holds
    (Python unmaps an arena when its last object goes; a few entries per
    call kept anywhere kept hundreds of megabytes mapped, bench/retained.py).
    """

    def test_calls_leave_nothing(self):
        """40 rounds of traffic (answered calls, calls to an unregistered
        user, OPTIONS, re-REGISTERs) leave, once their windows closed and
        the housekeeping ran, the same live objects of ours, class by
        class, as before them, and every per-call table empty."""
        self.traffic(3)
        self.quiesce()
        before = live_objects()
        self.traffic(40)
        self.assertEqual(self.alice.calls_ended, 43)
        self.quiesce()
        after = live_objects()
        grown = {name: after[name] - before[name] for name in after if after[name] != before[name]}
        self.assertEqual(grown, {}, "objects of ours left by 40 rounds")
        self.assertEqual(set(self.tables().values()), {0}, self.tables())

    def test_dialog_cache_holds_live_calls_only(self):
        """The auth module's dialog cache (RustPBX's dialog_auth_cache,
        ttl_seconds 3600) forgets a call's two dialogs (the caller's, which
        authenticated, and the callee's, which the call module trusted)
        64*T1 after the call ended, not an hour later: while a call is up
        both are there, so the callee's BYE is not challenged."""
        cache = self.net.module("auth").dialog_cache
        self.alice.call("bob", 10.0)
        self.net.advance(5)
        self.assertEqual(len(cache), 2)
        self.net.advance(6)
        self.assertEqual(self.alice.calls_ended, 1)
        self.assertEqual(len(cache), 2)
        self.net.advance(33)
        self.assertEqual(len(cache), 0)


class AbandonedCallTests(QuiesceMixin, SynchronousTestCase):
    """
    Calls whose phones vanish without a BYE (a SIPp caller that gave up, a
    phone that lost power): nothing else ends them when media is not
    relayed (no rtp_timeout) and no session timer was negotiated, and each
    one kept everything a live call holds.  max_call_duration ends them
    (an hour by default, RustPBX's limit; 100 s here).
    """

    proxy = {"max_call_duration": 100}

    def test_abandoned_calls_end_and_leave_nothing(self):
        """20 answered calls nobody hangs up: up until max_call_duration,
        then ended by the PBX (BYE to both phones, reason autohangup), and
        once the windows closed the same live objects as before them and
        every per-call table empty."""
        self.traffic(3)
        self.quiesce()
        before = live_objects()
        call = self.net.module("call")
        ended = []
        self.patch(call, "_log_call", lambda record: ended.append(record.hangup_reason))
        for _ in range(20):
            self.alice.call("bob", 10**7)
            self.net.advance(2)
        self.assertEqual(self.alice.calls_established, 23)
        self.assertEqual(len(call.calls), 20)
        self.net.advance(50)
        self.assertEqual(len(call.calls), 20, "up until max_call_duration")
        self.net.advance(110)
        self.assertEqual(len(call.calls), 0)
        self.assertEqual(ended, ["autohangup"] * 20)
        self.quiesce()
        after = live_objects()
        grown = {name: after[name] - before[name] for name in after if after[name] != before[name]}
        self.assertEqual(grown, {}, "objects of ours left by 20 abandoned calls")
        self.assertEqual(set(self.tables().values()), {0}, self.tables())

