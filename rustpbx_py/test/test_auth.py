"""
Tests for L{rustpbx_py.modules.auth}.
"""

from twisted.internet import defer, task
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase

import rustpbx_py.plugins
from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule, IProxyModuleFactory
from rustpbx_py.modules.acl import AclModule
from rustpbx_py.modules.auth import AuthModule, DialogAuthCache, NonceManager, select_realm
from rustpbx_py.modules.guard import MAX_DELAY
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.sip import digest
from rustpbx_py.sip.headers import parse_auth_params
from rustpbx_py.test.fakes import FakeServerContext, make_tx, proxy_config
from rustpbx_py.users import MemoryUserBackend, SipUser, SpamDetected, UserBackendError

ALICE = SipUser("alice", password="wonderland")


def challenges(response):
    """The (algorithm, params) of each challenge of a 401/407, in order."""
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    out = []
    for value in response.get_all(name):
        scheme, params = parse_auth_params(value)
        assert scheme == "Digest"
        out.append((params.get("algorithm", "MD5"), params))
    return out


def credentials(response, username, password, method, uri, algorithm="SHA-256", nc=1, cnonce="0a4f113b", realm=None, nonce=None):
    """
    What a client answers to the challenge of C{algorithm} in C{response}:
    the header name and value.
    """
    params = dict(challenges(response))[algorithm]
    realm = realm if realm is not None else params["realm"]
    nonce = nonce if nonce is not None else params["nonce"]
    ha1 = digest.compute_ha1(algorithm, username, realm, password)
    nc_text = f"{nc:08x}"
    value = digest.compute_response(algorithm, ha1, method, uri, nonce, nc_text, cnonce, "auth")
    header = "Authorization" if response.status == 401 else "Proxy-Authorization"
    return header, (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{value}", algorithm={algorithm}, qop=auth, nc={nc_text}, cnonce="{cnonce}"'
    )


class AuthTestMixin:
    """Builds an auth module over memory users on a task.Clock."""

    def module(self, users=(ALICE,), **overrides):
        overrides.setdefault("ensure_user", False)
        overrides.setdefault("realms", ["example.com"])
        # The credential tests exercise both hashes; default=True keeps the
        # shipped default (one MD5 challenge).
        if overrides.pop("default", False):
            overrides.pop("auth_algorithms", None)
        else:
            overrides.setdefault("auth_algorithms", ["MD5", "SHA-256"])
        self.clock = task.Clock()
        self.clock.advance(1000)
        backend = users if hasattr(users, "get_user") else MemoryUserBackend(list(users))
        self.auth = AuthModule(proxy_config(**overrides), backend, self.clock)
        return self.auth

    def begin(self, tx):
        """Run the module on C{tx}; the action it answered (waiting for Deferreds)."""
        result = self.auth.on_transaction_begin(tx)
        if isinstance(result, defer.Deferred):
            if not result.called:
                # A failed login's 403 is held back (see test_guard).
                self.clock.advance(MAX_DELAY)
            result = self.successResultOf(result)
        return result

    def register(self, remote=("192.0.2.10", 5060), headers=(), **kw):
        kw.setdefault("from_uri", "sip:alice@example.com")
        tx = make_tx(method="REGISTER", uri="sip:example.com", remote=remote, headers=headers, **kw)
        return self.begin(tx), tx

    def invite(self, remote=("192.0.2.10", 5060), headers=(), **kw):
        tx = make_tx(method=kw.pop("method", "INVITE"), uri=kw.pop("uri", "sip:bob@example.com"), remote=remote, headers=headers, **kw)
        return self.begin(tx), tx

    def login(self, algorithm="SHA-256", method="REGISTER", password="wonderland", **kw):
        """Challenge then answer: (action, tx) of the authenticated request."""
        send = self.register if method == "REGISTER" else self.invite
        uri = "sip:example.com" if method == "REGISTER" else kw.get("uri", "sip:bob@example.com")
        action, tx = send(**kw)
        self.assertEqual(action, ABORT)
        header = credentials(tx.last, "alice", password, method, uri, algorithm)
        return send(headers=[header], **kw)


