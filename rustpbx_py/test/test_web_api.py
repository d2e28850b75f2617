"""
The JSON API's OpenAPI document (validated by openapi-spec-validator, a
maintained validator), and the configuration of the web server:
C{[console]}, C{http_addr}, C{https_addr}.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.test.test_config import ConfigTestMixin
from rustpbx_py.test.tls import write_self_signed
from rustpbx_py.test.web_support import WebTestMixin, validate_openapi


class OpenApiTests(WebTestMixin, TestCase):
    @defer.inlineCallbacks
    def test_document_valid(self):
        """/api/v1/openapi.json describes every resource install_api mounts
        and passes openapi-spec-validator; each operation documents the
        401 answer and the error schema."""
        site = yield self.start_web()
        response = yield self.api("GET", "/api/v1/openapi.json")
        self.assertEqual(response.code, 200)
        document = response.json()
        validate_openapi(document)
        self.assertEqual(document["openapi"], "3.0.3")
        for path in site.apis:
            self.assertTrue(any(p == "/api/v1/" + path or p.startswith("/api/v1/" + path + "/") for p in document["paths"]), path)
        health = document["paths"]["/api/v1/health"]["get"]
        self.assertEqual(health["responses"]["401"]["content"]["application/json"]["schema"], {"$ref": "#/components/schemas/Error"})

    def test_invalid_document_refused(self):
        """The validator does refuse a broken document (the test above can fail)."""
        from rustpbx_py.web.openapi import build_document

        site = type("S", (), {"apis": {}, "api_path": "/api/v1", "cookie_name": b"c"})()
        document = build_document(site)
        validate_openapi(document)
        document["paths"]["/x"] = {"get": {"responses": "nope"}}
        self.assertRaises(Exception, validate_openapi, document)


class WebConfigTests(ConfigTestMixin, SynchronousTestCase):
    def test_console_defaults(self):
        """An empty [console] gets RustPBX's defaults; no [console], none."""
        config = self.load("[console]\n")
        console = config.console
        self.assertEqual((console.base_path, console.api_prefix, console.secure_cookie), ("/console", "/api", False))
        self.assertIsNone(console.session_secret)
        self.assertEqual(console.api_tokens, [])
        self.assertIsNone(self.load("").console)
        self.assertEqual(config.http_addr, "0.0.0.0:8080")
        self.assertIsNone(config.https_addr)

    def test_console_keys(self):
        """Every key is read, tokens as {token, scopes} tables; paths lose a
        trailing slash."""
        config = self.load(
            '[console]\nsession_secret = "0123456789abcdef"\nbase_path = "/admin/"\napi_prefix = "/rest"\n'
            'secure_cookie = true\njssip_js = "https://cdn.example/jssip.js"\n'
            '[[console.api_tokens]]\ntoken = "abcdefghijklmnop"\nscopes = ["call.control"]\n'
        )
        c = config.console
        self.assertEqual((c.base_path, c.api_prefix, c.secure_cookie, c.jssip_js), ("/admin", "/rest", True, "https://cdn.example/jssip.js"))
        self.assertEqual([(t.token, t.scopes) for t in c.api_tokens], [("abcdefghijklmnop", ["call.control"])])

    def test_console_problems(self):
        """Bad values are refused naming the file, the key and what was
        expected."""
        cases = [
            ('[console]\nsession_secret = "short"\n', "console.session_secret", "at least 16 characters"),
            ('[console]\nbase_path = "console"\n', "console.base_path", 'starting with "/"'),
            ('[console]\nbase_path = "/"\n', "console.base_path", 'below "/"'),
            ('[console]\napi_prefix = "/console/api"\n', "console.api_prefix", "apart from base_path"),
            ('[console]\nsecure_cookie = "yes"\n', "console.secure_cookie", "true or false"),
            ('[[console.api_tokens]]\ntoken = "short"\n', "console.api_tokens[0].token", "at least 16 characters"),
            ('[[console.api_tokens]]\nscopes = []\n', "console.api_tokens[0].token", "missing required key"),
            ('[[console.api_tokens]]\ntoken = "abcdefghijklmnop"\n[[console.api_tokens]]\ntoken = "abcdefghijklmnop"\n',
             "console.api_tokens[1]", "listed twice"),
            ('[console]\nbase_pth = "/x"\n', "console.base_pth", "unknown key"),
            ('http_addr = "0.0.0.0:8089"\n[proxy]\nws_port = 8089\n', "http_addr", "proxy.ws_port is 8089"),
            ('http_addr = "8080"\n', "http_addr", '"host:port"'),
            ('https_addr = "0.0.0.0:8443"\n', "https_addr", "needs ssl_certificate"),
            ('http_addr = "0.0.0.0:8080"\nhttps_addr = "0.0.0.0:8080"\nssl_certificate = "c.pem"\nssl_private_key = "k.pem"\n',
             "https_addr", "another address than http_addr"),
        ]
        for text, key, words in cases:
            files = None
            if "c.pem" in text:
                base = self.tree({})
                cert, key_file = write_self_signed(base)
                text = text.replace('"c.pem"', f'"{cert}"').replace('"k.pem"', f'"{key_file}"')
            problem = self.only_problem(text, files)
            self.assertNames(problem, "pbx.toml", key)
            self.assertIn(words, problem)

    def test_console_not_implemented_keys(self):
        """RustPBX's console keys we do not use are warnings, not errors."""
        config = self.load('[console]\nallow_registration = true\nlocales = {}\n')
        self.assertEqual(len(config.warnings), 2, config.warnings)
        self.assertIn("console.allow_registration", config.warnings[0])

    def test_https_default_with_top_level_files(self):
        """As in RustPBX, top-level certificate files alone turn HTTPS on at
        0.0.0.0:8443; [proxy]'s files alone do not (they need https_addr)."""
        base = self.tree({})
        cert, key = write_self_signed(base)
        config = self.load(f'ssl_certificate = "{cert}"\nssl_private_key = "{key}"\n')
        self.assertEqual(config.https_addr, "0.0.0.0:8443")
        config = self.load(f'[proxy]\nssl_certificate = "{cert}"\nssl_private_key = "{key}"\n')
        self.assertIsNone(config.https_addr)
        config = self.load(f'https_addr = "127.0.0.1:9443"\n[proxy]\nssl_certificate = "{cert}"\nssl_private_key = "{key}"\n')
        self.assertEqual(config.https_addr, "127.0.0.1:9443")

    def test_default_config_has_no_web(self):
        """default_config() (tests of the other layers) serves no HTTP."""
        from rustpbx_py.config import default_config

        config = default_config()
        self.assertIsNone(config.http_addr)
        self.assertIsNone(config.https_addr)
