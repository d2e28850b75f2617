"""Tests for L{rustpbx_py.features}: settings without effect are named."""

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.config import parse_config_text
from rustpbx_py.features import pending_features


class PendingFeatureTests(SynchronousTestCase):
    def test_media_proxy(self):
        """A media_proxy that anchors calls is quiet when the built-in engine
        is there (it anchors WebRTC legs too), else names the missing engine."""
        from rustpbx_py.features import _have_media_engine

        for toml in (
            '[proxy]\nmedia_proxy = "all"\n',
            '[proxy]\nmedia_proxy = "none"\n[[proxy.routes]]\nname = "r"\nmedia_proxy = "nat"\n',
            '[proxy]\nmedia_proxy = "none"\n[proxy.trunks.t]\ndest = "sip:192.0.2.1"\nmedia_mode = "force_transcode"\n',
        ):
            config = parse_config_text(toml)
            if _have_media_engine(config.proxy):
                self.assertEqual(pending_features(config), [])
                continue
            (warning,) = pending_features(config)
            self.assertIn("proxy.media_proxy", warning)
            self.assertIn("no media engine", warning)

    def test_rtpengine_anchors_webrtc(self):
        """With rtpengine (which terminates WebRTC legs) nothing is left to warn about."""
        config = parse_config_text('[proxy]\nmedia_proxy = "all"\nmedia_engine = "rtpengine"\nrtpengine_servers = ["udp:127.0.0.1:2223"]\n')
        self.assertEqual(pending_features(config), [])

    def test_media_bypass_is_quiet(self):
        """bypass anchors nothing: nothing to warn about."""
        self.assertEqual(pending_features(parse_config_text('[proxy]\nmedia_proxy = "bypass"\n')), [])

    def test_trunk_media_settings(self):
        """A trunk's media_mode and external_ip work; bind_ip does not yet."""
        config = parse_config_text(
            '[proxy]\nmedia_proxy = "none"\n[proxy.trunks.t]\ndest = "sip:192.0.2.1"\nmedia_mode = "bypass"\n'
            'external_ip = "203.0.113.1"\nbind_ip = "192.0.2.1"\n'
        )
        (warning,) = pending_features(config)
        self.assertIn("proxy.trunks.t.bind_ip", warning)

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