class ChallengeTests(AuthTestMixin, SynchronousTestCase):
    """What an unauthenticated request gets."""

    def test_register_401(self):
        """REGISTER without credentials, default config: 401 with exactly one
        challenge, MD5 with qop="auth" (as Kamailio and Asterisk send: baresip
        gives up on two, JsSIP keeps only the last one)."""
        self.module(default=True)
        action, tx = self.register()
        self.assertEqual(action, ABORT)
        self.assertEqual(tx.last.status, 401)
        self.assertFalse(tx.last.has("Proxy-Authenticate"))
        self.assertEqual(len(tx.last.get_all("WWW-Authenticate")), 1)
        offered = challenges(tx.last)
        self.assertEqual([a for a, _ in offered], ["MD5"])
        for _, params in offered:
            self.assertEqual(params["realm"], "example.com")
            self.assertEqual(params["qop"], "auth")
            self.assertNotIn("stale", params)

    def test_configured_order(self):
        """auth_algorithms = ["SHA-256", "MD5"]: two challenges in that order,
        and an answer with either is accepted."""
        self.module(auth_algorithms=["SHA-256", "MD5"])
        _, tx = self.register()
        self.assertEqual([a for a, _ in challenges(tx.last)], ["SHA-256", "MD5"])
        for algorithm in ("SHA-256", "MD5"):
            action, tx = self.login(algorithm)
            self.assertEqual((action, tx.responses), (CONTINUE, []), algorithm)

    def test_unlisted_algorithm_rechallenged(self):
        """With the default (MD5 only) a SHA-256 answer, computed right, is not
        accepted: it gets a new MD5 challenge."""
        self.module(default=True)
        _, first = self.register()
        nonce = challenges(first.last)[0][1]["nonce"]
        ha1 = digest.compute_ha1("SHA-256", "alice", "example.com", "wonderland")
        value = digest.compute_response("SHA-256", ha1, "REGISTER", "sip:example.com", nonce, "00000001", "c1", "auth")
        header = ("Authorization", f'Digest username="alice", realm="example.com", nonce="{nonce}", uri="sip:example.com", '
                  f'response="{value}", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c1"')
        action, tx = self.register(headers=[header])
        self.assertEqual((action, tx.last.status), (ABORT, 401))
        self.assertEqual([a for a, _ in challenges(tx.last)], ["MD5"])
        self.assertIsNone(tx.context.user)

    def test_sess_algorithm(self):
        """SHA-256-sess (RFC 7616), when configured, is offered and checked."""
        self.module(auth_algorithms=["SHA-256-sess"])
        action, tx = self.login("SHA-256-sess")
        self.assertEqual((action, tx.responses), (CONTINUE, []))
        self.assertEqual(tx.context.user.username, "alice")
        action, tx = self.login("SHA-256-sess", password="guess")
        self.assertEqual(tx.last.status, 403)

    def test_register_401_two_algorithms(self):
        """With auth_algorithms = ["MD5", "SHA-256"] both are offered, qop=auth, one realm."""
        self.module()
        action, tx = self.register()
        self.assertEqual(action, ABORT)
        self.assertEqual(tx.last.status, 401)
        offered = challenges(tx.last)
        self.assertEqual([a for a, _ in offered], ["MD5", "SHA-256"])
        for _, params in offered:
            self.assertEqual(params["realm"], "example.com")
            self.assertEqual(params["qop"], "auth")
            self.assertNotIn("stale", params)

    def test_invite_407(self):
        """Other requests get 407 with Proxy-Authenticate."""
        self.module()
        action, tx = self.invite()
        self.assertEqual((action, tx.last.status), (ABORT, 407))
        self.assertEqual(len(challenges(tx.last)), 2)
        self.assertFalse(tx.last.has("WWW-Authenticate"))

    def test_nonces_differ(self):
        """Every challenge has a fresh nonce."""
        self.module()
        n1 = challenges(self.register()[1].last)[0][1]["nonce"]
        n2 = challenges(self.register()[1].last)[0][1]["nonce"]
        self.assertNotEqual(n1, n2)

    def test_never_challenged(self):
        """ACK and CANCEL pass untouched (RFC 3261 22.1)."""
        self.module()
        for method in ("ACK", "CANCEL"):
            action, tx = self.invite(method=method)
            self.assertEqual((action, tx.responses), (CONTINUE, []), method)

    def test_options_to_self(self):
        """OPTIONS to the PBX itself is left to the core; OPTIONS to a user is challenged."""
        self.module()
        action, tx = self.invite(method="OPTIONS", uri="sip:example.com")
        self.assertEqual((action, tx.responses), (CONTINUE, []))
        action, tx = self.invite(method="OPTIONS", uri="sip:bob@example.com")
        self.assertEqual(tx.last.status, 407)

    def test_trunk_bypass(self):
        """A request the acl module matched to a trunk is not challenged."""
        self.module()
        tx = make_tx(method="INVITE")
        tx.context.trunk = "carrier"
        self.assertEqual(self.begin(tx), CONTINUE)
        self.assertEqual(tx.responses, [])
        self.assertIsNone(tx.context.user)

    def test_configured_algorithms(self):
        """The offered algorithms can be narrowed (for phones that choke on SHA-256)."""
        clock = task.Clock()
        self.auth = AuthModule(proxy_config(realms=["example.com"]), MemoryUserBackend([ALICE]), clock, algorithms=["MD5"])
        _, tx = self.register()
        self.assertEqual([a for a, _ in challenges(tx.last)], ["MD5"])


