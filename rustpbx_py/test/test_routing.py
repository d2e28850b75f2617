# -*- test-case-name: rustpbx_py.test.test_routing -*-
"""
Tests for L{rustpbx_py.call.routing} and L{rustpbx_py.call.classify}, with
routes and trunks written in RustPBX's TOML format.
"""

from __future__ import annotations

import calendar
import random
from collections import Counter
from typing import Optional

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call import routing
from rustpbx_py.call.classify import EXTERNAL, INBOUND, INTERNAL, OUTBOUND, classify, is_local_host
from rustpbx_py.call.routing import RouteDecision, Router, RoutingError, callee_uri, trunk_policy_id
from rustpbx_py.call.trunks import TrunkSet
from rustpbx_py.config import RouteConfig, parse_config_text
from rustpbx_py.sip.headers import NameAddr
from rustpbx_py.test.fakes import make_request

TRUNKS = """
[proxy.trunks.t1]
dest = "sip:192.0.2.1"
weight = 10
id = 11

[proxy.trunks.t2]
dest = "sip:192.0.2.2"
weight = 30
id = 12

[proxy.trunks.t3]
dest = "sip:192.0.2.3"
weight = 60
country = "DE"
"""


def make_router(routes: str, trunks: str = TRUNKS, clock: Optional[task.Clock] = None, seed: int = 7) -> Router:
    """A Router for the [[proxy.routes]] and [proxy.trunks.*] of a config text."""
    config = parse_config_text("[proxy]\n" + trunks + routes)
    clock = clock if clock is not None else task.Clock()
    return Router(config.proxy.routes, TrunkSet(config.proxy.trunks, clock), clock, random.Random(seed))


def route_with(match: str, extra: str = "", name: str = "r") -> str:
    """One route forwarding to t1, with the given match table body."""
    return f"""
[[proxy.routes]]
name = "{name}"
dest = "t1"
{extra}
[proxy.routes.match]
{match}
"""


def uri_of(header_value: str) -> str:
    return str(NameAddr.parse(header_value).uri)


class MatchFieldTests(SynchronousTestCase):
    """Each match field reads what RustPBX reads."""

    def matches(self, match: str, **request) -> bool:
        router = make_router(route_with(match))
        return router.route(make_request(**request)) is not None

    def test_from_user(self) -> None:
        """from.user is the From URI's user."""
        self.assertTrue(self.matches('"from.user" = "1001"', from_uri="sip:1001@pbx.example.com"))
        self.assertFalse(self.matches('"from.user" = "1001"', from_uri="sip:1002@pbx.example.com"))

    def test_from_host(self) -> None:
        """from.host is the From URI's host."""
        self.assertTrue(self.matches('"from.host" = "pbx.example.com"', from_uri="sip:1001@pbx.example.com"))
        self.assertFalse(self.matches('"from.host" = "pbx.example.com"', from_uri="sip:1001@other.example.com"))

    def test_to_user_is_the_request_uri_user(self) -> None:
        """to.user is the callee: the Request-URI's user when it has one,
        even when the To header says something else (RustPBX's callee)."""
        self.assertTrue(self.matches('"to.user" = "2000"', uri="sip:2000@pbx.example.com", to_uri="sip:9999@pbx.example.com"))
        self.assertFalse(self.matches('"to.user" = "9999"', uri="sip:2000@pbx.example.com", to_uri="sip:9999@pbx.example.com"))

    def test_to_user_falls_back_to_the_to_header(self) -> None:
        """Without a user in the Request-URI, to.user is the To URI's user."""
        self.assertTrue(self.matches('"to.user" = "9999"', uri="sip:pbx.example.com", to_uri="sip:9999@pbx.example.com"))

    def test_to_host_and_port(self) -> None:
        """to.host and to.port are the callee's host and port."""
        self.assertTrue(self.matches('"to.host" = "gw.example.com"\n"to.port" = "5080"', uri="sip:2000@gw.example.com:5080"))
        self.assertFalse(self.matches('"to.port" = "5080"', uri="sip:2000@gw.example.com"))

    def test_request_uri_fields(self) -> None:
        """request_uri.user / host / port read the Request-URI."""
        match = '"request_uri.user" = "2000"\n"request_uri.host" = "pbx.example.com"\n"request_uri.port" = "5062"'
        self.assertTrue(self.matches(match, uri="sip:2000@pbx.example.com:5062", to_uri="sip:x@y.example"))
        self.assertFalse(self.matches(match, uri="sip:2000@pbx.example.com", to_uri="sip:x@y.example"))

    def test_caller_and_callee(self) -> None:
        """caller is user@host of From, callee user@host of the callee."""
        match = '"caller" = "1001@pbx.example.com"\n"callee" = "2000@pbx.example.com"'
        self.assertTrue(self.matches(match, from_uri="sip:1001@pbx.example.com", uri="sip:2000@pbx.example.com"))
        self.assertFalse(self.matches(match, from_uri="sip:1001@other.example.com", uri="sip:2000@pbx.example.com"))

    def test_from_and_to_aliases(self) -> None:
        """The short fields from and to read as caller and callee."""
        match = '"from" = "1001@pbx.example.com"\n"to" = "2000@pbx.example.com"'
        self.assertTrue(self.matches(match, from_uri="sip:1001@pbx.example.com", uri="sip:2000@pbx.example.com"))

    def test_header(self) -> None:
        """header.NAME reads the first NAME header, name case-insensitive."""
        match = '"header.X-VIP" = "gold"'
        self.assertTrue(self.matches(match, headers=[("x-vip", "gold")]))
        self.assertFalse(self.matches(match, headers=[("X-VIP", "silver")]))

    def test_missing_header_never_matches(self) -> None:
        """A condition on a header the request lacks fails, even a regex
        that would match empty text."""
        self.assertFalse(self.matches('"header.X-VIP" = ".*"'))

    def test_header_compact_form(self) -> None:
        """header.Subject also finds a header sent in compact form (s:)."""
        self.assertTrue(self.matches('"header.Subject" = "urgent"', headers=[("s", "urgent")]))


