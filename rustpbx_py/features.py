# -*- test-case-name: rustpbx_py.test.test_features -*-
"""
Which configured settings have no effect yet.

The configuration accepts every RustPBX key, so that an existing file
loads; this module names the settings whose feature is not built yet, so
that an admin sees at start-up (and in C{check-config}) what the PBX will
not do, instead of a silent no-op.
"""

from __future__ import annotations

from typing import List

from rustpbx_py.config import Config

def pending_features(config: Config) -> List[str]:
    """One warning per configured feature that is not implemented yet."""
    proxy = config.proxy
    warnings: List[str] = []
    where = config.path or "<config>"
    anchoring = [proxy.media_proxy] + [getattr(r, "media_proxy", None) for r in proxy.routes]
    anchoring += [t.media_mode for t in proxy.trunks.values()]
    rtpengine = getattr(proxy, "media_engine", "builtin") == "rtpengine"
    if any(mode not in (None, "none", "bypass") for mode in anchoring) and not rtpengine:
        # (both engines terminate WebRTC legs: ICE-lite, DTLS-SRTP)
        if not _have_media_engine(proxy):
            warnings.append(
                f"{where}: proxy.media_proxy = {proxy.media_proxy!r}: this build has no media engine; "
                'SDP and RTP pass end to end between the phones, as with media_proxy = "none"'
            )
    for route in proxy.routes:
        action = getattr(route, "action", "forward")
        if action not in ("forward", "reject", "busy"):
            warnings.append(
                f"{where}: route {route.name!r}: action {action!r} (queues, applications) is not implemented yet; "
                "calls matching it are answered 501"
            )
    for name, trunk in proxy.trunks.items():
        warnings.extend(f"{where}: proxy.trunks.{name}.{text}" for text in _trunk_pending(trunk))
    for backend in proxy.user_backends:
        if backend.type == "http":
            unused = [k for k in ("request_uri_field", "token_header") if getattr(backend, k)]
            if backend.sip_headers:
                unused.append("sip_headers")
            if unused:
                warnings.append(
                    f"{where}: proxy.user_backends (http): {', '.join(unused)} not implemented yet; "
                    "the look-up sends only the user name and realm"
                )
            # RustPBX caches the tokens token_header validates; without
            # token validation there is nothing to cache.
            cache = [k for k, default in (("token_cache_ttl_secs", 0), ("token_cache_size", 10000)) if getattr(backend, k) != default]
            if cache:
                warnings.append(
                    f"{where}: proxy.user_backends (http): {', '.join(cache)} not implemented yet "
                    "(the token cache of token_header, which is not implemented either); no effect"
                )
        elif backend.type == "extension":
            warnings.append(
                f"{where}: proxy.user_backends (extension): the extension user backend (RustPBX's console "
                "extensions table) is not implemented yet; it is skipped and its users cannot log in"
            )
    if _destination_policies(proxy) and not _have_phonenumbers():
        warnings.append(
            f"{where}: policy allowed_destination_countries / allow_landline: the phonenumbers package "
            "(python3-phonenumbers) is not installed; destinations are not checked"
        )
    return warnings


def _trunk_pending(trunk) -> List[str]:
    """A trunk's settings whose feature is not built: only values that
    would change what the PBX does (the ones naming today's behaviour,
    e.g. call_id_mode = "rewrite", are what happens anyway)."""
    found = []
    if trunk.call_id_mode == "transparent":
        found.append('call_id_mode = "transparent": not implemented yet; the call towards the trunk always gets a new Call-ID (as "rewrite")')
    if trunk.video_policy not in (None, "pass_through"):
        found.append(f"video_policy = {trunk.video_policy!r}: not implemented yet; video passes through")
    if trunk.bind_ip:
        found.append("bind_ip: not implemented yet; the relay's RTP sockets bind to the PBX's address for every trunk")
    return found


def _have_media_engine(proxy) -> bool:
    """Whether this build has the engine the config asks for."""
    if getattr(proxy, "media_engine", "builtin") == "rtpengine":
        return True
    try:
        import rustpbx_py.media.session  # noqa: F401  (the built-in relay)
    except ImportError:
        return False
    return True


def _destination_policies(proxy) -> bool:
    """Whether a route or trunk policy restricts destinations by number."""
    policies = [getattr(r, "policy", None) for r in proxy.routes] + [getattr(t, "policy", None) for t in proxy.trunks.values()]
    return any(p is not None and (p.allowed_destination_countries or p.allow_landline is False) for p in policies)


def _have_phonenumbers() -> bool:
    try:
        import phonenumbers  # noqa: F401
    except ImportError:
        return False
    return True