class CredentialTests(AuthTestMixin, SynchronousTestCase):
    """What answered challenges get."""

    def test_md5(self):
        """A right MD5 answer continues with the user and realm set."""
        self.module()
        action, tx = self.login("MD5")
        self.assertEqual(action, CONTINUE)
        self.assertEqual(tx.responses, [])
        self.assertEqual(tx.context.user.username, "alice")
        self.assertEqual(tx.context.realm, "example.com")

    def test_sha256(self):
        """A right SHA-256 answer continues."""
        self.module()
        action, tx = self.login("SHA-256")
        self.assertEqual(action, CONTINUE)
        self.assertEqual(tx.context.user.username, "alice")

    def test_invite_proxy_authorization(self):
        """An INVITE answered with Proxy-Authorization continues."""
        self.module()
        action, tx = self.login("SHA-256", method="INVITE")
        self.assertEqual(action, CONTINUE)

    def test_wrong_password(self):
        """A wrong password is answered 403, without a new challenge."""
        self.module()
        action, tx = self.login("MD5", password="guess")
        self.assertEqual((action, tx.last.status), (ABORT, 403))
        self.assertFalse(tx.last.has("WWW-Authenticate"))
        self.assertIsNone(tx.context.user)

    def test_stale_nonce(self):
        """A right answer with an expired nonce gets a new challenge with stale=true."""
        self.module()
        _, first = self.register()
        header = credentials(first.last, "alice", "wonderland", "REGISTER", "sip:example.com")
        self.clock.advance(301)
        action, tx = self.register(headers=[header])
        self.assertEqual((action, tx.last.status), (ABORT, 401))
        offered = challenges(tx.last)
        self.assertEqual(offered[0][1]["stale"], "true")
        self.assertNotEqual(offered[0][1]["nonce"], dict(challenges(first.last))["SHA-256"]["nonce"])
        # ... and the new nonce works.
        action, tx = self.register(headers=[credentials(tx.last, "alice", "wonderland", "REGISTER", "sip:example.com")])
        self.assertEqual(action, CONTINUE)

    def test_stale_wrong_password(self):
        """An expired nonce does not hide a wrong password: 403."""
        self.module()
        _, first = self.register()
        header = credentials(first.last, "alice", "nope", "REGISTER", "sip:example.com")
        self.clock.advance(301)
        self.assertEqual(self.register(headers=[header])[1].last.status, 403)

    def test_replayed_nonce_count(self):
        """A nonce-count that does not increase is a replay: challenged again (stale), never accepted."""
        self.module()
        _, first = self.register()
        nc1 = credentials(first.last, "alice", "wonderland", "REGISTER", "sip:example.com", nc=1)
        self.assertEqual(self.register(headers=[nc1])[0], CONTINUE)
        action, tx = self.register(headers=[nc1])
        self.assertEqual((action, tx.last.status), (ABORT, 401))
        self.assertEqual(challenges(tx.last)[0][1]["stale"], "true")
        self.assertIsNone(tx.context.user)
        nc2 = credentials(first.last, "alice", "wonderland", "REGISTER", "sip:example.com", nc=2, cnonce="other")
        self.assertEqual(self.register(headers=[nc2])[0], CONTINUE)

    def test_rfc2069_without_qop(self):
        """
        A client that ignores qop (RFC 2069 form, still allowed by RFC 3261)
        is accepted once per nonce; reusing the nonce is a replay.
        """
        self.module()
        _, first = self.register()
        params = dict(challenges(first.last))["MD5"]
        ha1 = digest.compute_ha1("MD5", "alice", "example.com", "wonderland")
        value = digest.compute_response("MD5", ha1, "REGISTER", "sip:example.com", params["nonce"])
        header = (
            "Authorization",
            f'Digest username="alice", realm="example.com", nonce="{params["nonce"]}", '
            f'uri="sip:example.com", response="{value}"',
        )
        self.assertEqual(self.register(headers=[header])[0], CONTINUE)
        action, tx = self.register(headers=[header])
        self.assertEqual((action, tx.last.status), (ABORT, 401))
        self.assertEqual(challenges(tx.last)[0][1]["stale"], "true")

    def test_forged_nonce(self):
        """A nonce we did not issue (another process's, a restart) is stale even with the right password."""
        self.module()
        other = NonceManager(task.Clock())
        _, first = self.register()
        header = credentials(first.last, "alice", "wonderland", "REGISTER", "sip:example.com", nonce=other.issue("example.com"))
        action, tx = self.register(headers=[header])
        self.assertEqual(tx.last.status, 401)
        self.assertEqual(challenges(tx.last)[0][1]["stale"], "true")

    def test_wrong_realm(self):
        """Credentials for another realm are not ours (RFC 3261 22.3): a new challenge, not 403."""
        self.module()
        _, first = self.register()
        header = credentials(first.last, "alice", "wonderland", "REGISTER", "sip:example.com", realm="elsewhere.org")
        action, tx = self.register(headers=[header])
        self.assertEqual((action, tx.last.status), (ABORT, 401))
        self.assertNotIn("stale", challenges(tx.last)[0][1])

    def test_malformed_credentials(self):
        """Unparsable credentials are ignored: the request is challenged."""
        self.module()
        action, tx = self.register(headers=[("Authorization", 'Digest username="alice"')])
        self.assertEqual(tx.last.status, 401)

    def test_disabled_user(self):
        """A disabled user with the right password gets 403."""
        self.module(users=[SipUser("alice", password="wonderland", enabled=False)])
        self.assertEqual(self.login("MD5")[1].last.status, 403)

    def test_unknown_user_with_credentials(self):
        """Without ensure_user, credentials of an unknown user get 403."""
        self.module(users=[])
        self.assertEqual(self.login("MD5")[1].last.status, 403)

    def test_stored_ha1(self):
        """A user stored as an MD5 HA1 authenticates, and with ensure_user is only offered MD5."""
        ha1 = digest.compute_ha1("MD5", "alice", "example.com", "wonderland")
        self.module(users=[SipUser("alice", ha1=ha1)], ensure_user=True)
        action, tx = self.register()
        self.assertEqual([a for a, _ in challenges(tx.last)], ["MD5"])
        action, tx = self.login("MD5")
        self.assertEqual(action, CONTINUE)

    def test_algorithm_without_hash(self):
        """A client choosing SHA-256 for an MD5-only user is challenged again with MD5 only."""
        ha1 = digest.compute_ha1("MD5", "alice", "example.com", "wonderland")
        self.module(users=[SipUser("alice", ha1=ha1)])
        action, tx = self.login("SHA-256")
        self.assertEqual([a for a, _ in challenges(tx.last)], ["MD5"])