class PatternTests(SynchronousTestCase):
    """Exact text versus regular expressions."""

    def matches(self, pattern: str, user: str) -> bool:
        router = make_router(route_with(f"\"to.user\" = '{pattern}'"))
        return router.route(make_request(uri=f"sip:{user}@pbx.example.com")) is not None

    def test_plain_text_is_exact(self) -> None:
        """A pattern without regex characters must equal the field."""
        self.assertTrue(self.matches("1001", "1001"))
        self.assertFalse(self.matches("1001", "10010"))
        self.assertFalse(self.matches("1001", "91001"))

    def test_dot_alone_is_not_a_regex(self) -> None:
        """RustPBX does not count "." as a regex character: a host name
        pattern is compared exactly."""
        router = make_router(route_with('"from.host" = "pbx.example.com"'))
        self.assertIsNone(router.route(make_request(from_uri="sip:1001@pbxXexample.com")))

    def test_regex_is_searched(self) -> None:
        """A regex may match anywhere in the field (Rust's is_match)."""
        self.assertTrue(self.matches("00+", "1004"))
        self.assertTrue(self.matches("^10", "1099"))
        self.assertFalse(self.matches("^10", "2010"))

    def test_anchored_regex_matches_whole_field(self) -> None:
        """^...$ restricts a regex to the whole field."""
        self.assertTrue(self.matches("^10[0-9]{2}$", "1042"))
        self.assertFalse(self.matches("^10[0-9]{2}$", "10420"))

    def test_regex_compiled_once(self) -> None:
        """Regexes are compiled when the router is built: routing works with
        the re module gone."""
        router = make_router(route_with("\"to.user\" = '^0(\\d+)$'"))

        class NoRe:
            def __getattr__(self, name):
                raise AssertionError(f"re.{name} used while routing")

        self.patch(routing, "re", NoRe())
        self.assertIsNotNone(router.route(make_request(uri="sip:0301234@pbx.example.com")))

    def test_invalid_regex_refused_at_construction(self) -> None:
        """A route built without the config checks still cannot carry an
        invalid regex: the router refuses it, naming route and field."""
        route = RouteConfig(name="bad", match={"to.user": "^(unclosed"}, dest=["t1"])
        config = parse_config_text("[proxy]\n" + TRUNKS)
        e = self.assertRaises(RoutingError, Router, [route], TrunkSet(config.proxy.trunks, task.Clock()), task.Clock())
        self.assertIn("bad", str(e))
        self.assertIn("to.user", str(e))


class RouteOrderTests(SynchronousTestCase):
    """Which route wins."""

    def test_all_conditions_must_match(self) -> None:
        """A route matches only when every condition holds."""
        router = make_router(route_with('"from.user" = "1001"\n"to.user" = "2000"'))
        self.assertIsNotNone(router.route(make_request(from_uri="sip:1001@a.example", uri="sip:2000@b.example")))
        self.assertIsNone(router.route(make_request(from_uri="sip:1001@a.example", uri="sip:2001@b.example")))
        self.assertIsNone(router.route(make_request(from_uri="sip:1002@a.example", uri="sip:2000@b.example")))

    def test_empty_match_matches_everything(self) -> None:
        """A route without conditions is a catch-all."""
        router = make_router(route_with(""))
        self.assertEqual(router.route(make_request()).route, "r")

    def test_priority_order(self) -> None:
        """The highest priority route that matches wins, wherever it is
        written; equal priorities keep their written order."""
        routes = (
            route_with("", 'priority = 1', name="low")
            + route_with("", 'priority = 50', name="high")
            + route_with("", 'priority = 50', name="high-second")
        )
        self.assertEqual(make_router(routes).route(make_request()).route, "high")

    def test_disabled_route_skipped(self) -> None:
        """A disabled route never matches; the next one does."""
        routes = route_with("", "priority = 9\ndisabled = true", name="off") + route_with("", name="on")
        self.assertEqual(make_router(routes).route(make_request()).route, "on")

    def test_no_route(self) -> None:
        """When nothing matches the answer is None (deliver locally)."""
        router = make_router(route_with('"to.user" = "nobody"'))
        self.assertIsNone(router.route(make_request()))

    def test_direction(self) -> None:
        """A route with a direction matches only calls of that direction;
        without a direction given, the check is skipped."""
        router = make_router(route_with("", 'direction = "inbound"'))
        self.assertIsNone(router.route(make_request(), direction="outbound"))
        self.assertIsNotNone(router.route(make_request(), direction="inbound"))
        self.assertIsNotNone(router.route(make_request()))

    def test_source_trunks(self) -> None:
        """source_trunks limits a route to calls from those trunks (names
        compared case-insensitively)."""
        router = make_router(route_with("", 'source_trunks = ["t2"]'))
        self.assertIsNone(router.route(make_request()))
        self.assertIsNone(router.route(make_request(), source_trunk="t1"))
        self.assertIsNotNone(router.route(make_request(), source_trunk="T2"))

    def test_source_trunk_ids(self) -> None:
        """source_trunk_ids limits a route to trunks with those ids."""
        router = make_router(route_with("", "source_trunk_ids = [12]"))
        self.assertIsNone(router.route(make_request(), source_trunk="t1"))
        self.assertIsNotNone(router.route(make_request(), source_trunk="t2"))
        self.assertIsNone(router.route(make_request(), source_trunk="t3"))


