"""
The media-plane phone calls of L{rustpbx_py.test.interop.test_media} (the
B2BUA's: baresip phones anchored with media_proxy = "all", a phone behind
a simulated NAT, SRTP to plain RTP, Opus to PCMA, SIPp -rtp_echo, "none"
untouched) run again with C{media_engine = "rtpengine"}: the same calls,
the same checks, a userspace rtpengine anchoring the media instead of the
built-in relay.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SkipTest

from rustpbx_py.test.interop.rtpengine_daemon import start_rtpengine

try:
    from rustpbx_py.test.interop import test_media as _builtin
except ImportError:  # the B2BUA's phone tests are not there yet
    _builtin = None


if _builtin is not None:

    class RtpengineMediaTests(_builtin.MediaTests):
        """test_media.MediaTests with rtpengine as the media engine."""

        @defer.inlineCallbacks
        def start(self, extra: str):
            server = yield start_rtpengine(self)
            pbx = yield _builtin.MediaTests.start(
                self, f'{extra}\nmedia_engine = "rtpengine"\nrtpengine_servers = ["{server}"]\n')
            return pbx

else:
    from twisted.trial.unittest import TestCase

    class RtpengineMediaTests(TestCase):  # type: ignore[no-redef]
        def test_media_calls(self):
            """Skipped while the B2BUA's test_media (the calls run here again
            with rtpengine) is not in this tree."""
            raise SkipTest("rustpbx_py.test.interop.test_media is not there yet")