class EnsureUserTests(AuthTestMixin, SynchronousTestCase):
    """C{ensure_user}: no 401 for users nobody knows."""

    def test_unknown_user_silence(self):
        """With ensure_user, a request from an unknown user is dropped without any answer."""
        self.module(ensure_user=True)
        action, tx = self.register(from_uri="sip:1001@example.com")
        self.assertEqual((action, tx.responses, tx.context.spam), (ABORT, [], True))

    def test_unknown_user_credentials_silence(self):
        """With ensure_user, credentials naming an unknown user are dropped silently too."""
        self.module(users=[], ensure_user=True)
        self.clock = self.auth._reactor
        tx = make_tx(method="REGISTER", uri="sip:example.com", from_uri="sip:x@example.com")
        tx.reply(401)  # a challenge as another node would have sent it
        tx.last.add("WWW-Authenticate", digest.format_challenge("example.com", self.auth.nonces.issue("example.com"), "MD5"))
        header = credentials(tx.last, "ghost", "pw", "REGISTER", "sip:example.com", "MD5")
        action, tx = self.register(headers=[header], from_uri="sip:ghost@example.com")
        self.assertEqual((action, tx.responses, tx.context.spam), (ABORT, [], True))

    def test_known_user_challenged(self):
        """With ensure_user, a known user is challenged as usual."""
        self.module(ensure_user=True)
        self.assertEqual(self.register()[1].last.status, 401)

    def test_without_ensure_user(self):
        """Without ensure_user, anybody is challenged."""
        self.module(ensure_user=False)
        action, tx = self.register(from_uri="sip:1001@example.com")
        self.assertEqual(tx.last.status, 401)