class RewriteTests(SynchronousTestCase):
    """Rewrites with capture groups, on each field."""

    def decide(self, match: str, rewrite: str, **request) -> RouteDecision:
        routes = route_with(match) + "[proxy.routes.rewrite]\n" + rewrite + "\n"
        decision = make_router(routes).route(make_request(**request))
        assert decision is not None
        return decision

    def test_to_user_with_capture(self) -> None:
        """match to.user "^0(\\d+)$", rewrite "+86{1}": the callee (Request-URI
        and To) becomes +86 and the digits; the original is untouched."""
        req = make_request(uri="sip:013812345678@pbx.example.com")
        routes = route_with("\"to.user\" = '^0(\\d+)$'") + '[proxy.routes.rewrite]\n"to.user" = "+86{1}"\n'
        decision = make_router(routes).route(req)
        self.assertEqual(decision.request.uri, "sip:+8613812345678@pbx.example.com")
        self.assertEqual(uri_of(decision.request.get("to")), "sip:+8613812345678@pbx.example.com")
        self.assertEqual(decision.callee, "+8613812345678")
        self.assertEqual(req.uri, "sip:013812345678@pbx.example.com")
        self.assertEqual(uri_of(req.get("to")), "sip:013812345678@pbx.example.com")

    def test_from_user_with_capture(self) -> None:
        """RustPBX's example: +86 numbers become 0 + number in From; tags and
        display names survive."""
        decision = self.decide("\"from.user\" = '^\\+86(1\\d{10})$'", '"from.user" = "0{1}"', from_uri="sip:+8613812345678@pbx.example.com")
        na = NameAddr.parse(decision.request.get("from"))
        self.assertEqual(str(na.uri), "sip:013812345678@pbx.example.com")
        self.assertEqual(na.tag, "fromtag1")
        self.assertEqual(decision.caller, "013812345678")

    def test_from_host_with_capture(self) -> None:
        """from.host rewrites use the groups of the from.host match."""
        decision = self.decide(
            "\"from.user\" = '^\\+1(\\d{10})$'\n\"from.host\" = '^(gw-[a-z-]+)\\.provider\\.net$'",
            '"from.user" = "001{1}"\n"from.host" = "proxy-{1}.internal"',
            from_uri="sip:+15551234567@gw-us-west.provider.net",
        )
        self.assertEqual(uri_of(decision.request.get("from")), "sip:0015551234567@proxy-gw-us-west.internal")

    def test_to_host_and_port(self) -> None:
        """to.host may carry a port; to.port sets the port alone."""
        decision = self.decide('"to.user" = "2000"', '"to.host" = "10.1.1.1:5070"', uri="sip:2000@pbx.example.com")
        self.assertEqual(decision.request.uri, "sip:2000@10.1.1.1:5070")
        decision = self.decide('"to.user" = "2000"', '"to.port" = "5090"', uri="sip:2000@pbx.example.com")
        self.assertEqual(decision.request.uri, "sip:2000@pbx.example.com:5090")
        self.assertEqual(uri_of(decision.request.get("to")), "sip:2000@pbx.example.com:5090")

    def test_request_uri_only(self) -> None:
        """request_uri.* rewrites change the Request-URI and leave To alone."""
        decision = self.decide(
            "\"request_uri.user\" = '^9(\\d+)'",
            '"request_uri.user" = "{1}"\n"request_uri.host" = "gw.example.com"\n"request_uri.port" = "5061"',
            uri="sip:9123@pbx.example.com",
        )
        self.assertEqual(decision.request.uri, "sip:123@gw.example.com:5061")
        self.assertEqual(uri_of(decision.request.get("to")), "sip:9123@pbx.example.com")

    def test_header_with_capture(self) -> None:
        """A header rewrite fills groups from that header's match, header
        names compared case-insensitively."""
        decision = self.decide("\"header.X-Account\" = '^acct-(\\d+)$'", '"header.x-account" = "id={1}"', headers=[("X-Account", "acct-42")])
        self.assertEqual(decision.request.get("x-account"), "id=42")

    def test_header_added(self) -> None:
        """Rewriting a header the request lacks adds it."""
        decision = self.decide("", '"header.X-Route" = "gold"')
        self.assertEqual(decision.request.get("X-Route"), "gold")

    def test_placeholder_without_capture_is_original(self) -> None:
        """{0} is the whole match; a placeholder for a field without a
        condition (or a missing group) stands for the original value."""
        decision = self.decide('"to.user" = "2000"', '"to.user" = "<{0}>"\n"from.user" = "x{3}"', uri="sip:2000@pbx.example.com", from_uri="sip:1001@pbx.example.com")
        self.assertEqual(decision.callee, "<2000>")
        self.assertEqual(decision.caller, "x1001")

    def test_optional_group_not_taken(self) -> None:
        """An optional group that did not take part expands to nothing."""
        decision = self.decide("\"to.user\" = '^(\\+)?(\\d+)$'", '"to.user" = "{1}00{2}"', uri="sip:49301@pbx.example.com")
        self.assertEqual(decision.callee, "0049301")

    def test_no_rewrite_keeps_request(self) -> None:
        """Without rewrites the decision carries the request as given."""
        req = make_request()
        decision = make_router(route_with("")).route(req)
        self.assertIs(decision.request, req)

    def test_bad_port_rejects_with_500(self) -> None:
        """A rewrite that yields no valid port fails the call with 500
        naming the route, instead of sending garbage."""
        decision = self.decide('"to.user" = "2000"', '"to.port" = "99999"', uri="sip:2000@pbx.example.com")
        self.assertEqual((decision.action, decision.code), ("reject", 500))
        self.assertIn("to.port", decision.reason)


