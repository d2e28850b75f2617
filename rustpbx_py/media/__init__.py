"""
The media plane: SDP offer/answer, codecs, and the engines that anchor RTP
on the PBX (the built-in relay, or rtpengine).  Nothing here imports
L{rustpbx_py.call}: the B2BUA drives it through L{IMediaEngine}.
"""


class MediaError(Exception):
    """
    An offer or answer the media plane cannot handle.

    @ivar status: the SIP status the B2BUA answers with (488 Not Acceptable
        Here when no codec or transport fits, 503 when the RTP port range is
        full or the engine is unreachable).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def engine_from_config(reactor, config):
    """The L{IMediaEngine} C{config} (a L{rustpbx_py.config.Config} or its
    C{proxy} section) asks for: see L{rustpbx_py.media.engines}."""
    from rustpbx_py.media.engines import engine_from_config as build

    return build(reactor, config)