class RealmTests(AuthTestMixin, SynchronousTestCase):
    """Which realm a request is challenged in."""

    def test_select_realm(self):
        """The configured realm naming the host, else the first one, else the host."""
        self.assertEqual(select_realm(["a.com", "b.com"], "B.com:5060"), "b.com")
        self.assertEqual(select_realm(["a.com", "b.com"], "192.0.2.1"), "a.com")
        self.assertEqual(select_realm([], "pbx.example.net:5060"), "pbx.example.net")

    def test_register_uses_request_uri(self):
        """REGISTER is challenged in the realm of its Request-URI."""
        self.module(realms=["a.com", "b.com"])
        tx = make_tx(method="REGISTER", uri="sip:b.com", from_uri="sip:alice@a.com")
        self.begin(tx)
        self.assertEqual(challenges(tx.last)[0][1]["realm"], "b.com")

    def test_invite_uses_from(self):
        """An INVITE is challenged in the caller's (From) realm."""
        self.module(realms=["a.com", "b.com"])
        tx = make_tx(method="INVITE", uri="sip:bob@a.com", from_uri="sip:alice@b.com")
        self.begin(tx)
        self.assertEqual(challenges(tx.last)[0][1]["realm"], "b.com")


class FailureTests(AuthTestMixin, SynchronousTestCase):
    """Backends that cannot answer."""

    class Failing:
        def __init__(self, error):
            self.error = error

        def get_user(self, username, realm):
            return defer.fail(self.error)

    def test_backend_down(self):
        """A user look-up that fails is answered 503 with Retry-After, not 403."""
        self.module(users=self.Failing(UserBackendError("down")), ensure_user=True)
        action, tx = self.register()
        self.assertEqual((action, tx.last.status, tx.last.get("Retry-After")), (ABORT, 503, "5"))

    def test_spam(self):
        """A user service that reports spam gets the request dropped silently."""
        self.module(users=self.Failing(SpamDetected("spam")), ensure_user=True)
        action, tx = self.register()
        self.assertEqual((action, tx.responses, tx.context.spam), (ABORT, [], True))