SELECT_ROUTE = """
[[proxy.routes]]
name = "{name}"
dest = ["t1", "t2", "t3"]
select = "{select}"
{extra}
"""


class SelectTests(SynchronousTestCase):
    """How a route orders its trunks."""

    def test_rr_cycles(self) -> None:
        """rr starts with each trunk in turn; the rest follow for failover."""
        router = make_router(SELECT_ROUTE.format(name="r", select="rr", extra=""))
        orders = [router.route(make_request()).trunks for _ in range(4)]
        self.assertEqual(
            orders,
            [("t1", "t2", "t3"), ("t2", "t3", "t1"), ("t3", "t1", "t2"), ("t1", "t2", "t3")],
        )

    def test_rr_state_per_route(self) -> None:
        """Each route keeps its own turn."""
        routes = SELECT_ROUTE.format(name="a", select="rr", extra='[proxy.routes.match]\n"to.user" = "a"') + SELECT_ROUTE.format(
            name="b", select="rr", extra='[proxy.routes.match]\n"to.user" = "b"'
        )
        router = make_router(routes)
        self.assertEqual(router.route(make_request(uri="sip:a@x.example")).trunks[0], "t1")
        self.assertEqual(router.route(make_request(uri="sip:a@x.example")).trunks[0], "t2")
        self.assertEqual(router.route(make_request(uri="sip:b@x.example")).trunks[0], "t1")

    def test_random_stays_within_set(self) -> None:
        """random picks among the route's trunks only, each of them in
        time, and always lists all of them."""
        router = make_router(SELECT_ROUTE.format(name="r", select="random", extra=""), seed=3)
        firsts = Counter()
        for _ in range(300):
            trunks = router.route(make_request()).trunks
            self.assertEqual(sorted(trunks), ["t1", "t2", "t3"])
            firsts[trunks[0]] += 1
        self.assertEqual(set(firsts), {"t1", "t2", "t3"})

    def test_hash_stable(self) -> None:
        """hash on call-id sends the same Call-ID to the same trunk every
        time, and different Call-IDs over several trunks."""
        router = make_router(SELECT_ROUTE.format(name="r", select="hash", extra='hash_key = "call-id"'))
        first = router.route(make_request(call_id="abc@host")).trunks
        for _ in range(5):
            self.assertEqual(router.route(make_request(call_id="abc@host")).trunks, first)
        seen = {router.route(make_request(call_id=f"call-{i}@host")).trunks[0] for i in range(50)}
        self.assertEqual(seen, {"t1", "t2", "t3"})

    def test_hash_stable_across_routers(self) -> None:
        """The hash does not depend on the process (no salted hash()): two
        routers agree."""
        a = make_router(SELECT_ROUTE.format(name="r", select="hash", extra='hash_key = "from.user"'))
        b = make_router(SELECT_ROUTE.format(name="r", select="hash", extra='hash_key = "from.user"'))
        for i in range(20):
            req = make_request(from_uri=f"sip:{1000 + i}@pbx.example.com")
            self.assertEqual(a.route(req).trunks, b.route(req).trunks)

    def test_hash_keys(self) -> None:
        """from.user and to.user hash the caller / callee; the default is
        the From URI; any other key is literal text, so one trunk."""
        router = make_router(SELECT_ROUTE.format(name="r", select="hash", extra='hash_key = "to.user"'))
        same = {router.route(make_request(uri="sip:2000@x.example", call_id=f"c{i}")).trunks for i in range(10)}
        self.assertEqual(len(same), 1)
        router = make_router(SELECT_ROUTE.format(name="r", select="hash", extra='hash_key = "fixed"'))
        same = {router.route(make_request(from_uri=f"sip:{i}@x.example")).trunks for i in range(10)}
        self.assertEqual(len(same), 1)
        router = make_router(SELECT_ROUTE.format(name="r", select="hash", extra=""))
        spread = {router.route(make_request(from_uri=f"sip:{i}@x.example")).trunks[0] for i in range(50)}
        self.assertEqual(spread, {"t1", "t2", "t3"})

    def test_weighted_follows_weights(self) -> None:
        """weighted picks trunks in proportion to their weight (10/30/60)
        over many draws with a seeded generator."""
        router = make_router(SELECT_ROUTE.format(name="r", select="weighted", extra=""), seed=11)
        draws = 6000
        firsts = Counter(router.route(make_request()).trunks[0] for _ in range(draws))
        for name, weight in (("t1", 10), ("t2", 30), ("t3", 60)):
            share = firsts[name] / draws
            self.assertTrue(abs(share - weight / 100) < 0.03, f"{name}: {share:.3f} of draws for weight {weight}%")

    def test_weighted_all_zero_is_uniform(self) -> None:
        """With every weight 0, weighted falls back to a uniform pick."""
        trunks = "".join(f'\n[proxy.trunks.t{i}]\ndest = "sip:192.0.2.{i}"\nweight = 0\n' for i in (1, 2, 3))
        router = make_router(SELECT_ROUTE.format(name="r", select="weighted", extra=""), trunks=trunks)
        firsts = {router.route(make_request()).trunks[0] for _ in range(100)}
        self.assertEqual(firsts, {"t1", "t2", "t3"})

    def test_unusable_trunks_left_out(self) -> None:
        """Disabled and inbound-only trunks are never offered."""
        trunks = TRUNKS + '\n[proxy.trunks.in]\ndest = "sip:192.0.2.9"\ndirection = "inbound"\n[proxy.trunks.off]\ndest = "sip:192.0.2.8"\ndisabled = true\n'
        routes = '[[proxy.routes]]\nname = "r"\ndest = ["in", "t2", "off"]\n'
        self.assertEqual(make_router(routes, trunks).route(make_request()).trunks, ("t2",))

    def test_no_usable_trunk_is_503(self) -> None:
        """A forward route whose trunks are all unusable refuses with 503."""
        trunks = TRUNKS + '\n[proxy.trunks.in]\ndest = "sip:192.0.2.9"\ndirection = "inbound"\n'
        decision = make_router('[[proxy.routes]]\nname = "r"\ndest = "in"\n', trunks).route(make_request())
        self.assertEqual((decision.action, decision.code), ("reject", 503))

    def test_forward_without_dest(self) -> None:
        """A forward route without dest delivers to the (rewritten)
        Request-URI: no trunks."""
        decision = make_router('[[proxy.routes]]\nname = "r"\n[proxy.routes.rewrite]\n"to.host" = "10.0.0.5"\n').route(make_request())
        self.assertEqual((decision.action, decision.trunks), ("forward", ()))
        self.assertEqual(decision.request.uri, "sip:bob@10.0.0.5")


