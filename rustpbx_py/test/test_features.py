"""Tests for L{rustpbx_py.features}: settings without effect are named."""

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.config import parse_config_text
from rustpbx_py.features import pending_features


class PendingFeatureTests(SynchronousTestCase):
    def test_media_proxy(self):
        """Any media_proxy but "none" warns that RTP is not relayed yet."""
        (warning,) = pending_features(parse_config_text('[proxy]\nmedia_proxy = "all"\n'))
        self.assertIn("proxy.media_proxy", warning)
        self.assertIn("not implemented yet", warning)

    def test_media_none_is_quiet(self):
        """media_proxy = "none" is what the PBX does: no warning."""
        self.assertEqual(pending_features(parse_config_text('[proxy]\nmedia_proxy = "none"\n')), [])

    def test_queue_route(self):
        """A route whose action needs queues is named."""
        config = parse_config_text(
            '[proxy]\nmedia_proxy = "none"\n[[proxy.routes]]\nname = "q"\nqueue = "support"\n'
        )
        (warning,) = pending_features(config)
        self.assertIn("route 'q'", warning)

    def test_http_backend_fields(self):
        """http backend fields the look-up cannot send are named."""
        config = parse_config_text(
            '[proxy]\nmedia_proxy = "none"\n[[proxy.user_backends]]\ntype = "http"\n'
            'url = "http://127.0.0.1:1/users"\ntoken_header = "X-Token"\n'
        )
        (warning,) = pending_features(config)
        self.assertIn("token_header", warning)