class DialogCacheTests(AuthTestMixin, SynchronousTestCase):
    """C{dialog_auth_cache}: in-dialog requests from the authenticating source."""

    def in_dialog(self, call_id="call-1@192.0.2.10", remote=("192.0.2.10", 5060), method="BYE", from_tag="fromtag1"):
        return self.invite(method=method, call_id=call_id, remote=remote, to_tag="totag9", cseq=2, from_tag=from_tag)

    def authenticate(self, call_id="call-1@192.0.2.10", remote=("192.0.2.10", 5060)):
        action, tx = self.login("SHA-256", method="INVITE", call_id=call_id, remote=remote)
        self.assertEqual(action, CONTINUE)

    def test_hit(self):
        """A BYE of an authenticated dialog from the same address passes with the user set."""
        self.module()
        self.authenticate()
        action, tx = self.in_dialog()
        self.assertEqual((action, tx.responses), (CONTINUE, []))
        self.assertEqual(tx.context.user.username, "alice")
        self.assertEqual(tx.context.realm, "example.com")
        self.assertEqual(self.in_dialog(method="INVITE")[0], CONTINUE, "re-INVITE too")

    def test_miss(self):
        """Another source address, another dialog, or another From tag is challenged."""
        self.module()
        self.authenticate()
        self.assertEqual(self.in_dialog(remote=("192.0.2.10", 5062))[1].last.status, 407)
        self.assertEqual(self.in_dialog(remote=("198.51.100.1", 5060))[1].last.status, 407)
        self.assertEqual(self.in_dialog(call_id="other")[1].last.status, 407)
        self.assertEqual(self.in_dialog(from_tag="x")[1].last.status, 407)

    def test_ttl(self):
        """After ttl_seconds the dialog must authenticate again."""
        self.module(dialog_auth_cache={"enabled": True, "cache_size": 10, "ttl_seconds": 60})
        self.authenticate()
        self.clock.advance(59)
        self.assertEqual(self.in_dialog()[0], CONTINUE)
        self.clock.advance(2)
        self.assertEqual(self.in_dialog()[1].last.status, 407)

    def test_lru(self):
        """Beyond cache_size the least recently used dialog is forgotten."""
        self.module(dialog_auth_cache={"enabled": True, "cache_size": 2, "ttl_seconds": 600})
        self.authenticate("c1")
        self.authenticate("c2")
        self.assertEqual(self.in_dialog("c1")[0], CONTINUE)  # c1 is now the most recent
        self.authenticate("c3")
        self.assertEqual(self.in_dialog("c1")[0], CONTINUE)
        self.assertEqual(self.in_dialog("c3")[0], CONTINUE)
        self.assertEqual(self.in_dialog("c2")[1].last.status, 407)
        self.assertEqual(len(self.auth.dialog_cache), 2)

    def test_disabled(self):
        """With the cache disabled every in-dialog request is challenged."""
        self.module(dialog_auth_cache={"enabled": False})
        self.authenticate()
        self.assertEqual(self.in_dialog()[1].last.status, 407)

    def test_register_not_cached(self):
        """REGISTER creates no dialog, so it takes no cache slot."""
        self.module()
        self.login("MD5")
        self.assertEqual(len(self.auth.dialog_cache), 0)

    def test_trust_dialog(self):
        """The call module can vouch for a dialog it opened (its callee's BYE is not challenged)."""
        self.module()
        tx = make_tx()
        self.auth.trust_dialog("call-b@pbx", "calleetag", tx.flow)
        action, tx = self.invite(method="BYE", call_id="call-b@pbx", from_tag="calleetag", to_tag="ours")
        self.assertEqual(action, CONTINUE)

    def test_cache_unit(self):
        """DialogAuthCache: the source must match, entries expire, and the size is bounded."""
        clock = task.Clock()
        cache = DialogAuthCache(clock, size=1, ttl=10)
        cache.put("c", "t", ("UDP", "a", 1), "user", "realm")
        self.assertIsNone(cache.get("c", "t", ("UDP", "a", 2)))
        self.assertEqual(cache.get("c", "t", ("UDP", "a", 1)), ("user", "realm"))
        cache.put("d", "t", ("UDP", "a", 1))
        self.assertIsNone(cache.get("c", "t", ("UDP", "a", 1)))
        clock.advance(10)
        self.assertIsNone(cache.get("d", "t", ("UDP", "a", 1)))
        self.assertEqual(len(cache), 0)