class ActionTests(SynchronousTestCase):
    """reject, busy, queue and application routes."""

    def test_reject(self) -> None:
        """A reject route gives its code, reason and headers."""
        routes = '[[proxy.routes]]\nname = "no"\naction = "reject"\nreject = { code = 404, reason = "Nobody Here", headers = { "X-Why" = "test" } }\n'
        decision = make_router(routes).route(make_request())
        self.assertEqual((decision.action, decision.code, decision.reason), ("reject", 404, "Nobody Here"))
        self.assertEqual(dict(decision.headers), {"X-Why": "test"})

    def test_reject_default_403(self) -> None:
        """action = "reject" without a reject table refuses with 403."""
        decision = make_router('[[proxy.routes]]\nname = "no"\naction = "reject"\n').route(make_request())
        self.assertEqual((decision.action, decision.code, decision.reason), ("reject", 403, None))

    def test_busy(self) -> None:
        """A busy route answers 486."""
        decision = make_router('[[proxy.routes]]\nname = "b"\naction = "busy"\n').route(make_request())
        self.assertEqual((decision.action, decision.code), ("busy", 486))

    def test_queue_and_application(self) -> None:
        """queue and application routes hand their settings to the B2BUA."""
        routes = '[[proxy.routes]]\nname = "q"\npriority = 2\nqueue = "support"\n[proxy.routes.match]\n"to.user" = "help"\n'
        routes += '[[proxy.routes]]\nname = "ivr"\napp = "ivr"\nauto_answer = false\n'
        router = make_router(routes)
        decision = router.route(make_request(uri="sip:help@x.example"))
        self.assertEqual((decision.action, decision.config.queue), ("queue", "support"))
        decision = router.route(make_request())
        self.assertEqual((decision.action, decision.config.app, decision.config.auto_answer), ("application", "ivr", False))


def policy_route(policy: str, extra: str = "") -> str:
    return f'[[proxy.routes]]\nname = "p"\ndest = "t1"\npolicy = {{ {policy} }}\n{extra}\n'


