# -*- test-case-name: rustpbx_py.test.test_rtpengine -*-
"""
The media engine a configuration asks for (C{[proxy] media_engine}): the
built-in relay or rtpengine daemons.  Both implement
L{rustpbx_py.interfaces.IMediaEngine}; the B2BUA builds one at start-up
with L{engine_from_config} and never looks at which it got.
"""

from typing import Any


def engine_from_config(reactor: Any, config: Any) -> Any:
    """
    C{config} is the L{rustpbx_py.config.Config} or its C{proxy} section.

    C{media_engine = "rtpengine"}: a L{RtpengineEngine} on
    C{rtpengine_servers} with C{rtpengine_timeout}; otherwise (the
    default, C{"builtin"}) the built-in relay's
    L{rustpbx_py.media.session.BuiltinEngine}, imported here only (the relay
    stack is not loaded for rtpengine set-ups).
    """
    proxy_config = getattr(config, "proxy", config)
    if getattr(proxy_config, "media_engine", "builtin") == "rtpengine":
        from rustpbx_py.media.rtpengine import RtpengineEngine

        return RtpengineEngine(reactor, list(proxy_config.rtpengine_servers),
                               timeout=getattr(proxy_config, "rtpengine_timeout", 1.0))
    from rustpbx_py.media.session import BuiltinEngine

    return BuiltinEngine(reactor, config)