class NonceTests(SynchronousTestCase):
    """NonceManager: stateless nonces, bounded nonce-count memory."""

    def test_bound_to_realm(self):
        """A nonce issued for one realm is not valid in another."""
        nonces = NonceManager(task.Clock())
        n = nonces.issue("a.com")
        self.assertTrue(nonces.fresh(n, "A.com"))
        self.assertFalse(nonces.fresh(n, "b.com"))
        self.assertFalse(nonces.fresh("garbage", "a.com"))

    def test_shared_secret(self):
        """Two nodes with one secret accept each other's nonces."""
        clock = task.Clock()
        a, b = NonceManager(clock, b"k" * 32), NonceManager(clock, b"k" * 32)
        self.assertTrue(b.fresh(a.issue("r"), "r"))

    def test_bounded_counts(self):
        """
        Nonce-counts are kept for a bounded number of nonces; forgotten
        nonces become stale rather than replayable.
        """
        clock = task.Clock()
        nonces = NonceManager(clock, lifetime=300, max_tracked=3)
        issued = []
        for _ in range(4):
            clock.advance(1)
            issued.append(nonces.issue("r"))
        for n in issued:
            self.assertTrue(nonces.use(n, 1))
        self.assertEqual(len(nonces), 3)
        self.assertFalse(nonces.fresh(issued[0], "r"), "the forgotten nonce is stale")
        self.assertTrue(nonces.fresh(issued[3], "r"))
        clock.advance(400)
        nonces.use(nonces.issue("r"), 1)
        self.assertEqual(len(nonces), 1, "expired nonces are pruned")


class PipelineTests(AuthTestMixin, SynchronousTestCase):
    """acl and auth together, through the pipeline."""

    def test_acl_then_auth(self):
        """A trunk source passes both; a scanner is dropped by acl before auth challenges it."""
        clock = task.Clock()
        proxy = proxy_config(
            realms=["example.com"], ensure_user=False, trunks={"carrier": {"dest": "sip:198.51.100.1"}}
        )
        pipeline = Pipeline([AclModule(proxy, clock), AuthModule(proxy, MemoryUserBackend([ALICE]), clock)])
        tx = make_tx(method="INVITE", remote=("198.51.100.1", 5060))
        self.assertFalse(self.successResultOf(pipeline.run(tx)))
        self.assertEqual((tx.context.trunk, tx.responses), ("carrier", []))
        tx = make_tx(method="REGISTER", user_agent="friendly-scanner")
        self.assertTrue(self.successResultOf(pipeline.run(tx)))
        self.assertEqual((tx.context.spam, tx.responses), (True, []))
        tx = make_tx(method="REGISTER", uri="sip:example.com")
        self.assertTrue(self.successResultOf(pipeline.run(tx)))
        self.assertEqual(tx.last.status, 401)


class NonceSecretTests(AuthTestMixin, SynchronousTestCase):
    """C{nonce_secret}: nodes that share it accept each other's nonces."""

    def node(self, clock, secret=None):
        overrides = {"realms": ["example.com"], "ensure_user": False}
        if secret is not None:
            overrides["nonce_secret"] = secret
        return AuthModule(proxy_config(**overrides), MemoryUserBackend([ALICE]), clock)

    def answer_elsewhere(self, first, second):
        """Challenged by C{first}, the right answer sent to C{second}: its action and tx."""
        self.auth = first
        _, challenged = self.register()
        header = credentials(challenged.last, "alice", "wonderland", "REGISTER", "sip:example.com", "MD5")
        self.auth = second
        return self.register(headers=[header])

    def test_shared_secret(self):
        """Two modules configured with the same nonce_secret accept each other's nonces."""
        clock = task.Clock()
        clock.advance(1000)
        a, b = self.node(clock, "office-cluster-key"), self.node(clock, "office-cluster-key")
        action, tx = self.answer_elsewhere(a, b)
        self.assertEqual((action, tx.responses), (CONTINUE, []))
        self.assertEqual(tx.context.user.username, "alice")

    def test_different_secrets(self):
        """With different secrets (or none: random per process) the other node's
        nonce is not ours: the right password gets a fresh challenge, not access."""
        clock = task.Clock()
        clock.advance(1000)
        for first, second in [
            (self.node(clock, "key-one"), self.node(clock, "key-two")),
            (self.node(clock), self.node(clock)),
        ]:
            action, tx = self.answer_elsewhere(first, second)
            self.assertEqual((action, tx.last.status), (ABORT, 401))
            self.assertIsNone(tx.context.user)