class PolicyTests(SynchronousTestCase):
    """Per-caller policies on routes and trunks."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(calendar.timegm((2024, 1, 15, 12, 0, 0)))

    def call(self, router: Router, caller: str = "1001", callee: str = "2000", **kw) -> RouteDecision:
        return router.route(make_request(from_uri=f"sip:{caller}@pbx.example.com", uri=f"sip:{callee}@pbx.example.com"), **kw)

    def test_frequency_limit_window(self) -> None:
        """frequency_limit {count = 2, window_hours = 1}: two calls per
        caller in the hour from the first; the third is refused with 403;
        other callers are not affected; after the window, calls pass."""
        router = make_router(policy_route("frequency_limit = { count = 2, window_hours = 1 }"), clock=self.clock)
        self.assertEqual(self.call(router).action, "forward")
        self.clock.advance(1800)
        self.assertEqual(self.call(router).action, "forward")
        refused = self.call(router)
        self.assertEqual((refused.action, refused.code, refused.reason), ("reject", 403, "Frequency limit reached for caller 1001"))
        self.assertEqual(self.call(router, caller="1002").action, "forward")
        self.clock.advance(1800)
        self.assertEqual(self.call(router).action, "reject")
        self.clock.advance(1)
        self.assertEqual(self.call(router).action, "forward")

    def test_daily_limit_resets_at_day_boundary(self) -> None:
        """daily_limit {count = 1}: one call per caller per UTC day; the
        count starts again at midnight UTC."""
        router = make_router(policy_route("daily_limit = { count = 1 }"), clock=self.clock)
        self.clock.advance(11 * 3600 + 59 * 60 + 58)  # 23:59:58 UTC
        self.assertEqual(self.call(router).action, "forward")
        refused = self.call(router)
        self.assertEqual((refused.code, refused.reason), (403, "Daily limit reached for caller 1001"))
        self.clock.advance(1)  # 23:59:59, still today
        self.assertEqual(self.call(router).action, "reject")
        self.clock.advance(1)  # 00:00:00 the next day
        self.assertEqual(self.call(router).action, "forward")

    def test_concurrency(self) -> None:
        """concurrency {max_total = 1}: one call in progress per caller;
        call_started / call_ended bracket it."""
        router = make_router(policy_route("concurrency = { max_total = 1 }"), clock=self.clock)
        decision = self.call(router)
        self.assertEqual(decision.action, "forward")
        router.call_started(decision.route, decision.caller)
        refused = self.call(router)
        self.assertEqual((refused.code, refused.reason), (403, "Concurrency limit reached for caller 1001"))
        self.assertEqual(self.call(router, caller="1002").action, "forward")
        router.call_ended(decision.route, decision.caller)
        self.assertEqual(self.call(router).action, "forward")

    def test_concurrency_per_account(self) -> None:
        """max_per_account gives a named caller its own figure."""
        router = make_router(policy_route('concurrency = { max_total = 1, max_per_account = { "1001" = 2 } }'), clock=self.clock)
        for _ in range(2):
            router.call_started("p", "1001")
            router.call_started("p", "1002")
        self.assertEqual(self.call(router, caller="1001").action, "reject")
        router.call_ended("p", "1001")
        self.assertEqual(self.call(router, caller="1001").action, "forward")
        self.assertEqual(self.call(router, caller="1002").action, "reject")

    def test_call_ended_extra_is_harmless(self) -> None:
        """An unmatched call_ended does not give a caller extra room."""
        router = make_router(policy_route("concurrency = { max_total = 1 }"), clock=self.clock)
        router.call_ended("p", "1001")
        router.call_started("p", "1001")
        self.assertEqual(self.call(router).action, "reject")

    def test_policy_counts_rewritten_caller(self) -> None:
        """Policies see the caller after the route's rewrites (RustPBX)."""
        routes = policy_route("frequency_limit = { count = 1, window_hours = 1 }", '[proxy.routes.rewrite]\n"from.user" = "shared"\n')
        router = make_router(routes, clock=self.clock)
        self.assertEqual(self.call(router, caller="1001").caller, "shared")
        self.assertEqual(self.call(router, caller="1002").reason, "Frequency limit reached for caller shared")

    def test_auth_user_when_from_has_no_user(self) -> None:
        """A From URI without a user part is counted under the
        authenticated user name."""
        router = make_router(policy_route("frequency_limit = { count = 1, window_hours = 1 }"), clock=self.clock)
        req = make_request(from_uri="sip:pbx.example.com")
        self.assertEqual(router.route(req, auth_user="alice").caller, "alice")
        self.assertEqual(router.route(req, auth_user="alice").action, "reject")

    def test_called_prefix(self) -> None:
        """A policy with called_prefix applies only to callees with it."""
        router = make_router(policy_route('called_prefix = "00", daily_limit = { count = 1 }'), clock=self.clock)
        for _ in range(3):
            self.assertEqual(self.call(router, callee="2000").action, "forward")
        self.assertEqual(self.call(router, callee="0049").action, "forward")
        self.assertEqual(self.call(router, callee="0049").action, "reject")

    def test_time_window(self) -> None:
        """time_window: calls only between start and end in its time zone
        (12:00 UTC is 13:00 in Berlin in January)."""
        inside = make_router(policy_route('time_window = { start = "09:00", end = "13:30", timezone = "Europe/Berlin" }'), clock=self.clock)
        self.assertEqual(self.call(inside).action, "forward")
        outside = make_router(policy_route('time_window = { start = "09:00", end = "12:30", timezone = "Europe/Berlin" }'), clock=self.clock)
        self.assertEqual(self.call(outside).reason, "Call outside allowed time window: 09:00 - 12:30")

    def test_time_window_across_midnight(self) -> None:
        """A window whose end is before its start runs through midnight."""
        router = make_router(policy_route('time_window = { start = "22:00", end = "06:00", timezone = "UTC" }'), clock=self.clock)
        self.assertEqual(self.call(router).action, "reject")
        self.clock.advance(11 * 3600)  # 23:00 UTC
        self.assertEqual(self.call(router).action, "forward")

    def test_unknown_timezone_refused(self) -> None:
        """An unknown time zone is refused when the router is built."""
        self.assertRaises(RoutingError, make_router, policy_route('time_window = { start = "09:00", end = "17:00", timezone = "Mars/Olympus" }'))

    def test_deny_regions_origin_country(self) -> None:
        """deny_regions refuses calls arriving over a trunk of a denied
        country."""
        router = make_router(policy_route('deny_regions = ["de"]'), clock=self.clock)
        self.assertEqual(self.call(router, source_trunk="t3").reason, "Origin country DE is denied")
        self.assertEqual(self.call(router, source_trunk="t1").action, "forward")

    def test_trunk_policy(self) -> None:
        """A trunk's own policy is checked for the trunk chosen, counted
        under trunk:NAME."""
        trunks = TRUNKS.replace('country = "DE"', 'country = "DE"\npolicy = { concurrency = { max_total = 1 } }')
        router = make_router('[[proxy.routes]]\nname = "r"\ndest = "t3"\n', trunks=trunks, clock=self.clock)
        self.assertIsNone(router.check_trunk_policy("t3", "1001", "2000"))
        router.call_started(trunk_policy_id("t3"), "1001")
        self.assertEqual(router.check_trunk_policy("t3", "1001", "2000"), (403, "Concurrency limit reached for caller 1001"))
        self.assertIsNone(router.check_trunk_policy("t1", "1001", "2000"))

    def test_expired_windows_forgotten(self) -> None:
        """Expired frequency windows are swept, so memory does not grow
        with every caller ever seen."""
        router = make_router(policy_route("frequency_limit = { count = 1, window_hours = 1 }"), clock=self.clock)
        for i in range(50):
            self.call(router, caller=str(i))
        self.assertEqual(len(router.policies._frequency), 50)
        self.clock.advance(3601)
        self.call(router, caller="new")
        self.assertEqual(len(router.policies._frequency), 1)


class ClassifyTests(SynchronousTestCase):
    """L{classify}: a call's direction from realms and source trunk."""

    REALMS = ["pbx.example.com", "10.0.0.1:5060"]

    def direction(self, from_uri: str, uri: str, realms=None, **kw) -> str:
        req = make_request(from_uri=from_uri, uri=uri)
        return classify(req, self.REALMS if realms is None else realms, kw.pop("source_trunk", None), **kw)

    def test_empty_realms_everything_local(self) -> None:
        """With no realms every host is ours: calls are internal."""
        self.assertEqual(self.direction("sip:a@x.example", "sip:b@y.example", realms=[]), INTERNAL)

    def test_internal(self) -> None:
        """Both domains ours and the callee a user: internal."""
        self.assertEqual(self.direction("sip:1001@pbx.example.com", "sip:1002@PBX.example.com"), INTERNAL)

    def test_unknown_local_callee_is_outbound(self) -> None:
        """A number dialled at our domain that is no user goes out."""
        self.assertEqual(self.direction("sip:1001@pbx.example.com", "sip:0301234@pbx.example.com", callee_known=False), OUTBOUND)

    def test_outbound(self) -> None:
        """Our caller, a foreign callee: outbound."""
        self.assertEqual(self.direction("sip:1001@pbx.example.com", "sip:bob@elsewhere.example"), OUTBOUND)

    def test_inbound(self) -> None:
        """A foreign caller, our callee: inbound."""
        self.assertEqual(self.direction("sip:bob@elsewhere.example", "sip:1001@pbx.example.com"), INBOUND)

    def test_external_to_external(self) -> None:
        """Neither domain ours and no trunk: external (refuse with 403)."""
        self.assertEqual(self.direction("sip:a@x.example", "sip:b@y.example"), EXTERNAL)

    def test_from_trunk_is_inbound(self) -> None:
        """A call arriving over a trunk is inbound, whatever its domains."""
        self.assertEqual(self.direction("sip:a@x.example", "sip:b@y.example", source_trunk="t1"), INBOUND)
        self.assertEqual(self.direction("sip:1@pbx.example.com", "sip:2@pbx.example.com", source_trunk="t1"), INBOUND)

    def test_caller_realm_overrides_from_host(self) -> None:
        """The realm the caller authenticated in counts, not the From host."""
        self.assertEqual(self.direction("sip:a@x.example", "sip:b@y.example", caller_realm="pbx.example.com"), OUTBOUND)

    def test_localhost_and_local_hosts(self) -> None:
        """localhost addresses and the PBX's own addresses are ours."""
        self.assertEqual(self.direction("sip:a@x.example", "sip:1@127.0.0.1"), INBOUND)
        self.assertEqual(self.direction("sip:a@x.example", "sip:1@[::1]:5060"), INBOUND)
        self.assertEqual(self.direction("sip:a@x.example", "sip:1@203.0.113.9", local_hosts=["203.0.113.9"]), INBOUND)

    def test_realm_with_port(self) -> None:
        """A realm written host:port matches only that port."""
        self.assertTrue(is_local_host("10.0.0.1:5060", self.REALMS))
        self.assertFalse(is_local_host("10.0.0.1:5070", self.REALMS))
        self.assertFalse(is_local_host("10.0.0.1", self.REALMS))

    def test_callee_uri(self) -> None:
        """The callee is the Request-URI when it has a user, else To."""
        self.assertEqual(str(callee_uri(make_request(uri="sip:b@y.example", to_uri="sip:c@z.example"))), "sip:b@y.example")
        self.assertEqual(str(callee_uri(make_request(uri="sip:y.example", to_uri="sip:c@z.example"))), "sip:c@z.example")