class LimiterCreditTests(AuthTestMixin, SynchronousTestCase):
    """What the auth module refunds to the acl module's frequency limiter."""

    def with_credit(self, tx):
        tx.context.credit = self.credits.append
        return tx

    def send(self, method, headers=()):
        uri = "sip:example.com" if method == "REGISTER" else "sip:bob@example.com"
        tx = self.with_credit(make_tx(method=method, uri=uri, headers=headers, from_uri="sip:alice@example.com"))
        return self.begin(tx), tx

    def test_login_refunds_challenge(self):
        """A login refunds itself and, on its nonce's first use, the challenged
        request (and for INVITE its ACK); a later request on the same nonce
        refunds only itself."""
        for method, first in (("REGISTER", 2), ("INVITE", 3)):
            self.module()
            self.credits = []
            _, challenged = self.send(method)
            self.assertEqual(self.credits, [], "a challenge earns nothing")
            header = credentials(challenged.last, "alice", "wonderland", method, challenged.request.uri, "MD5")
            action, _ = self.send(method, [header])
            self.assertEqual((action, self.credits), (CONTINUE, [first]), method)
            header = credentials(challenged.last, "alice", "wonderland", method, challenged.request.uri, "MD5", nc=2)
            self.send(method, [header])
            self.assertEqual(self.credits, [first, 1], method)

    def test_failures_earn_nothing(self):
        """A wrong password, an unknown user and a forged nonce refund nothing."""
        self.module()
        self.credits = []
        _, challenged = self.send("REGISTER")
        self.send("REGISTER", [credentials(challenged.last, "alice", "guess", "REGISTER", "sip:example.com", "MD5")])
        self.send("REGISTER", [credentials(challenged.last, "mallory", "x", "REGISTER", "sip:example.com", "MD5")])
        self.send("REGISTER", [credentials(challenged.last, "alice", "wonderland", "REGISTER", "sip:example.com", "MD5", nonce="AAAA")])
        self.assertEqual(self.credits, [])

    def test_dialog_cache_hit_refunds(self):
        """An in-dialog request the dialog cache trusts is refunded like a login."""
        self.module()
        tx = make_tx()
        self.auth.trust_dialog("call-b@pbx", "calleetag", tx.flow)
        self.credits = []
        tx = self.with_credit(make_tx(method="BYE", call_id="call-b@pbx", from_tag="calleetag", to_tag="ours"))
        self.assertEqual(self.begin(tx), CONTINUE)
        self.assertEqual(self.credits, [1])


class PluginTests(SynchronousTestCase):
    """The auth module is found as a plugin."""

    def test_plugin(self):
        """getPlugins finds "auth", which builds an IProxyModule with the context's users."""
        factory = {p.name: p for p in getPlugins(IProxyModuleFactory, rustpbx_py.plugins)}["auth"]
        self.assertTrue(IPlugin.providedBy(factory))
        users = MemoryUserBackend([ALICE])
        module = factory.build(FakeServerContext(proxy_config(), users=users))
        self.assertTrue(IProxyModule.providedBy(module))
        self.assertIs(module.users, users)
        self.assertEqual(module.name, "auth")

    def test_plugin_builds_users(self):
        """Without a user chain in the context, the factory builds one from user_backends."""
        factory = {p.name: p for p in getPlugins(IProxyModuleFactory, rustpbx_py.plugins)}["auth"]
        proxy = proxy_config(user_backends=[{"type": "memory", "users": [{"username": "bob", "password": "x"}]}])
        module = factory.build(FakeServerContext(proxy))
        self.assertEqual(self.successResultOf(module.users.get_user("bob", "x")).password, "x")