class DestinationPolicyTests(SynchronousTestCase):
    """allowed_destination_countries and allow_landline, RustPBX's number
    checks (libphonenumber's data, through the phonenumbers package)."""

    def setUp(self) -> None:
        try:
            import phonenumbers  # noqa: F401
        except ImportError:
            raise self.skipTest("phonenumbers is not installed (a dependency in setup.cfg)")
        self.clock = task.Clock()

    def call(self, router: Router, callee: str) -> RouteDecision:
        return router.route(make_request(from_uri="sip:1001@pbx.example.com", uri=f"sip:{callee}@pbx.example.com"))

    def test_countries(self) -> None:
        """Only international callees in the listed regions pass (any
        case); others get 403 with RustPBX's reason; a non-geographic
        number has no country and is refused; national numbers are not
        checked (RustPBX parses without a default region)."""
        router = make_router(policy_route('allowed_destination_countries = ["de", "AT"]'), clock=self.clock)
        self.assertEqual(self.call(router, "+493012345678").action, "forward")
        refused = self.call(router, "+12015550123")
        self.assertEqual((refused.action, refused.code, refused.reason), ("reject", 403, "Destination country US not allowed for callee +12015550123"))
        self.assertEqual(self.call(router, "+80012345678").reason, "No country ID found for callee +80012345678")
        self.assertEqual(self.call(router, "030123456").action, "forward")

    def test_no_landline(self) -> None:
        """allow_landline = false refuses fixed lines (and the numbers
        that may be either, as RustPBX does) but lets mobiles through."""
        router = make_router(policy_route("allow_landline = false"), clock=self.clock)
        refused = self.call(router, "+493012345678")
        self.assertEqual((refused.code, refused.reason), (403, "Landline calls are not allowed: +493012345678"))
        self.assertEqual(self.call(router, "+12015550123").action, "reject")
        self.assertEqual(self.call(router, "+4915112345678").action, "forward")

    def test_landline_allowed(self) -> None:
        """allow_landline = true changes nothing."""
        router = make_router(policy_route("allow_landline = true"), clock=self.clock)
        self.assertEqual(self.call(router, "+493012345678").action, "forward")


class SampleConfigTollFraudTests(SynchronousTestCase):
    """
    The sample configuration (etc/pbx.toml with its routes and trunks)
    does not hairpin: a call that arrives from a trunk's address (which
    the auth module lets in without a challenge) to an external number
    must not leave through a trunk again, or anyone who can send from, or
    spoof, a provider's address calls premium numbers on our account.
    """

    def setUp(self):
        import os

        from rustpbx_py.config import load_config

        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        sample = os.path.join(repo, "etc", "pbx.toml")
        if not os.path.exists(sample):
            raise self.skipTest("etc/pbx.toml is not beside the package (an installed copy)")
        self.config = load_config(sample)
        self.router = Router.from_config(self.config.proxy, task.Clock())

    def decide(self, number: str, source_trunk: Optional[str]):
        request = make_request("INVITE", uri=f"sip:{number}@127.0.0.1", from_uri="sip:someone@192.0.2.10")
        direction = classify(request, self.config.proxy.realms, source_trunk, ["127.0.0.1"], None, False)
        return direction, self.router.route(request, source_trunk, direction)

    def test_trunk_call_to_external_number_not_sent_out(self):
        """An INVITE from the provider's inbound_hosts to 0441234567 (the
        outbound route's pattern) matches no route that sends it to a trunk."""
        from ipaddress import ip_address

        source = self.router.trunks.for_source(ip_address("192.0.2.10"), "someone", "0441234567")
        self.assertEqual(source, "provider")
        direction, decision = self.decide("0441234567", source)
        self.assertEqual(direction, INBOUND)
        if decision is not None:
            self.assertEqual((decision.action, list(decision.trunks)), ("forward", []), decision.route)

    def test_local_caller_still_goes_out(self):
        """The same number dialled by one of our users (outbound) still
        leaves through the provider: the sample's route works."""
        request = make_request("INVITE", uri="sip:0441234567@127.0.0.1", from_uri="sip:1001@127.0.0.1")
        direction = classify(request, self.config.proxy.realms, None, ["127.0.0.1"], None, False)
        decision = self.router.route(request, None, direction)
        self.assertEqual(direction, OUTBOUND)
        self.assertEqual(list(decision.trunks[:1]), ["provider"])
