# -*- test-case-name: rustpbx_py.test.test_config -*-
"""
RustPBX's TOML configuration, read into typed and validated dataclasses.

An administrator moving from RustPBX brings a C{config.toml} with a
C{[proxy]} section, user backends, routes, trunks and ACL rules spread over
several files.  This module turns all of it into one L{Config} object, so that
the rest of rustpbx_py never touches raw TOML, never guesses a default and
never resolves a relative path.

A bad file is refused as a whole: L{load_config} raises one L{ConfigError}
listing every problem (file, key path, what was expected, what was found),
because an admin fixing a config file wants the whole list at once, not one
error per restart.  Settings that RustPBX has but rustpbx_py does not
implement yet are accepted with a warning (L{Config.warnings}) so that an
existing RustPBX file still loads; a key that neither knows is an error with a
"did you mean" suggestion, because it is almost always a typo.

Every TOML key maps to an attribute of the same name.  The dataclass field
metadata of each key holds its reader (type check and conversion) and a
one-line description; the README's configuration reference is the long form of the same
reference.

This module does no I/O beyond reading the configuration files it is pointed
at (the main file, the files matched by C{routes_files}, C{trunks_files},
C{acl_files}, the generated files, a C{plain} user file and checking that TLS
certificate files are readable).
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import ipaddress
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Optional, Union

from rustpbx_py import __version__

__all__ = [
    "AclRule",
    "ConcurrencyLimit",
    "Config",
    "ConfigError",
    "DailyLimit",
    "DialogAuthCacheConfig",
    "FrequencyLimit",
    "PolicyConfig",
    "PolicyFrequencyLimit",
    "ProxyConfig",
    "RejectConfig",
    "RouteConfig",
    "SipUserConfig",
    "TimeWindow",
    "TrunkConfig",
    "UserBackendConfig",
    "default_config",
    "generated_file",
    "load_config",
    "parse_config_text",
    "KNOWN_CODECS",
]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Audio codec names RustPBX's codec list accepts (case-insensitive), with
#: the aliases it also understands mapped to the canonical name.
KNOWN_CODECS: dict[str, str] = {
    "opus": "opus",
    "pcmu": "pcmu",
    "ulaw": "pcmu",
    "pcma": "pcma",
    "alaw": "pcma",
    "g722": "g722",
    "g729": "g729",
    "telephone-event": "telephone-event",
}

#: The file name shown in messages for configurations built without a file.
_NO_FILE_PREFIX = "<"

_NOT_IMPLEMENTED = "a RustPBX setting that rustpbx_py does not implement yet; ignored"


class ConfigError(Exception):
    """
    The configuration cannot be used.

    @ivar problems: one human-readable message per problem, each naming the
        file and the key path, e.g. C{etc/pbx.toml: proxy.udp_port: expected
        an integer port 0-65535, found "abc"}.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


# ---------------------------------------------------------------------------
# Problem collection and message formatting
# ---------------------------------------------------------------------------


class _Invalid:
    """Marker returned by readers for a value that was reported as a problem."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()


class _Report:
    """Collects problems and warnings across every file of one load."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []


def _show(value: Any) -> str:
    """Render a TOML value the way the admin wrote it, for "found ..." texts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > 300:
            value = value[:297] + "..."
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        shown = ", ".join(_show(v) for v in value[:5])
        if len(value) > 5:
            shown += ", ..."
        return f"[{shown}]"
    if hasattr(value, "isoformat"):
        return f"the date/time {value.isoformat()}"
    return repr(value)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _join(prefix: str, key: Union[str, int]) -> str:
    """Extend a key path: C{proxy} + C{udp_port}, C{routes} + C{0}."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    part = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
    return f"{prefix}.{part}" if prefix else part


def _suggest(word: str, candidates: Iterable[str]) -> str:
    """A "; did you mean ..." tail, or nothing when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


@dataclass
class _Ctx:
    """Where values come from: the file shown in messages and its directory."""

    src: str
    base_dir: str
    report: _Report

    def problem(self, key: str, text: str) -> Any:
        where = f"{self.src}: {key}: " if key else f"{self.src}: "
        self.report.problems.append(where + text)
        return _INVALID

    def expected(self, key: str, what: str, value: Any) -> Any:
        return self.problem(key, f"expected {what}, found {_show(value)}")

    def warn(self, key: str, text: str) -> None:
        where = f"{self.src}: {key}: " if key else f"{self.src}: "
        self.report.warnings.append(where + text)

    def resolve(self, path: str) -> str:
        """Relative paths are relative to the configuration file's directory,
        so that the same file works whatever directory twistd starts in."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(path)))


# ---------------------------------------------------------------------------
# Readers: each checks one TOML value and returns the typed value or _INVALID
# ---------------------------------------------------------------------------

Reader = Callable[[_Ctx, str, Any], Any]


def _reader(what: str, kind: str) -> Callable[[Reader], Reader]:
    """Attach the message phrase (C{what}) and the documentation type
    (C{kind}) to a reader function."""

    def deco(fn: Reader) -> Reader:
        fn.what = what  # type: ignore[attr-defined]
        fn.kind = kind  # type: ignore[attr-defined]
        return fn

    return deco


@_reader("true or false", "boolean")
def _bool(ctx: _Ctx, key: str, value: Any) -> Any:
    return value if isinstance(value, bool) else ctx.expected(key, "true or false", value)


def _int(lo: Optional[int] = None, hi: Optional[int] = None, what: Optional[str] = None) -> Reader:
    if what is None:
        if lo is not None and hi is not None:
            what = f"an integer {lo}-{hi}"
        elif lo is not None:
            what = f"an integer >= {lo}"
        else:
            what = "an integer"
    kind = "integer" + (f" ({lo}-{hi})" if lo is not None and hi is not None else f" (>= {lo})" if lo is not None else "")

    @_reader(what, kind)
    def read(ctx: _Ctx, key: str, value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
        ):
            return ctx.expected(key, what, value)
        return value

    return read


_port = _int(0, 65535, "an integer port 0-65535")
_rtp_port = _int(1, 65535, "an integer port 1-65535")


def _string(what: str = "a non-empty string", pattern: Optional[str] = None, empty: bool = False) -> Reader:
    rx = re.compile(pattern) if pattern else None

    @_reader(what, "string")
    def read(ctx: _Ctx, key: str, value: Any) -> Any:
        if not isinstance(value, str) or (not empty and not value.strip()):
            return ctx.expected(key, what, value)
        if rx is not None and not rx.match(value):
            return ctx.expected(key, what, value)
        return value

    return read


_str = _string()
_any_str = _string("a string", empty=True)
#: Text that goes into a SIP header as it is (User-Agent, Server): a CR or
#: LF would end the header (every message the PBX writes was refused, so
#: it answered nothing), other control characters are not allowed in a
#: header value either (RFC 3261 section 25.1).
_header_text = _string(
    "a header value: printable text without CR, LF or other control characters",
    pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]+\Z",
)


def _enum(*values: str, fold: Optional[Callable[[str], str]] = None) -> Reader:
    """One of C{values}; with C{fold} (e.g. C{str.lower}) the case is not
    significant, as in RustPBX's hand-written parsers."""
    what = "one of " + ", ".join(f'"{v}"' for v in values)

    @_reader(what, "string: " + " | ".join(values))
    def read(ctx: _Ctx, key: str, value: Any) -> Any:
        probe = fold(value) if fold and isinstance(value, str) else value
        if isinstance(probe, str) and probe in values:
            return probe
        hint = _suggest(value, values) if isinstance(value, str) else ""
        return ctx.problem(key, f"expected {what}, found {_show(value)}{hint}")

    return read


def _list(item: Reader, what: str) -> Reader:
    @_reader(what, f"list of {item.kind}")  # type: ignore[attr-defined]
    def read(ctx: _Ctx, key: str, value: Any) -> Any:
        if not isinstance(value, list):
            return ctx.expected(key, what, value)
        out = []
        bad = False
        for i, v in enumerate(value):
            r = item(ctx, _join(key, i), v)
            if r is _INVALID:
                bad = True
            else:
                out.append(r)
        return _INVALID if bad else out

    return read


_str_list = _list(_str, "a list of non-empty strings")


@_reader("a table of string values", "table of strings")
def _str_map(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return ctx.expected(key, "a table of string values", value)
    bad = False
    for k, v in value.items():
        if not isinstance(v, str):
            ctx.expected(_join(key, k), "a string", v)
            bad = True
    return _INVALID if bad else dict(value)


@_reader("any TOML value", "any")
def _any(ctx: _Ctx, key: str, value: Any) -> Any:
    return value


@_reader("a path (relative to the configuration file's directory)", "path")
def _path(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        return ctx.expected(key, "a path", value)
    return ctx.resolve(value)


@_reader("a list of glob patterns", "list of glob patterns")
def _patterns(ctx: _Ctx, key: str, value: Any) -> Any:
    items = _str_list(ctx, key, value)
    if items is _INVALID:
        return _INVALID
    return [ctx.resolve(p) for p in items]


def _table(cls: type) -> Reader:
    @_reader("a table", "table")
    def read(ctx: _Ctx, key: str, value: Any) -> Any:
        return _build(cls, ctx, key, value)

    return read


def _ip_address_text(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@_reader("an IP address", "IP address")
def _ip(ctx: _Ctx, key: str, value: Any) -> Any:
    if isinstance(value, str) and _ip_address_text(value.strip()):
        return value.strip()
    return ctx.expected(key, "an IP address", value)


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


@_reader("an IP address or host name", "IP address or host name")
def _host(ctx: _Ctx, key: str, value: Any) -> Any:
    if isinstance(value, str) and (_ip_address_text(value) or _HOSTNAME.match(value)):
        return value
    return ctx.expected(key, "an IP address or host name", value)


@_reader('a list of rtpengine ng addresses "udp:IP:PORT", e.g. ["udp:127.0.0.1:2223"]', 'list of "udp:IP:PORT"')
def _rtpengine_servers(ctx: _Ctx, key: str, value: Any) -> Any:
    """rtpengine daemons' ng control sockets, Kamailio's rtpengine_sock
    syntax (udp:IP:PORT, udp:[IPv6]:PORT)."""
    from rustpbx_py.media.rtpengine import parse_server

    what = 'a list of rtpengine ng addresses "udp:IP:PORT", e.g. ["udp:127.0.0.1:2223"]'
    if not isinstance(value, list):
        return ctx.expected(key, what, value)
    bad = False
    for i, item in enumerate(value):
        try:
            parse_server(item)
        except ValueError as e:
            ctx.problem(_join(key, i), f"{e}, found {_show(item)}")
            bad = True
    if len(set(value)) != len(value) and not bad:
        return ctx.problem(key, f"expected each daemon once, found {_show(value)}")
    return _INVALID if bad else list(value)


@_reader("a list of codec names (" + ", ".join(sorted(set(KNOWN_CODECS.values()))) + ")", "list of codec names")
def _codecs(ctx: _Ctx, key: str, value: Any) -> Any:
    what = "a list of codec names"
    if not isinstance(value, list):
        return ctx.expected(key, what, value)
    out: list[str] = []
    bad = False
    for i, name in enumerate(value):
        canonical = KNOWN_CODECS.get(name.strip().lower()) if isinstance(name, str) else None
        if canonical is None:
            known = ", ".join(sorted(KNOWN_CODECS))
            hint = _suggest(name.strip().lower(), KNOWN_CODECS) if isinstance(name, str) else ""
            ctx.problem(_join(key, i), f"expected a codec name ({known}), found {_show(name)}{hint}")
            bad = True
        elif canonical not in out:
            out.append(canonical)
    return _INVALID if bad else out


# ---------------------------------------------------------------------------
# Declaring keys: dataclass fields carry their reader and documentation
# ---------------------------------------------------------------------------


def _key(
    read: Reader,
    default: Any = None,
    *,
    factory: Optional[Callable[[], Any]] = None,
    doc: str,
    required: bool = False,
    aliases: tuple[str, ...] = (),
    default_doc: Optional[str] = None,
) -> Any:
    """Declare a dataclass field that is read from the TOML key of the same
    name."""
    md = {
        "read": read,
        "doc": doc,
        "required": required,
        "aliases": aliases,
        "default_doc": default_doc,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def _computed(default: Any = None, *, factory: Optional[Callable[[], Any]] = None, doc: str = "") -> Any:
    """Declare a dataclass field that is not a TOML key (filled by the loader)."""
    md = {"doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def _toml_fields(cls: type) -> dict[str, dataclasses.Field]:
    """TOML key (and alias) -> field, for a configuration dataclass."""
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        if "read" in f.metadata:
            out[f.name] = f
            for alias in f.metadata["aliases"]:
                out[alias] = f
    return out


def _build(cls: type, ctx: _Ctx, prefix: str, table: Any, only: Optional[set[str]] = None) -> Any:
    """
    Read a TOML table into an instance of C{cls}.

    Every key is checked; problems are reported and the key's default is used
    instead, so that the rest of the table (and of the file) is still checked.
    Only a missing or invalid required key makes the whole table invalid.
    Keys in C{cls.RUSTPBX_NOT_IMPLEMENTED} are accepted with a warning.
    """
    if not isinstance(table, dict):
        return ctx.expected(prefix, "a table", table)
    fields = _toml_fields(cls)
    if only is not None:
        fields = {k: f for k, f in fields.items() if f.name in only}
    ignored: frozenset[str] = getattr(cls, "RUSTPBX_NOT_IMPLEMENTED", frozenset())
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    missing_required = False
    for k, v in table.items():
        key = _join(prefix, k)
        f = fields.get(k)
        if f is None:
            if k in ignored:
                ctx.warn(key, _NOT_IMPLEMENTED)
            else:
                ctx.problem(key, "unknown key" + _suggest(k, list(fields) + list(ignored)))
            continue
        if f.name in given:
            ctx.problem(key, f'"{k}" and "{given[f.name]}" set the same thing; give only one')
            continue
        given[f.name] = k
        result = f.metadata["read"](ctx, key, v)
        if result is _INVALID:
            missing_required = missing_required or f.metadata["required"]
        else:
            values[f.name] = result
    for f in dataclasses.fields(cls):
        if f.metadata.get("required") and f.name not in given and (only is None or f.name in only):
            ctx.problem(_join(prefix, f.name), f"missing required key ({f.metadata['read'].what})")
            missing_required = True
    if missing_required:
        return _INVALID
    obj = cls(**values)
    check = getattr(obj, "_check", None)
    if check is not None and check(ctx, prefix, set(given)) is False:
        return _INVALID
    return obj


# ---------------------------------------------------------------------------
# Small typed values
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrequencyLimit:
    """
    C{proxy.frequency_limiter = "100/60s"}: at most C{count} requests per
    C{window_seconds}.
    """

    count: int
    window_seconds: int


_FREQUENCY = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


@_reader('"COUNT/WINDOW" with a unit s, m or h, e.g. "100/60s"', 'string "COUNT/WINDOW[s|m|h]"')
def _frequency(ctx: _Ctx, key: str, value: Any) -> Any:
    what = 'a limit "COUNT/WINDOW" with a unit s, m or h (e.g. "100/60s")'
    if value == "db":
        ctx.warn(key, 'the database-backed limiter ("db") is a RustPBX feature rustpbx_py does not implement yet; no limit applied')
        return None
    return _count_window(ctx, key, value, what)


@_reader('"COUNT/WINDOW" with a unit s, m or h, e.g. "5/10m"', 'string "COUNT/WINDOW[s|m|h]"')
def _failure_limit(ctx: _Ctx, key: str, value: Any) -> Any:
    return _count_window(ctx, key, value, 'a limit "COUNT/WINDOW" with a unit s, m or h (e.g. "5/10m")')


def _count_window(ctx: _Ctx, key: str, value: Any, what: str) -> Any:
    """A "COUNT/WINDOW[s|m|h]" limit; C{what} (with its example) names it in errors."""
    m = _FREQUENCY.match(value) if isinstance(value, str) else None
    if m is None:
        return ctx.expected(key, what, value)
    count = int(m.group(1))
    window = int(m.group(2) or "1") * _UNIT_SECONDS[m.group(3)]
    if count < 1 or window < 1:
        return ctx.expected(key, what + " with a count and window above zero", value)
    return FrequencyLimit(count=count, window_seconds=window)


@_reader("a number of seconds >= 0", "number (>= 0)")
def _seconds(ctx: _Ctx, key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        return ctx.expected(key, "a number of seconds >= 0", value)
    return float(value)


@dataclass(frozen=True)
class AclRule:
    """
    One RustPBX ACL rule: C{"allow all"}, C{"deny 1.2.3.4"},
    C{"allow 10.0.0.0/8"}, C{"deny 2001:db8::/32"}.  Rules are tried in order
    and the first one whose network contains the source address decides.

    @ivar action: C{"allow"} or C{"deny"}.
    @ivar network: the network the rule covers; C{None} for C{all}.
    @ivar text: the rule as written, for logs.
    """

    action: str
    network: Optional[IPNetwork]
    text: str = ""

    def matches(self, address: Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bool:
        """Whether this rule applies to C{address} (an IP address)."""
        if self.network is None:
            return True
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and self.network.version == 4:
            ip = ip.ipv4_mapped
        return ip.version == self.network.version and ip in self.network

    @property
    def allow(self) -> bool:
        """True for an C{allow} rule."""
        return self.action == "allow"


@_reader('an ACL rule "allow|deny all|IP|CIDR"', 'string "allow|deny all|IP|CIDR"')
def _acl_rule(ctx: _Ctx, key: str, value: Any) -> Any:
    what = 'an ACL rule "allow|deny all|IP|CIDR" (e.g. "allow 10.0.0.0/8")'
    if not isinstance(value, str):
        return ctx.expected(key, what, value)
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() not in ("allow", "deny"):
        return ctx.expected(key, what, value)
    action, target = parts[0].lower(), parts[1]
    if target.lower() == "all":
        return AclRule(action, None, value)
    try:
        network = ipaddress.ip_network(target, strict=False)
    except ValueError as e:
        return ctx.problem(key, f"expected {what}, found {_show(value)} ({e})")
    return AclRule(action, network, value)


#: Digest algorithms the auth module can challenge with (RFC 7616, RFC 8760).
DIGEST_ALGORITHMS = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")


@_reader("a list of digest algorithms (" + ", ".join(DIGEST_ALGORITHMS) + ")", "list of digest algorithms")
def _digest_algorithms(ctx: _Ctx, key: str, value: Any) -> Any:
    what = "a non-empty list of digest algorithms, each once (" + ", ".join(f'"{a}"' for a in DIGEST_ALGORITHMS) + ")"
    if not isinstance(value, list) or not value:
        return ctx.expected(key, what, value)
    canonical = {a.lower(): a for a in DIGEST_ALGORITHMS}
    out: list[str] = []
    bad = False
    for i, name in enumerate(value):
        algorithm = canonical.get(name.strip().lower()) if isinstance(name, str) else None
        if algorithm is None:
            hint = _suggest(name.strip().upper(), DIGEST_ALGORITHMS) if isinstance(name, str) else ""
            ctx.problem(_join(key, i), f"expected a digest algorithm ({', '.join(DIGEST_ALGORITHMS)}), found {_show(name)}{hint}")
            bad = True
        elif algorithm in out:
            ctx.problem(_join(key, i), f"expected each algorithm once, found {_show(name)} again")
            bad = True
        else:
            out.append(algorithm)
    return _INVALID if bad else out


_acl_rules = _list(_acl_rule, 'a list of ACL rules ("allow|deny all|IP|CIDR")')

DEFAULT_ACL_RULES = ("allow all", "deny all")


# ---------------------------------------------------------------------------
# [proxy] sub-tables
# ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class DialogAuthCacheConfig:
    """C{proxy.dialog_auth_cache}: skip re-authenticating in-dialog requests
    (re-INVITE, BYE) from the address that authenticated the dialog."""

    enabled: bool = _key(_bool, True, doc="Skip authentication for in-dialog requests from the cached source address.")
    cache_size: int = _key(_int(1), 10000, doc="Maximum number of dialogs cached (least recently used evicted).")
    ttl_seconds: int = _key(_int(1), 3600, doc="Seconds a cached dialog stays trusted.")


@dataclass(kw_only=True)
class SipUserConfig:
    """One user of a C{memory} (or C{plain}) user backend; RustPBX's
    C{SipUser} fields."""

    id: int = _key(_int(0), 0, doc="Numeric id (informational).")
    enabled: bool = _key(_bool, True, doc="A disabled user cannot register or call.")
    username: str = _key(_str, required=True, doc="SIP user name (the user part of the AOR).")
    password: Optional[str] = _key(_any_str, doc="Plain-text digest password.")
    ha1: Optional[str] = _key(
        _string("32 hexadecimal digits (MD5 of user:realm:password)", r"^[0-9a-fA-F]{32}$"),
        doc="rustpbx_py extension: precomputed MD5 digest HA1 instead of a password.",
    )
    ha1_sha256: Optional[str] = _key(
        _string("64 hexadecimal digits (SHA-256 of user:realm:password)", r"^[0-9a-fA-F]{64}$"),
        doc="rustpbx_py extension: precomputed SHA-256 digest HA1 (RFC 7616).",
    )
    realm: Optional[str] = _key(_str, doc="Realm this user belongs to; none = any realm.")
    departments: list[str] = _key(_str_list, factory=list, doc="Department names (informational).")
    display_name: Optional[str] = _key(_any_str, doc="Caller-ID display name.")
    email: Optional[str] = _key(_any_str, doc="E-mail address (informational).")
    phone: Optional[str] = _key(_any_str, doc="Phone number (informational).")
    note: Optional[str] = _key(_any_str, doc="Free text.")
    allow_guest_calls: bool = _key(_bool, False, doc="Accept calls from this user without registration.")
    voicemail_disabled: bool = _key(_bool, False, doc="Do not forward unanswered calls to voicemail.")
    call_forwarding_mode: Optional[str] = _key(_str, doc="Call forwarding mode (RustPBX: always, busy, no_answer).")
    call_forwarding_destination: Optional[str] = _key(_str, doc="Call forwarding target URI or number.")
    call_forwarding_timeout: Optional[int] = _key(_int(0), doc="Seconds before no-answer forwarding.")
    is_support_webrtc: bool = _key(_bool, False, doc="The user's device is a WebRTC client.")


_USER_BACKEND_KEYS: dict[str, set[str]] = {
    "memory": {"users"},
    "plain": {"path"},
    "database": {
        "url", "table_name", "id_column", "username_column", "password_column",
        "enabled_column", "realm_column",
        # rustpbx_py extensions (RustPBX has these columns internally only)
        "ha1_column", "ha1_sha256_column", "display_name_column", "email_column",
        "phone_column", "note_column", "deleted_at_column",
    },
    "http": {
        "url", "method", "username_field", "realm_field", "request_uri_field", "headers",
        "sip_headers", "token_header", "http_timeout_ms", "http_retry_count",
        "http_retry_delay_ms", "token_cache_ttl_secs", "token_cache_size",
    },
    "extension": {"database_url", "ttl"},
}


@_reader("an http:// or https:// URL", "URL")
def _http_url(ctx: _Ctx, key: str, value: Any) -> Any:
    if isinstance(value, str) and re.match(r"^https?://[^\s/]+", value):
        return value
    return ctx.expected(key, "an http:// or https:// URL", value)


@dataclass(kw_only=True)
class UserBackendConfig:
    """
    One C{[[proxy.user_backends]]} entry.  Backends are asked in order; the
    first that knows the user answers.  Only the keys of the entry's C{type}
    are allowed; the others keep their defaults.
    """

    type: str = _key(_enum(*_USER_BACKEND_KEYS), required=True, doc="Backend kind: memory, plain, database, http or extension.")
    # memory (and the users read from a plain file)
    users: list[SipUserConfig] = _key(_list(_table(SipUserConfig), "a list of user tables"), factory=list, doc="memory: the users, as [[proxy.user_backends.users]] tables. plain: filled with the users read from path.")
    # plain
    path: Optional[str] = _key(_path, doc='plain: file of "username:password" lines (# comments and blank lines skipped).')
    # database
    url: Optional[str] = _key(_str, doc="database: database URL (default: the top-level database_url). http: the URL asked for each user (required).")
    table_name: str = _key(_str, "users", doc="database: table holding the users.")
    id_column: Optional[str] = _key(_str, doc="database: id column.")
    username_column: str = _key(_str, "username", doc="database: user name column.")
    password_column: str = _key(_str, "password", doc="database: password column.")
    enabled_column: Optional[str] = _key(_str, doc="database: boolean column; false disables the user.")
    realm_column: Optional[str] = _key(_str, doc="database: realm column.")
    ha1_column: Optional[str] = _key(_str, doc="database (rustpbx_py extension): column with the MD5 HA1, for tables without clear passwords.")
    ha1_sha256_column: Optional[str] = _key(_str, doc="database (rustpbx_py extension): column with the SHA-256 HA1.")
    display_name_column: Optional[str] = _key(_str, doc="database (rustpbx_py extension): display name column.")
    email_column: Optional[str] = _key(_str, doc="database (rustpbx_py extension): e-mail column.")
    phone_column: Optional[str] = _key(_str, doc="database (rustpbx_py extension): phone column.")
    note_column: Optional[str] = _key(_str, doc="database (rustpbx_py extension): note column.")
    deleted_at_column: Optional[str] = _key(_str, doc="database (rustpbx_py extension): rows where this column is set are ignored.")
    # http
    method: str = _key(_enum("GET", "POST", fold=str.upper), "GET", doc="http: GET (query string) or POST (form body).")
    username_field: str = _key(_str, "username", doc="http: request field carrying the user name.")
    realm_field: str = _key(_str, "realm", doc="http: request field carrying the realm.")
    request_uri_field: Optional[str] = _key(_str, doc="http: request field carrying the Request-URI.")
    headers: dict[str, str] = _key(_str_map, factory=dict, doc="http: extra HTTP headers sent with each request.")
    sip_headers: list[str] = _key(_str_list, factory=list, doc="http: SIP headers of the request forwarded as fields.")
    token_header: Optional[str] = _key(_str, doc="http: SIP header whose token is validated by the service instead of a digest challenge.")
    http_timeout_ms: int = _key(_int(1), 5000, doc="http: request timeout in milliseconds.")
    http_retry_count: int = _key(_int(0), 1, doc="http: retries after a failed request.")
    http_retry_delay_ms: int = _key(_int(0), 500, doc="http: delay between retries in milliseconds.")
    token_cache_ttl_secs: int = _key(_int(0), 0, doc="http: seconds a validated token is cached; 0 = no cache.")
    token_cache_size: int = _key(_int(1), 10000, doc="http: maximum cached tokens.")
    # extension
    database_url: Optional[str] = _key(_str, doc="extension: database URL (default: the top-level database_url).")
    ttl: int = _key(_int(0), 30, doc="extension: seconds an extension lookup is cached.")

    def _check(self, ctx: _Ctx, prefix: str, given: set[str]) -> bool:
        ok = True
        if self.type == "http":
            if "url" not in given:
                ctx.problem(_join(prefix, "url"), "missing required key for an http user backend (an http:// or https:// URL)")
                ok = False
            elif _http_url(ctx, _join(prefix, "url"), self.url) is _INVALID:
                ok = False
        if self.type == "plain":
            if self.path is None:
                ctx.problem(_join(prefix, "path"), 'missing required key for a plain user backend (a file of "username:password" lines)')
                return False
            users = _read_plain_users(ctx, _join(prefix, "path"), self.path)
            if users is _INVALID:
                return False
            self.users = users
        names = set()
        for i, user in enumerate(self.users):
            ident = (user.username, user.realm)
            if ident in names:
                ctx.problem(_join(_join(prefix, "users"), i), f"user {_show(user.username)} is defined twice")
                ok = False
            names.add(ident)
        return ok


@_reader("a user backend table", "table")
def _user_backend(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return ctx.expected(key, "a user backend table", value)
    kind = value.get("type")
    if kind is None:
        return ctx.problem(_join(key, "type"), "missing required key (one of " + ", ".join(f'"{k}"' for k in _USER_BACKEND_KEYS) + ")")
    if _enum(*_USER_BACKEND_KEYS)(ctx, _join(key, "type"), kind) is _INVALID:
        return _INVALID
    allowed = {"type"} | _USER_BACKEND_KEYS[kind]
    table = {}
    for k, v in value.items():
        owners = [t for t, keys in _USER_BACKEND_KEYS.items() if k in keys]
        if k not in allowed and owners:
            ctx.problem(_join(key, k), f'not a setting of a "{kind}" user backend (it belongs to type ' + " or ".join(f'"{t}"' for t in owners) + ")")
        else:
            table[k] = v
    return _build(UserBackendConfig, ctx, key, table, only=allowed)


def _read_plain_users(ctx: _Ctx, key: str, path: str) -> Any:
    """Read a RustPBX plain user file: C{username:password} per line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return ctx.problem(key, f"expected a readable file of \"username:password\" lines, found {_show(path)} ({_os_reason(e)})")
    users = []
    bad = False
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, password = line.partition(":")
        if not sep or not username.strip():
            ctx.problem(key, f"{_display_path(path)}, line {n}: expected \"username:password\", found {_show(line)}")
            bad = True
            continue
        users.append(SipUserConfig(username=username.strip(), password=password.strip()))
    return _INVALID if bad else users


def _os_reason(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(e)


# ---------------------------------------------------------------------------
# Policies (RustPBX's PolicySpec, shared by routes and trunks)
# ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class TimeWindow:
    """Calls are allowed only between C{start} and C{end} (HH:MM[:SS])
    in C{timezone}."""

    start: str = _key(_string("a time HH:MM or HH:MM:SS", r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$"), required=True, doc="Start of the allowed window.")
    end: str = _key(_string("a time HH:MM or HH:MM:SS", r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$"), required=True, doc="End of the allowed window.")
    timezone: str = _key(_str, required=True, doc='IANA time zone name, e.g. "Europe/Berlin".')


@dataclass(kw_only=True)
class PolicyFrequencyLimit:
    """At most C{count} calls per caller in C{window_hours}."""

    count: int = _key(_int(1), required=True, doc="Calls allowed in the window.")
    window_hours: int = _key(_int(1), required=True, doc="Window length in hours.")


@dataclass(kw_only=True)
class DailyLimit:
    """At most C{count} calls per caller per day."""

    count: int = _key(_int(1), required=True, doc="Calls allowed per day.")


@_reader("a table of account name -> integer", "table of integers")
def _int_map(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return ctx.expected(key, "a table of account name -> integer", value)
    bad = False
    for k, v in value.items():
        if _int(1)(ctx, _join(key, k), v) is _INVALID:
            bad = True
    return _INVALID if bad else dict(value)


@dataclass(kw_only=True)
class ConcurrencyLimit:
    """At most C{max_total} simultaneous calls, optionally per account."""

    max_total: int = _key(_int(1), required=True, doc="Simultaneous calls allowed in total.")
    max_per_account: dict[str, int] = _key(_int_map, factory=dict, doc="Account name -> simultaneous calls allowed.")


@dataclass(kw_only=True)
class PolicyConfig:
    """RustPBX's call policy (C{policy = {...}} on a route or a trunk)."""

    called_prefix: Optional[str] = _key(_str, doc="Only callees starting with this prefix are allowed.")
    trunk_country: Optional[str] = _key(_str, doc="Country code of the trunk, for destination checks.")
    allowed_destination_countries: list[str] = _key(_str_list, factory=list, doc="ISO region codes (\"US\", \"DE\") an international callee (+CC...) must belong to, per libphonenumber; empty = all. National numbers are not checked (as in RustPBX).")
    time_window: Optional[TimeWindow] = _key(_table(TimeWindow), doc="Time window in which calls are allowed.")
    deny_regions: list[str] = _key(_str_list, factory=list, doc="Regions refused.")
    allow_landline: Optional[bool] = _key(_bool, doc="false refuses international callees (+CC...) that libphonenumber classes as fixed lines; unset or true = allowed.")
    frequency_limit: Optional[PolicyFrequencyLimit] = _key(_table(PolicyFrequencyLimit), doc="{count, window_hours}: calls per caller per window.")
    daily_limit: Optional[DailyLimit] = _key(_table(DailyLimit), doc="{count}: calls per caller per day.")
    concurrency: Optional[ConcurrencyLimit] = _key(_table(ConcurrencyLimit), doc="{max_total, max_per_account}: simultaneous calls.")
    tags: list[str] = _key(_str_list, factory=list, doc="Free-form tags.")


# ---------------------------------------------------------------------------
# Trunks
# ---------------------------------------------------------------------------

_SIP_DEST = re.compile(r"^(sips?:)?([^@\s;<>]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?(;[^\s]*)?$")


@_reader('a SIP URI such as "sip:sip.provider.com:5060"', "SIP URI")
def _sip_dest(ctx: _Ctx, key: str, value: Any) -> Any:
    what = 'a SIP URI such as "sip:sip.provider.com:5060"'
    if not isinstance(value, str):
        return ctx.expected(key, what, value)
    text = value.strip()
    m = _SIP_DEST.match(text)
    if m is None or (m.group(4) and int(m.group(4)[1:]) > 65535):
        return ctx.expected(key, what, value)
    # A bare host[:port] is accepted and given the sip: scheme.
    return text if m.group(1) else "sip:" + text


_ADDRESS_LIKE = re.compile(r"^[0-9.]+(/\d*)?$|^\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?(/\d*)?$")


@_reader("an IP address, CIDR network or host name", "IP, CIDR or host name")
def _inbound_host(ctx: _Ctx, key: str, value: Any) -> Any:
    """RustPBX matches trunk sources given as IPs, CIDRs, IP:port, host
    names or SIP URIs; anything that looks like an address must be one."""
    what = "an IP address, CIDR network or host name"
    if not isinstance(value, str) or not value.strip():
        return ctx.expected(key, what, value)
    text = value.strip().strip("<>")
    m = re.match(r"^\[([^\]]+)\](?::\d+)?$", text) or re.match(r"^([0-9.]+):\d+$", text)
    try:
        ipaddress.ip_network(m.group(1) if m else text, strict=False)
        return text
    except ValueError as e:
        if _ADDRESS_LIKE.match(text):
            return ctx.problem(key, f"expected {what}, found {_show(value)} ({e})")
    host = re.sub(r"^sips?:", "", text).split(";")[0].split("@")[-1]
    host = re.sub(r":\d+$", "", host)
    if _HOSTNAME.match(host):
        return text
    return ctx.expected(key, what, value)


@_reader('"IP" or "IP:port" (a name server)', "list of \"IP[:port]\"")
def _dns_servers(ctx: _Ctx, key: str, value: Any) -> Any:
    """Name servers as (ip, port) pairs; IPv6 with a port is written
    C{[2001:db8::53]:53}."""
    what = 'a list of name server addresses "IP" or "IP:port", e.g. ["192.0.2.53", "127.0.0.1:5353"]'
    if not isinstance(value, list):
        return ctx.expected(key, what, value)
    servers = []
    for i, item in enumerate(value):
        text = item.strip() if isinstance(item, str) else ""
        m = re.match(r"^\[([^\]]+)\]:(\d{1,5})$", text) or re.match(r"^([0-9.]+):(\d{1,5})$", text)
        host, port = (m.group(1), int(m.group(2))) if m else (text, 53)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return ctx.expected(f"{key}[{i}]", 'a name server address "IP" or "IP:port" (no host name)', item)
        if not 0 < port < 65536:
            return ctx.expected(f"{key}[{i}]", "a port 1-65535", item)
        servers.append((host, port))
    return servers


@dataclass(kw_only=True)
class TrunkConfig:
    """A SIP trunk: C{[proxy.trunks.NAME]} or C{[trunks.NAME]} in a trunks
    file.  Calls are sent to C{dest}; requests from C{inbound_hosts} (or the
    addresses of C{dest}/C{backup_dest}) are recognised as coming from it."""

    RUSTPBX_NOT_IMPLEMENTED: ClassVar[frozenset[str]] = frozenset({
        "recording", "cac_policy",
        "overflow_threshold", "header_rules", "ringback", "header_passthrough",
    })

    name: str = _computed("", doc="The trunk's name (its table key).")
    dest: str = _key(_sip_dest, required=True, doc='Where calls go: a SIP URI such as "sip:sip.provider.com:5060" (a bare host[:port] gets "sip:").')
    backup_dest: Optional[str] = _key(_sip_dest, doc="Failover destination when dest does not answer.")
    username: Optional[str] = _key(_str, doc="Digest user name for the provider (also sent as P-Asserted-Identity).")
    password: Optional[str] = _key(_any_str, doc="Digest password for the provider.")
    codec: list[str] = _key(_codecs, factory=list, aliases=("allow_codecs", "audio_codecs"), doc="Codecs allowed towards this trunk, in order (also spelt allow_codecs or audio_codecs); empty = proxy.codecs.")
    disabled: bool = _key(_bool, False, doc="A disabled trunk is neither used nor registered.")
    max_calls: Optional[int] = _key(_int(1), doc="Maximum simultaneous calls; none = unlimited.")
    max_cps: Optional[int] = _key(_int(1), doc="Maximum new calls per second; none = unlimited.")
    weight: int = _key(_int(0), 100, doc="Weight for routes with select = \"weighted\".")
    transport: Optional[str] = _key(_enum("udp", "tcp", "tls", "ws", "wss", fold=str.lower), doc="Transport towards dest; none = from the URI (udp, or tls for sips:).")
    id: Optional[int] = _key(_int(), doc="Database id (set in generated files).")
    direction: str = _key(_enum("inbound", "outbound", "bidirectional"), "bidirectional", doc="Which calls may use the trunk.")
    inbound_hosts: list[str] = _key(_list(_inbound_host, "a list of IP addresses, CIDR networks or host names"), factory=list, doc="Sources recognised as this trunk (IPs, CIDRs, host names), besides dest and backup_dest.")
    incoming_from_user_prefix: Optional[str] = _key(_any_str, doc="Inbound calls must have a From user starting with this (or matching it as a regex).")
    incoming_to_user_prefix: Optional[str] = _key(_any_str, doc="Inbound calls must have a To user starting with this (or matching it as a regex).")
    country: Optional[str] = _key(_str, doc="Country of the trunk, for policies.")
    policy: Optional[PolicyConfig] = _key(_table(PolicyConfig), doc="Call policy for this trunk.")
    register_enabled: bool = _key(_bool, False, doc="REGISTER with the provider using username/password.")
    register_expires: int = _key(_int(1), 300, doc="Expires asked for in the trunk's REGISTER, seconds.")
    register_extra_headers: dict[str, str] = _key(_str_map, factory=dict, doc="Extra headers sent in the trunk's REGISTER.")
    rewrite_hostport: bool = _key(_bool, True, doc="Rewrite the host:port of From and To to dest's.")
    call_id_mode: Optional[str] = _key(_enum("transparent", "rewrite"), doc="Keep (transparent) or replace (rewrite) the Call-ID towards the trunk.")
    media_mode: Optional[str] = _key(_enum("none", "bypass", "auto", "force_transcode"), doc="Media handling override for calls through this trunk.")
    video_policy: Optional[str] = _key(_enum("pass_through", "strip", "transcode"), doc="What to do with video towards this trunk.")
    did_numbers: list[str] = _key(_str_list, factory=list, doc="Numbers (DIDs) that belong to this trunk.")
    max_ring_time: Optional[int] = _key(_int(0), doc="Seconds to ring before giving up on calls through this trunk; overrides proxy.max_ring_time.")
    max_call_duration: Optional[int] = _key(_int(0), doc="Seconds an answered call through this trunk may last (0 = no limit); overrides proxy.max_call_duration.")
    external_ip: Optional[str] = _key(_ip, doc="IP advertised in SDP for calls through this trunk; overrides the top-level external_ip.")
    health_check_enabled: bool = _key(_bool, False, doc="Probe dest with SIP OPTIONS; a trunk that fails health_check_probe_count probes in a row is down (skipped by routes) until one is answered 2xx.")
    health_check_interval_secs: int = _key(_int(1), 30, doc="Seconds between two OPTIONS probes of the trunk (after the previous one's answer or 10 s timeout).")
    health_check_probe_count: int = _key(_int(1), 3, doc="Failed OPTIONS probes in a row (timeout, transport error or a non-2xx answer) that mark the trunk down.")
    health_check_fallback_trunk: Optional[str] = _key(_str, doc="Trunk tried instead while this one is down (must be defined).")
    health_check_per_ip: bool = _key(_bool, False, doc="Probe each inbound_hosts address too (with dest's port when it names none; networks are skipped); the trunk fails a round when any target fails.")
    bind_ip: Optional[str] = _key(_ip, doc="Local IP the RTP sockets of this trunk's calls bind to.")
    origin: str = _computed("", doc="File the trunk was read from.")


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------

_URI_FIELDS = ("from.user", "from.host", "to.user", "to.host", "to.port",
               "request_uri.user", "request_uri.host", "request_uri.port")
MATCH_KEYS = _URI_FIELDS + ("from", "to", "caller", "callee")
REWRITE_KEYS = _URI_FIELDS
_REGEX_CHARS = set("^$*+?[(\\")


def _flatten(value: dict) -> dict:
    """C{to.user = "x"} written without quotes is a nested table in TOML;
    RustPBX expects the quoted key C{"to.user"}.  Accept both."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(v, dict):
            for k2, v2 in _flatten(v).items():
                out[f"{k}.{k2}"] = v2
        else:
            out[k] = v
    return out


def _conditions(allowed: tuple[str, ...], rewrite: bool) -> Reader:
    what = "a table of " + ("rewrite templates" if rewrite else "match patterns")

    @_reader(what, "table of strings")
    def read(ctx: _Ctx, key: str, value: Any) -> Any:
        if not isinstance(value, dict):
            return ctx.expected(key, what, value)
        out: dict[str, str] = {}
        bad = False
        for k, v in _flatten(value).items():
            kkey = _join(key, k)
            if k not in allowed and not (k.startswith("header.") and len(k) > 7):
                ctx.problem(kkey, "unknown key (expected one of " + ", ".join(allowed) + ' or "header.NAME")' + _suggest(k, allowed))
                bad = True
                continue
            if not isinstance(v, str):
                ctx.expected(kkey, "a string", v)
                bad = True
                continue
            if rewrite:
                if not _valid_template(v):
                    ctx.expected(kkey, 'a rewrite template (text with {N} capture-group placeholders)', v)
                    bad = True
                    continue
            elif _REGEX_CHARS & set(v):
                try:
                    re.compile(v)
                except re.error as e:
                    ctx.problem(kkey, f"expected a valid regular expression, found {_show(v)} ({e})")
                    bad = True
                    continue
            out[k] = v
        return _INVALID if bad else out

    return read


def _valid_template(text: str) -> bool:
    """RustPBX rewrite templates: literal text and C{{N}} placeholders."""
    return re.fullmatch(r"(?:[^{}]|\{\d+\})*", text) is not None


@_reader("a trunk name or a list of trunk names", "string or list of strings")
def _dest(ctx: _Ctx, key: str, value: Any) -> Any:
    what = "a trunk name or a non-empty list of trunk names"
    if isinstance(value, str) and value.strip():
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    return ctx.expected(key, what, value)


@dataclass(kw_only=True)
class RejectConfig:
    """C{reject = {code = 403, reason = "Forbidden"}} on a route."""

    code: int = _key(_int(400, 699, "a SIP status code 400-699"), required=True, doc="SIP status code of the rejection.")
    reason: Optional[str] = _key(_any_str, doc="Reason phrase.")
    headers: dict[str, str] = _key(_str_map, factory=dict, doc="Extra headers in the rejection.")


ROUTE_ACTIONS = ("forward", "reject", "busy", "queue", "application")


def _route_action_hint(read: Reader) -> Reader:
    """RustPBX's own docs show C{[proxy.routes.action] type = ...}, which
    RustPBX itself refuses; say where the keys go instead."""

    def hinted(ctx: _Ctx, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return ctx.problem(key, f"expected {read.what}, found a table"  # type: ignore[attr-defined]
                               " (RustPBX takes action, dest, select and reject as keys of the route itself)")
        return read(ctx, key, value)

    hinted.what = read.what  # type: ignore[attr-defined]
    hinted.kind = read.kind  # type: ignore[attr-defined]
    return hinted



@dataclass(kw_only=True)
class RouteConfig:
    """
    A routing rule (C{[[proxy.routes]]} or C{[[routes]]} in a routes file),
    RustPBX's format: C{match} patterns, optional C{rewrite}, and the action
    keys (C{action}, C{dest}, C{select}, C{hash_key}, C{reject}, C{queue},
    C{app}) at the route's top level.
    """

    name: str = _key(_str, required=True, doc="Unique name; a later definition with the same name replaces an earlier one.")
    description: Optional[str] = _key(_any_str, doc="Free text.")
    priority: int = _key(_int(), 0, doc="Routes are tried from the highest priority down, then in definition order.")
    direction: str = _key(_enum("any", "inbound", "outbound"), "any", doc="Only calls of this direction match.")
    source_trunks: list[str] = _key(_str_list, factory=list, doc="Only calls arriving through one of these trunks match.")
    source_trunk_ids: list[int] = _key(_list(_int(), "a list of integers"), factory=list, doc="Only calls arriving through trunks with these ids match.")
    match: dict[str, str] = _key(_conditions(MATCH_KEYS, rewrite=False), factory=dict, doc='Conditions, all of which must hold: "from.user", "from.host", "to.user", "to.host", "to.port", "request_uri.user", "request_uri.host", "request_uri.port", "from", "to", "caller", "callee", "header.NAME" -> exact text or regex.')
    rewrite: dict[str, str] = _key(_conditions(REWRITE_KEYS, rewrite=True), factory=dict, doc='Rewrites applied on match: the URI fields of match or "header.NAME" -> template with {N} capture groups.')
    action: str = _key(_route_action_hint(_enum(*ROUTE_ACTIONS)), "forward", default_doc='derived: "application" if app, "queue" if queue, "reject" if reject, else "forward"', doc="What to do with a matching call.")
    dest: list[str] = _key(_dest, factory=list, doc="forward: trunk name or list of trunk names; empty = deliver to the (rewritten) Request-URI.")
    select: str = _key(_enum("rr", "random", "hash", "weighted"), "rr", doc="How to pick among several dest trunks.")
    hash_key: Optional[str] = _key(_str, doc='select = "hash": "from.user", "to.user", "call-id" or a literal; none = the caller URI.')
    reject: Optional[RejectConfig] = _key(_table(RejectConfig), doc="reject: {code, reason, headers}; none = 403.")
    queue: Optional[str] = _key(_str, doc="queue: name of the queue.")
    app: Optional[str] = _key(_str, doc="application: name of the application.")
    app_params: Any = _key(_any, doc="application: parameters passed to it.")
    auto_answer: bool = _key(_bool, True, doc="application: answer the call before starting it.")
    codecs: list[str] = _key(_codecs, factory=list, doc="Codecs allowed for calls on this route; empty = trunk's or proxy.codecs.")
    media_proxy: Optional[str] = _key(_enum("auto", "all", "none", "nat", "bypass"), doc="Media anchoring for calls on this route (as proxy.media_proxy; RustPBX's HTTP router field); overrides the trunk's media_mode and proxy.media_proxy; none = theirs.")
    disable_ice_servers: bool = _key(_bool, False, doc="Do not offer ICE servers to calls on this route.")
    disabled: bool = _key(_bool, False, doc="A disabled route is skipped.")
    policy: Optional[PolicyConfig] = _key(_table(PolicyConfig), doc="Call policy for this route (frequency, daily and concurrency limits, ...).")
    max_ring_time: Optional[int] = _key(_int(0), doc="Seconds to ring before giving up on calls of this route; overrides the trunk's and proxy.max_ring_time.")
    origin: str = _computed("", doc="File the route was read from.")

    def _check(self, ctx: _Ctx, prefix: str, given: set[str]) -> bool:
        if "action" not in given:
            # RustPBX derives the action from the keys present.
            if self.app is not None:
                self.action = "application"
            elif self.queue is not None:
                self.action = "queue"
            elif self.reject is not None:
                self.action = "reject"
        needs = {"queue": "queue", "application": "app"}
        needed = needs.get(self.action)
        if needed and getattr(self, needed) is None:
            ctx.problem(_join(prefix, needed), f'missing required key for action = "{self.action}" (a non-empty string)')
            return False
        return True


# ---------------------------------------------------------------------------
# [proxy]
# ---------------------------------------------------------------------------

DEFAULT_USERAGENT = f"RustPBX-py/{__version__}"


@_reader('a URL path starting with "/"', "string")
def _url_path(ctx: _Ctx, key: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("/") and not re.search(r"\s", value):
        return value
    return ctx.expected(key, 'a URL path starting with "/"', value)


_ORIGIN = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(:\d{1,5})?$", re.I)


@_reader('"*" or a web origin "scheme://host[:port]", e.g. "https://phone.example.com"', "string")
def _origin(ctx: _Ctx, key: str, value: Any) -> Any:
    if value == "*" or (isinstance(value, str) and _ORIGIN.match(value)):
        return value if value == "*" else value.lower()
    return ctx.expected(key, '"*" or a web origin "scheme://host[:port]" without a path, e.g. "https://phone.example.com"', value)


_sip_token = _string("a SIP user token (no spaces, @, :, < or >)", r"^[^\s@:<>;]+$")


def _user_backends_default() -> list[UserBackendConfig]:
    return [UserBackendConfig(type="memory")]


@_reader("a table of trunk tables", "table of trunks")
def _trunks(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return ctx.expected(key, "a table of trunks ([proxy.trunks.NAME])", value)
    out: dict[str, TrunkConfig] = {}
    for name, table in value.items():
        trunk = _build(TrunkConfig, ctx, _join(key, name), table)
        if trunk is not _INVALID:
            trunk.name = name
            trunk.origin = ctx.src
            out[name] = trunk
    return out


def _located_routes(ctx: _Ctx, key: str, value: Any) -> Any:
    """Read a list of route tables, keeping where each came from so that
    later checks (dest names a trunk) can name the file and key."""
    if not isinstance(value, list):
        return ctx.expected(key, "a list of route tables ([[proxy.routes]])", value)
    out = []
    for i, table in enumerate(value):
        route = _build(RouteConfig, ctx, _join(key, i), table)
        if route is not _INVALID:
            route.origin = ctx.src
            out.append((ctx, _join(key, i), route))
    return out


@_reader("a list of route tables", "list of route tables")
def _routes(ctx: _Ctx, key: str, value: Any) -> Any:
    located = _located_routes(ctx, key, value)
    return _INVALID if located is _INVALID else [route for _, _, route in located]


@dataclass(kw_only=True)
class ProxyConfig:
    """
    The C{[proxy]} section: SIP listeners, identity, protection, modules,
    media, and the users, routes, trunks and ACL rules gathered from the
    main file, the included files and the generated files.
    """

    RUSTPBX_NOT_IMPLEMENTED: ClassVar[frozenset[str]] = frozenset({
        # RustPBX 0.4.5
        "udp_ports", "locator", "locator_webhook", "video_codecs", "ami_path",
        "ice_servers_path", "http_router", "session_timer_always", "queues", "queues_files",
        "recording", "blind_transfer_use_refer", "dos_enabled", "dos_max_cps_per_ip",
        "dos_max_concurrent_per_ip", "dos_scan_probe_threshold", "dos_scan_block_duration_secs",
        "uri_max_length", "uri_reject_malformed", "emergency",
        # later RustPBX releases
        "rwi_path", "ivr_dir", "ivr_files", "ivr_fallback",
        "audio_profile", "generated_db", "hold_music", "jwt_auth", "max_registrar_expires",
        "media_worker_threads", "parallel_fork", "route_originated_calls",
        "session_cmd_channel_capacity", "session_state_channel_capacity", "sip_worker_threads",
        "transcript", "trusted_proxies",
    })

    # Listeners & transport
    addr: str = _key(_host, "0.0.0.0", doc="Address the SIP listeners bind to.")
    udp_port: int = _key(_port, 5060, doc="SIP over UDP port; 0 = an ephemeral port.")
    tcp_port: Optional[int] = _key(_port, doc="SIP over TCP port; unset = no TCP listener; 0 = ephemeral.")
    tls_port: Optional[int] = _key(_port, doc="SIP over TLS port; unset = no TLS listener; needs ssl_certificate and ssl_private_key.")
    ws_port: Optional[int] = _key(_port, doc="SIP over WebSocket port (RFC 7118); unset = no WebSocket listener.")
    ws_handler: str = _key(_url_path, "/ws", doc="HTTP path of the SIP WebSocket endpoint.")
    tcp_max_connections: Optional[int] = _key(_int(1), default_doc="the open-files limit less a reserve (a tenth, at least 128)", doc="rustpbx_py extension: TCP, TLS and WebSocket connections the PBX accepts in all (Kamailio's tcp_max_connections); more are closed at once, one warning a minute.")
    tcp_max_connections_per_ip: int = _key(_int(1), 200, doc="rustpbx_py extension: TCP, TLS and WebSocket connections one source address may hold (HTTP connections to the web ports included); more are closed at once, one warning a minute.")
    tcp_first_message_timeout: int = _key(_int(0), 30, doc="rustpbx_py extension: seconds a TCP, TLS or WebSocket connection may take to send its first valid SIP message (TLS handshake and WebSocket upgrade included), as Asterisk's tcpauthtimeout; 0 = no limit.")
    tls_handshake_timeout: int = _key(_int(0), 10, doc="rustpbx_py extension: seconds a TLS or WSS client may take to finish the TLS handshake; 0 = no limit.")
    tcp_idle_timeout: Optional[int] = _key(_int(0), default_doc="registrar_expires + 60, at least 300", doc="rustpbx_py extension: seconds a TCP, TLS or WebSocket connection may stay silent (keep-alives count) before it is closed; 0 = never.")
    wss_port: Optional[int] = _key(_port, doc="rustpbx_py extension: SIP over secure WebSocket (WSS) port; unset = none; needs ssl_certificate and ssl_private_key. RustPBX serves WSS on its HTTPS console instead.")
    ws_allowed_origins: list[str] = _key(_list(_origin, 'a list of "*" or web origins "scheme://host[:port]"'), factory=list, doc='rustpbx_py extension: web pages (Origin header) allowed to open a SIP WebSocket, besides pages from the host the client connected to and from localhost/127.0.0.1/[::1]; "*" = any; clients sending no Origin (not a browser) are always accepted.')
    ssl_certificate: Optional[str] = _key(_path, doc="PEM certificate (chain) for TLS; falls back to the top-level ssl_certificate.")
    ssl_private_key: Optional[str] = _key(_path, doc="PEM private key for TLS; falls back to the top-level ssl_private_key.")
    dns_servers: list[tuple[str, int]] = _key(_dns_servers, factory=list, doc='Name servers for trunk and proxy host names (RFC 3263 NAPTR/SRV/A look-ups), "IP" or "IP:port"; empty = those of /etc/resolv.conf. An extension of rustpbx_py.')
    tls_ca_certificates: Optional[str] = _key(_path, doc="PEM bundle outbound SIP/TLS peers (trunks) are verified against, instead of the system's trust store; unset = the system's.")
    # Identity
    useragent: str = _key(_header_text, DEFAULT_USERAGENT, default_doc='"RustPBX-py/<version>"', doc="User-Agent / Server header value.")
    callid_suffix: str = _key(_str, "rustpbx-py", doc="Host part appended to generated Call-IDs (id@suffix).")
    realms: list[str] = _key(_str_list, factory=list, doc="Domains served; empty = any host.")
    # Protection
    max_concurrency: int = _key(_int(1), 5000, doc="Maximum simultaneous transactions.")
    ua_black_list: list[str] = _key(_str_list, factory=lambda: ["friendly-scanner", "pplsip"], doc="User-Agents refused.")
    ua_white_list: list[str] = _key(_str_list, factory=list, doc="If not empty, only these User-Agents are accepted.")
    ensure_user: bool = _key(_bool, True, doc="Silently drop requests for unknown users (anti-scanning).")
    auth_algorithms: list[str] = _key(_digest_algorithms, factory=lambda: ["MD5"], doc='Digest challenges sent to a user, one header each, in this order (MD5, MD5-sess, SHA-256, SHA-256-sess); a response with any of them is accepted.')
    nonce_secret: Optional[str] = _key(_str, default_doc="random per process", doc="Key of the nonces' HMAC; nodes sharing it accept each other's nonces.")
    auth_failure_limit: FrequencyLimit = _key(_failure_limit, FrequencyLimit(5, 600), default_doc='"5/10m"', doc='Failed logins (wrong password, unknown or disabled user) from one source per window before it is banned.')
    auth_failure_delay: float = _key(_seconds, 1.0, doc="Seconds added to the answer of each further failed login of a source (at most 10 s).")
    auth_ban_time: int = _key(_int(0), 900, doc="Seconds a source is banned (no answer to anything) at auth_failure_limit; doubles for each further ban within a day, up to a day; 0 = never ban.")
    frequency_limiter: Optional[FrequencyLimit] = _key(_frequency, doc='Request rate limit "COUNT/WINDOW" (units s, m, h), e.g. "100/60s"; unset = no limit.')
    # Timers
    session_timer: bool = _key(_bool, True, doc="Use SIP session timers (RFC 4028).")
    session_expires: int = _key(_int(90, what="an integer >= 90 (RFC 4028 minimum)"), 1800, doc="Session-Expires in seconds.")
    t1_timer: int = _key(_int(1), 500, doc="RFC 3261 T1 in milliseconds.")
    t1x64_timer: int = _key(_int(1), 32000, doc="RFC 3261 64*T1 (transaction timeout) in milliseconds.")
    max_ring_time: int = _key(_int(0), 60, doc="Seconds an outgoing leg may ring before the call fails with 480; 0 = no limit. Routes and trunks can override it.")
    max_call_duration: int = _key(_int(0), 3600, doc="Seconds an answered call may last before the PBX hangs up both legs (hangup reason autohangup); 0 = no limit. A trunk's max_call_duration overrides it.")
    # Modules
    modules: list[str] = _key(_str_list, factory=lambda: ["acl", "auth", "registrar", "call", "presence"], doc="Proxy modules, in pipeline order.")
    addons: list[str] = _key(_str_list, factory=list, doc="Addons to load (plugins in rustpbx_py.plugins).")
    # Media
    media_proxy: str = _key(_enum("auto", "all", "none", "nat", "bypass"), "auto", doc="When RTP is relayed: auto (when needed, e.g. WebRTC<->RTP), all, none, nat (private addresses), bypass (SDP rewritten, RTP direct).")
    codecs: list[str] = _key(_codecs, factory=lambda: ["opus", "pcmu", "pcma", "g729"], aliases=("audio_codecs",), doc="Preferred codec order (RustPBX 0.4.5 also spells it audio_codecs): opus, pcmu (ulaw), pcma (alaw), g722, g729, telephone-event.")
    codec_strategy: str = _key(_enum("performance", "quality"), "performance", doc="WebRTC codec choice: performance (avoid transcoding) or quality (prefer Opus > G729 > G722 > G711).")
    enable_latching: bool = _key(_bool, True, doc="Latch RTP to the address media really comes from (NAT).")
    latching_probation_max_packets: int = _key(_int(1, 255), 6, doc="Packets observed before latching to a source address.")
    rtp_timeout: int = _key(_int(0), 30, doc="Seconds without RTP from a leg that should be sending (not on hold) before an anchored call is ended with BYE on both legs (RustPBX's RTP inactivity timeout); 0 = never.")
    nat_fix: bool = _key(_bool, True, doc="Fix Contact/Via of requests from clients behind NAT.")
    media_engine: str = _key(_enum("builtin", "rtpengine"), "builtin", doc='rustpbx_py extension: what anchors relayed media: builtin (the PBX relays RTP itself, nothing to install) or rtpengine (the rtpengine_servers daemons, driven over the ng protocol as Kamailio does).')
    rtpengine_servers: list[str] = _key(_rtpengine_servers, factory=list, doc='rustpbx_py extension: rtpengine daemons\' ng control addresses ("udp:IP:PORT", rtpengine --listen-ng); new calls are spread by Call-ID, a daemon that stops answering is skipped for 60 s. Required with media_engine = "rtpengine".')
    rtpengine_timeout: float = _key(_seconds, 1.0, doc="rustpbx_py extension: seconds to wait for an rtpengine daemon's answer (4 sends in that time) before trying the next daemon; an INVITE waits at most this per daemon.")
    # Files & paths
    generated_dir: str = _key(_path, "./config", default_doc='"./config" (resolved)', doc="Directory of generated files (routes/routes.generated.toml, trunks/trunks.generated.toml, acl/acl.generated.toml, and proxy.generated.toml: the console's Proxy Settings merged over [proxy]), loaded last.")
    routes_files: list[str] = _key(_patterns, factory=list, doc="Glob patterns of route files, each holding [[routes]].")
    trunks_files: list[str] = _key(_patterns, factory=list, doc="Glob patterns of trunk files, each holding [trunks.NAME].")
    acl_files: list[str] = _key(_patterns, factory=list, doc="Glob patterns of ACL files, each holding acl_rules = [...].")
    queue_dir: str = _key(_path, "./queues", default_doc='"./queues" (resolved)', doc="Directory for queue data files.")
    # Call handling
    registrar_expires: int = _key(_int(1), 3600, doc="Registration lifetime granted when the client asks for none, and the longest one granted (longer requests are capped), seconds.")
    max_contacts: int = _key(_int(1), 10, doc="Most live contacts one user (address of record) may register; a REGISTER that would leave more gets 403 (Asterisk's max_contacts).")
    passthrough_failure: bool = _key(_bool, True, doc="Relay the callee's failure code to the caller (else a generic one).")
    sip_flow_max_items: int = _key(_int(0), 1000, doc="SIP messages kept per dialog for the call flow view.")
    dialog_auth_cache: DialogAuthCacheConfig = _key(_table(DialogAuthCacheConfig), factory=DialogAuthCacheConfig, doc="{enabled, cache_size, ttl_seconds}; partial tables keep the other defaults.")
    # Identity & privacy
    contact_username: Optional[str] = _key(_sip_token, default_doc="random 16 hex digits, shared with rtc_cname", doc="User part of the PBX's own Contact.")
    rtc_cname: Optional[str] = _key(_sip_token, default_doc="the same random value as contact_username", doc="CNAME in SDP a=ssrc lines.")
    # Neighbouring RustPBX keys
    acl_rules: list[AclRule] = _key(_acl_rules, factory=list, default_doc='["allow all", "deny all"] when no rule is given anywhere', doc="IP rules, first match wins: inline, then acl_files, then the generated file.")
    user_backends: list[UserBackendConfig] = _key(_list(_user_backend, "a list of user backend tables"), factory=_user_backends_default, default_doc='one empty memory backend', doc="User backends, asked in order ([[proxy.user_backends]]).")
    routes: list[RouteConfig] = _key(_routes, factory=list, doc="Routes: inline, then routes_files, then generated; sorted by priority, highest first.")
    trunks: dict[str, TrunkConfig] = _key(_trunks, factory=dict, doc="Trunks by name: inline, then trunks_files, then generated (later wins).")

    def _check(self, ctx: _Ctx, prefix: str, given: set[str]) -> bool:
        if self.t1x64_timer < self.t1_timer:
            ctx.problem(_join(prefix, "t1x64_timer"), f"expected an integer >= t1_timer ({self.t1_timer}), found {self.t1x64_timer}")
        stream = [(k, getattr(self, k)) for k in ("tcp_port", "tls_port", "ws_port", "wss_port")]
        seen: dict[int, str] = {}
        for k, port in stream:
            if port:
                if port in seen:
                    ctx.problem(_join(prefix, k), f"expected a TCP port not used by {seen[port]}, found {port}")
                seen[port] = k
        if self.media_engine == "rtpengine" and not self.rtpengine_servers and "rtpengine_servers" not in given:
            ctx.problem(_join(prefix, "rtpengine_servers"), 'missing required key for media_engine = "rtpengine" (a list like ["udp:127.0.0.1:2223"])')
        elif self.media_engine == "rtpengine" and not self.rtpengine_servers:
            ctx.problem(_join(prefix, "rtpengine_servers"), 'expected at least one daemon for media_engine = "rtpengine", found []')
        if self.rtpengine_timeout <= 0:
            ctx.problem(_join(prefix, "rtpengine_timeout"), f"expected a number of seconds > 0, found {self.rtpengine_timeout}")
        modules = self.modules
        if len(set(modules)) != len(modules):
            dupes = sorted({m for m in modules if modules.count(m) > 1})
            ctx.problem(_join(prefix, "modules"), f"expected each module once, found {_show(dupes)} more than once")
        return True


# ---------------------------------------------------------------------------
# Top level
# ---------------------------------------------------------------------------

_HTTP_ADDR = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):(\d{1,5})$")


@_reader('"host:port", e.g. "0.0.0.0:8080"', 'string "host:port"')
def _http_addr(ctx: _Ctx, key: str, value: Any) -> Any:
    m = _HTTP_ADDR.match(value) if isinstance(value, str) else None
    if m is None or int(m.group(2)) > 65535:
        return ctx.expected(key, 'an address "host:port" such as "0.0.0.0:8080"', value)
    return value


@_reader('a sqlite:// or postgres:// URL', "database URL")
def _database_url(ctx: _Ctx, key: str, value: Any) -> Any:
    what = 'a database URL "sqlite://PATH" or "postgres://..."'
    if not isinstance(value, str) or not value.strip():
        return ctx.expected(key, what, value)
    if value.startswith(("postgres://", "postgresql://")):
        return value
    if value.startswith("mysql://"):
        return ctx.problem(key, f"expected {what}, found {_show(value)} (rustpbx_py stores data in SQLite or PostgreSQL, not MySQL)")
    if value.startswith("sqlite:"):
        rest = value[len("sqlite:"):]
        if rest.startswith("//"):
            rest = rest[2:]
        path, sep, query = rest.partition("?")
        if path == ":memory:":
            return value
        if not path:
            return ctx.expected(key, what, value)
        return "sqlite://" + ctx.resolve(path) + sep + query
    return ctx.expected(key, what, value)


_LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error")


@_reader('a log level: trace, debug, info, warn or error', "string: trace, debug, info, warn, error")
def _log_level(ctx: _Ctx, key: str, value: Any) -> Any:
    """RustPBX hands C{log_level} to tracing's EnvFilter, so a file may say
    C{"info,rustpbx=debug"}: the bare level is used, the per-target
    directives are named in a warning."""
    what = 'a log level: "trace", "debug", "info", "warn" or "error"'
    if not isinstance(value, str) or not value.strip():
        return ctx.expected(key, what, value)
    parts = [p.strip() for p in value.split(",") if p.strip()]
    bare = [p.lower() for p in parts if "=" not in p]
    directives = [p for p in parts if "=" in p]
    if len(bare) > 1 or (bare and bare[0] not in _LOG_LEVELS):
        return ctx.expected(key, what, value)
    if directives:
        ctx.warn(key, f"per-target directives ({', '.join(directives)}) are RustPBX's tracing filters; rustpbx_py applies only the level")
    return bare[0] if bare else "info"


@dataclass(kw_only=True)
class ApiTokenConfig:
    """One C{[[console.api_tokens]]} entry: a bearer token of the JSON API."""

    token: str = _key(_string("a token of at least 16 characters without spaces", r"^\S{16,}\Z"), required=True, doc="The secret sent as Authorization: Bearer TOKEN (at least 16 characters).")
    scopes: list[str] = _key(_str_list, factory=list, doc="Scopes the token is limited to (e.g. \"call.control\"); empty = every API operation.")


@dataclass(kw_only=True)
class ConsoleConfig:
    """
    The C{[console]} section: as in RustPBX, the web console and the JSON
    API are served (on http_addr / https_addr) only when it is present.
    """

    RUSTPBX_NOT_IMPLEMENTED: ClassVar[frozenset[str]] = frozenset({
        "allow_registration", "alpine_js", "tailwind_js", "chart_js", "locale_default", "locales", "static_path",
    })

    session_secret: Optional[str] = _key(_string("a secret of at least 16 characters", r"^.{16,}\Z"), default_doc="random at each start (sessions end with a restart)", doc="Key of the session tokens' HMAC; set it so that logins survive a restart.")
    base_path: str = _key(_url_path, "/console", doc="URL path of the console pages.")
    api_prefix: str = _key(_url_path, "/api", doc="URL path of the JSON API; version 1 is under API_PREFIX/v1.")
    secure_cookie: bool = _key(_bool, False, doc="Mark the session cookie Secure even over plain HTTP (behind a TLS-terminating proxy); over https_addr it always is.")
    audit_retention_days: int = _key(_int(0, None, "a whole number of days, 0 or more"), 365, doc="Days the audit log keeps a change (pruned hourly); 0 keeps every row for ever.")
    jssip_js: Optional[str] = _key(_str, doc="URL of the JsSIP script the browser phone page loads (default: the copy the PBX serves).")
    api_tokens: list[ApiTokenConfig] = _key(_list(_table(ApiTokenConfig), "a list of {token, scopes} tables"), factory=list, doc="Bearer tokens of the JSON API, as [[console.api_tokens]] tables.")

    def _check(self, ctx: _Ctx, prefix: str, given: set[str]) -> bool:
        for key in ("base_path", "api_prefix"):
            value = getattr(self, key).rstrip("/")
            if not value or value == "/":
                if key == "base_path":
                    ctx.problem(_join(prefix, key), f'expected a URL path below "/", such as "/console", found {_show(getattr(self, key))}')
            setattr(self, key, value or "/")
        if self.base_path.rstrip("/") and self.api_prefix.rstrip("/") and (
            self.base_path == self.api_prefix or self.base_path.startswith(self.api_prefix + "/")
            or self.api_prefix.startswith(self.base_path + "/")
        ):
            ctx.problem(_join(prefix, "api_prefix"), f"expected a path apart from base_path ({_show(self.base_path)}), found {_show(self.api_prefix)}")
        seen: set[str] = set()
        for i, entry in enumerate(self.api_tokens):
            if entry.token in seen:
                ctx.problem(_join(_join(prefix, "api_tokens"), i), "this token is listed twice")
            seen.add(entry.token)
        return True


def _default_database_url(base_dir: str) -> str:
    return "sqlite://" + os.path.normpath(os.path.join(base_dir, "data", "rustpbx.sqlite3"))


@dataclass(kw_only=True)
class Config:
    """
    The whole validated configuration.

    @ivar path: absolute path of the main file (or C{"<string>"} /
        C{"<default_config>"} for configurations built without one).
    @ivar base_dir: directory relative paths were resolved against.
    @ivar warnings: settings accepted but ignored (RustPBX features not
        implemented yet), one message each.
    """

    RUSTPBX_NOT_IMPLEMENTED: ClassVar[frozenset[str]] = frozenset({
        # RustPBX 0.4.5 Config
        "http_gzip", "log_file", "log_rotation",
        "http_access_skip_paths", "webrtc_port_start", "webrtc_port_end", "callrecord",
        "ice_servers", "ami", "recording", "demo_mode", "storage", "sipflow",
        "licenses", "rwi", "rwi_webhook", "cluster",
        # in RustPBX's sample files and docs
        "media_cache_path", "storage_dir", "addons", "archive", "dialplan",
        # later RustPBX releases
        "stats_log", "stats_interval", "auto_external_ip", "media", "database_pool",
        "outbound", "max_audio_download_bytes",
    })

    path: str = _computed("", doc="Absolute path of the main configuration file.")
    base_dir: str = _computed("", doc="Directory relative paths are resolved against.")
    http_addr: Optional[str] = _key(_http_addr, "0.0.0.0:8080", doc="Address of the HTTP server (always served, as in RustPBX): the console and API when [console] is set, SIP over WebSocket at proxy.ws_handler, addons' resources.")
    https_addr: Optional[str] = _key(_http_addr, default_doc='unset; "0.0.0.0:8443" when the top-level ssl_certificate and ssl_private_key are set (as in RustPBX)', doc="Address of the HTTPS server (same content as http_addr), with ssl_certificate and ssl_private_key (top level, else [proxy]'s); ALPN offers http/1.1 only.")
    log_level: str = _key(_log_level, "info", doc="Lowest level logged: trace (= debug), debug, info, warn or error; twistd pbx --log-level overrides it. RustPBX's per-target directives (\"info,rustpbx=debug\") keep only the level.")
    database_url: str = _key(_database_url, default_doc='"sqlite://" + absolute path of ./data/rustpbx.sqlite3 next to the config file', doc="Database: sqlite://PATH (relative to the config file) or postgres://...")
    external_ip: Optional[str] = _key(_ip, doc="Public IP advertised in SDP and SIP when behind NAT (no port).")
    rtp_start_port: int = _key(_rtp_port, 12000, doc="First UDP port for RTP.")
    rtp_end_port: int = _key(_rtp_port, 42000, doc="Last UDP port for RTP (must be above rtp_start_port).")
    ssl_certificate: Optional[str] = _key(_path, doc="PEM certificate used when [proxy] sets none.")
    ssl_private_key: Optional[str] = _key(_path, doc="PEM private key used when [proxy] sets none.")
    proxy: ProxyConfig = _key(_table(ProxyConfig), factory=ProxyConfig, doc="The [proxy] section.")
    console: Optional[ConsoleConfig] = _key(_table(ConsoleConfig), default_doc="unset: no console, no API", doc="The [console] section: web console and JSON API settings.")
    warnings: list[str] = _computed(factory=list, doc="Accepted but ignored settings.")
    addon_tables: dict[str, Any] = _computed(factory=dict, doc="Addon tables by name (see addon_config_tables): the validated dataclass of each installed addon's table, its defaults when the file has none.")

    def _check(self, ctx: _Ctx, prefix: str, given: set[str]) -> bool:
        if self.rtp_start_port >= self.rtp_end_port:
            ctx.problem("rtp_end_port", f"expected a port above rtp_start_port ({self.rtp_start_port}), found {self.rtp_end_port}")
        if "https_addr" not in given and self.ssl_certificate is not None and self.ssl_private_key is not None:
            # RustPBX serves HTTPS whenever the top-level files are set.
            self.https_addr = "0.0.0.0:8443"
        if self.http_addr is not None and self.http_addr == self.https_addr and not self.https_addr.endswith(":0"):
            ctx.problem("https_addr", f"expected another address than http_addr, found {_show(self.https_addr)}")
        proxy = self.proxy if isinstance(self.proxy, ProxyConfig) else None
        for key in ("http_addr", "https_addr"):
            addr = getattr(self, key)
            port = int(addr.rpartition(":")[2]) if addr else 0
            for other in ("tcp_port", "tls_port", "ws_port", "wss_port"):
                if port and proxy is not None and getattr(proxy, other) == port:
                    ctx.problem(key, f"expected a port apart from the SIP listeners', found {_show(addr)} (proxy.{other} is {port})")
        return True


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _display_path(path: str) -> str:
    """Included files are named relative to the current directory when they
    are below it, as an admin would type them."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _parse_toml(ctx: _Ctx, data: bytes) -> Optional[dict]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        ctx.problem("", f"expected UTF-8 TOML text, found an undecodable byte at offset {e.start}")
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        ctx.problem("", f"TOML syntax error: {e}")
        return None
    except RecursionError:
        ctx.problem("", "arrays or tables nested too deeply to read (a few hundred levels); expected a configuration file")
        return None


def _read_toml_file(report: _Report, path: str, what: str) -> tuple[Optional[dict], _Ctx]:
    ctx = _Ctx(_display_path(path), os.path.dirname(path), report)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        ctx.problem("", f"cannot read this {what}: {_os_reason(e)}")
        return None, ctx
    return _parse_toml(ctx, data), ctx


_GLOB_CHARS = set("*?[")


def _expand(ctx: _Ctx, key: str, patterns: list[str]) -> list[str]:
    """Files matched by the patterns, each once, in pattern then name order."""
    out: list[str] = []
    for i, pattern in enumerate(patterns):
        if _GLOB_CHARS & set(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
        elif os.path.exists(pattern):
            matches = [pattern]
        else:
            ctx.problem(_join(key, i), f"expected an existing file or a glob pattern, found {_show(pattern)} (no such file)")
            matches = []
        for m in matches:
            m = os.path.normpath(m)
            if m not in out:
                out.append(m)
    return out


def generated_file(generated_dir: str, kind: str) -> str:
    """
    The generated file of C{kind} in C{generated_dir}: RustPBX's
    C{routes/routes.generated.toml}, C{trunks/...}, C{acl/...}, and
    rustpbx_py's C{proxy.generated.toml} (C{kind} C{"proxy"}: the
    console's Proxy Settings, merged over C{[proxy]}).
    """
    if kind == "proxy":
        return os.path.join(generated_dir, PROXY_SETTINGS_FILE)
    return os.path.join(generated_dir, kind, f"{kind}.generated.toml")


def _generated_file(proxy: ProxyConfig, kind: str) -> str:
    """RustPBX's generated file for routes, trunks or acl."""
    return generated_file(proxy.generated_dir, kind)


#: The console's Proxy Settings file in generated_dir (see L{_merge_proxy_settings}).
PROXY_SETTINGS_FILE = "proxy.generated.toml"

#: [proxy] keys the Proxy Settings file may not set: where it is
#: (generated_dir), and what has its own generated files or page.
PROXY_SETTINGS_EXCLUDED = frozenset({
    "generated_dir", "routes", "trunks", "acl_rules", "user_backends",
    "routes_files", "trunks_files", "acl_files",
})


class _Generated:
    """
    Texts standing in for generated files (kind -> TOML text, None = no
    file): the console checks what it is about to write with the very
    code that will read it, before writing anything.
    """

    def __init__(self, texts: Optional[dict[str, Optional[str]]] = None) -> None:
        self.texts = dict(texts or {})

    def exists(self, generated_dir: str, kind: str) -> bool:
        if kind in self.texts:
            return self.texts[kind] is not None
        return os.path.isfile(generated_file(generated_dir, kind))

    def read(self, report: _Report, path: str, what: str, generated_dir: str) -> tuple[Optional[dict], _Ctx]:
        for kind, text in self.texts.items():
            if text is not None and os.path.normpath(generated_file(generated_dir, kind)) == os.path.normpath(path):
                ctx = _Ctx(_display_path(path), os.path.dirname(path), report)
                return _parse_toml(ctx, text.encode("utf-8")), ctx
        return _read_toml_file(report, path, what)


def _merge_proxy_settings(ctx: _Ctx, doc: dict, generated: _Generated) -> dict:
    """
    C{doc} with the console's Proxy Settings file (C{proxy.generated.toml}
    in generated_dir, a C{[proxy]} table) merged over its C{[proxy]}: a key
    set there replaces the main file's.  Each value is checked by the key's
    own reader, so a wrong one is reported naming that file, with the
    message the main file would give.  Keys of L{PROXY_SETTINGS_EXCLUDED}
    are refused.
    """
    proxy_table = doc.get("proxy", {})
    if not isinstance(proxy_table, dict):
        return doc
    where = proxy_table.get("generated_dir", "./config")
    if not isinstance(where, str) or not where.strip():
        return doc  # reported when [proxy] is read
    generated_dir = ctx.resolve(where)
    if not generated.exists(generated_dir, "proxy"):
        return doc
    path = generated_file(generated_dir, "proxy")
    overlay, fctx = generated.read(ctx.report, path, "proxy settings file", generated_dir)
    if overlay is None:
        return doc
    for k in overlay:
        if k != "proxy":
            fctx.problem(_join("", k), "unknown key (the proxy settings file holds only [proxy])" + _suggest(k, ["proxy"]))
    settings = overlay.get("proxy", {})
    if not isinstance(settings, dict):
        fctx.expected("proxy", "a table", settings)
        return doc
    fields = _toml_fields(ProxyConfig)
    merged = dict(proxy_table)
    for k, v in settings.items():
        key = _join("proxy", k)
        f = fields.get(k)
        if f is None or f.name in PROXY_SETTINGS_EXCLUDED:
            allowed = [n for n in fields if fields[n].name not in PROXY_SETTINGS_EXCLUDED]
            fctx.problem(key, "unknown key or one the proxy settings file may not set" + _suggest(k, allowed))
            continue
        # Relative paths in the settings file are relative to the main
        # file's directory, as the key would be there.
        fctx.base_dir = ctx.base_dir
        if f.metadata["read"](fctx, key, v) is _INVALID:
            continue
        for name in [n for n, g in fields.items() if g.name == f.name]:
            merged.pop(name, None)
        merged[k] = v
    return {**doc, "proxy": merged}


def _read_include(report: _Report, path: str, what: str, key: str, reader: Reader, generated: Optional[_Generated] = None, generated_dir: str = "") -> Any:
    """Read one included file holding the single top-level C{key}."""
    if generated is not None:
        doc, fctx = generated.read(report, path, what, generated_dir)
    else:
        doc, fctx = _read_toml_file(report, path, what)
    if doc is None:
        return _INVALID
    for k in doc:
        if k != key:
            fctx.problem(_join("", k), f"unknown key (a {what} holds only {key})" + _suggest(k, [key]))
    if key not in doc:
        return []
    return reader(fctx, key, doc[key])


def _load_included(report: _Report, ctx: _Ctx, proxy: ProxyConfig, inline_routes: list, load_generated: bool, texts: Optional[_Generated] = None) -> None:
    """Merge inline definitions, included files and generated files into
    C{proxy}, in RustPBX's order: generated files come last and win.  A
    C{*.generated.toml} file matched by a pattern counts as generated."""
    texts = texts or _Generated()
    files: dict[str, tuple[list[str], list[str]]] = {}
    for kind in ("routes", "trunks", "acl"):
        key = f"{kind}_files"
        generated = []
        if load_generated and texts.exists(proxy.generated_dir, kind):
            generated.append(os.path.normpath(_generated_file(proxy, kind)))
        written = []
        for f in _expand(ctx, _join("proxy", key), getattr(proxy, key)):
            if os.path.basename(f) == f"{kind}.generated.toml":
                if f not in generated:
                    generated.append(f)
            else:
                written.append(f)
        files[kind] = (written, generated)

    # Trunks: later definitions of a name replace earlier ones.
    trunks = dict(proxy.trunks)
    written, generated = files["trunks"]
    for path in written + generated:
        found = _read_include(report, path, "trunks file", "trunks", _trunks, texts, proxy.generated_dir)
        if found is not _INVALID:
            trunks.update(found)
    proxy.trunks = trunks
    _check_fallback_trunks(report, ctx.src, trunks)

    # Routes: upsert by name (a later one replaces an earlier one in place).
    located = list(inline_routes)
    written, generated = files["routes"]
    for path in written + generated:
        found = _read_include(report, path, "routes file", "routes", _located_routes, texts, proxy.generated_dir)
        if found is not _INVALID:
            located.extend(found)
    merged: dict[str, tuple[_Ctx, str, RouteConfig]] = {}
    for item in located:
        merged[item[2].name] = item  # a dict keeps the first position, takes the last value
    for rctx, key, route in merged.values():
        _check_route_trunks(rctx, key, route, trunks)
    proxy.routes = sorted((r for _, _, r in merged.values()), key=lambda r: -r.priority)

    # ACL rules: inline, files, generated; RustPBX's default when none at all.
    rules = list(proxy.acl_rules)
    written, generated = files["acl"]
    for path in written + generated:
        found = _read_include(report, path, "ACL file", "acl_rules", _acl_rules, texts, proxy.generated_dir)
        if found is not _INVALID:
            rules.extend(found)
    if not rules:
        rules = [_acl_rule(ctx, "", r) for r in DEFAULT_ACL_RULES]
    proxy.acl_rules = rules

    if "acl" not in proxy.modules and any(t.inbound_hosts for t in trunks.values()):
        ctx.warn("proxy.modules", 'trunks set inbound_hosts but the "acl" module is not enabled, so requests are not matched to trunks by source address')


def _check_fallback_trunks(report: _Report, main: str, trunks: dict[str, TrunkConfig]) -> None:
    """A trunk's health_check_fallback_trunk must name another defined trunk."""
    for name, trunk in trunks.items():
        fallback = trunk.health_check_fallback_trunk
        if fallback is None:
            continue
        if fallback not in trunks or fallback == name:
            others = sorted(n for n in trunks if n != name)
            known = ", ".join(f'"{n}"' for n in others) or "none"
            origin = trunk.origin or main
            ctx = _Ctx(origin, "", report)
            ctx.problem(
                _join(_join("proxy.trunks" if origin == main else "trunks", name), "health_check_fallback_trunk"),
                f"expected the name of another defined trunk (defined: {known}), found {_show(fallback)}" + _suggest(fallback, others),
            )


def _check_route_trunks(ctx: _Ctx, key: str, route: RouteConfig, trunks: dict[str, TrunkConfig]) -> None:
    known = ", ".join(f'"{n}"' for n in sorted(trunks)) or "none"
    for i, name in enumerate(route.dest):
        if name not in trunks:
            where = _join(key, "dest") if len(route.dest) == 1 else _join(_join(key, "dest"), i)
            ctx.problem(where, f"route {_show(route.name)}: expected the name of a defined trunk (defined: {known}), found {_show(name)}" + _suggest(name, trunks))
    lowered = {n.lower() for n in trunks}
    for i, name in enumerate(route.source_trunks):
        if name.lower() not in lowered:
            ctx.problem(_join(_join(key, "source_trunks"), i), f"route {_show(route.name)}: expected the name of a defined trunk (defined: {known}), found {_show(name)}" + _suggest(name, trunks))


def _check_tls(ctx: _Ctx, config: Config) -> None:
    """TLS files fall back from [proxy] to the top level and must be
    readable when set; a TLS listener needs both."""
    proxy = config.proxy
    origin = {}
    for name in ("ssl_certificate", "ssl_private_key"):
        if getattr(proxy, name) is not None:
            origin[name] = f"proxy.{name}"
        elif getattr(config, name) is not None:
            setattr(proxy, name, getattr(config, name))
            origin[name] = name
    readable = {}
    for name, key in origin.items():
        path = getattr(proxy, name)
        try:
            with open(path, "rb") as f:
                readable[name] = f.read()
        except OSError as e:
            ctx.problem(key, f"expected a readable PEM file, found {_show(path)} ({_os_reason(e)})")
    if len(readable) == 2:
        _check_pem(ctx, origin, proxy, readable["ssl_certificate"], readable["ssl_private_key"])
    if proxy.tls_ca_certificates is not None:
        try:
            from rustpbx_py.protocols.tls import load_trust_root

            load_trust_root(proxy.tls_ca_certificates)
        except OSError as e:
            ctx.problem("proxy.tls_ca_certificates", f"expected a readable PEM bundle, found {_show(proxy.tls_ca_certificates)} ({_os_reason(e)})")
        except Exception as e:
            ctx.problem("proxy.tls_ca_certificates", f"expected a PEM bundle of CA certificates, found {_show(proxy.tls_ca_certificates)} ({e})")
    if (proxy.ssl_certificate is None) != (proxy.ssl_private_key is None):
        missing = "ssl_private_key" if proxy.ssl_private_key is None else "ssl_certificate"
        present = "ssl_certificate" if missing == "ssl_private_key" else "ssl_private_key"
        ctx.problem(f"proxy.{missing}", f"expected a PEM file to go with {origin[present]}, found nothing")
    elif proxy.ssl_certificate is None:
        if config.https_addr is not None:
            ctx.problem("https_addr", f"the HTTPS server on {config.https_addr} needs ssl_certificate and ssl_private_key (top level or in [proxy]), found neither")
        for key, what in (("tls_port", "a TLS"), ("wss_port", "a secure WebSocket (WSS)")):
            port = getattr(proxy, key)
            if port is not None:
                ctx.problem(f"proxy.{key}", f"{what} listener on port {port} needs proxy.ssl_certificate and proxy.ssl_private_key (or the top-level ssl_certificate and ssl_private_key), found neither")


def _check_pem(ctx: _Ctx, origin: dict, proxy: Any, chain: bytes, key_pem: bytes) -> None:
    """
    The certificate and key parse and go together, as the TLS listener
    needs at start-up (where a bad file stopped the PBX with an OpenSSL
    traceback).
    """
    from OpenSSL import SSL, crypto

    certs = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", chain, re.S)
    cert = None
    try:
        if not certs:
            raise ValueError("no BEGIN CERTIFICATE block")
        loaded = [crypto.load_certificate(crypto.FILETYPE_PEM, c) for c in certs]
        cert = loaded[0]
    except (crypto.Error, ValueError) as e:
        ctx.problem(origin["ssl_certificate"], f"expected a PEM certificate (chain), found {_show(proxy.ssl_certificate)} that does not parse ({_openssl_reason(e)})")
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except (crypto.Error, ValueError, TypeError) as e:
        ctx.problem(origin["ssl_private_key"], f"expected a PEM private key (unencrypted), found {_show(proxy.ssl_private_key)} that does not parse ({_openssl_reason(e)})")
        return
    if cert is None:
        return
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_certificate(cert)
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error as e:
        ctx.problem(origin["ssl_private_key"], f"expected the private key of {_show(proxy.ssl_certificate)}, found {_show(proxy.ssl_private_key)} that does not go with it ({_openssl_reason(e)})")


def _openssl_reason(error: Exception) -> str:
    """OpenSSL's error list as a short phrase."""
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        return "; ".join(str(part[-1]) for part in args[0] if part)
    return str(error) or type(error).__name__


# ---------------------------------------------------------------------------
# Addon tables
# ---------------------------------------------------------------------------

#: Table name -> (addon name, dataclass), from the installed addon plugins;
#: filled on first use (L{addon_config_tables}).
_addon_tables_cache: Optional[dict[str, tuple[str, type]]] = None


def addon_config_tables(refresh: bool = False) -> dict[str, tuple[str, type]]:
    """
    The top-level tables addons declare: an L{IAddonFactory} plugin may
    have C{config_tables}, a dict of table name -> dataclass whose fields
    are declared with L{_key} (a reader and a doc each), exactly like
    L{ProxyConfig}.  Those tables are then validated like every other
    key (unknown keys with a suggestion, wrong types, file and key path
    in each message) and land typed in L{Config.addon_tables}.

    Found once per process with L{twisted.plugin.getPlugins} (a third
    party's plugin as well as ours); C{refresh} looks again.  A table name
    the core configuration uses is not an addon's to take.
    """
    global _addon_tables_cache
    if _addon_tables_cache is None or refresh:
        from twisted.plugin import getPlugins

        import rustpbx_py.plugins
        from rustpbx_py.interfaces import IAddonFactory

        own = set(_toml_fields(Config))
        found: dict[str, tuple[str, type]] = {}
        for factory in getPlugins(IAddonFactory, rustpbx_py.plugins):
            tables = getattr(factory, "config_tables", None) or {}
            for table, cls in tables.items():
                if table not in own and dataclasses.is_dataclass(cls):
                    found.setdefault(table, (factory.name, cls))
        _addon_tables_cache = found
    return _addon_tables_cache


def _read_addon_tables(doc: dict, ctx: _Ctx, addons: list[str], tables: dict[str, tuple[str, type]]) -> dict[str, Any]:
    """
    Build every addon table: from the file when it has the table, else
    from its defaults.  A table whose addon is not in C{proxy.addons} is
    still checked, and a warning says it has no effect.
    """
    out: dict[str, Any] = {}
    for table, (addon, cls) in tables.items():
        given = table in doc
        value = _build(cls, ctx, table, doc[table] if given else {})
        if value is _INVALID:
            continue
        out[table] = value
        if given and addon not in addons:
            ctx.warn(table, f'the [{table}] table configures the "{addon}" addon, which proxy.addons does not enable; it has no effect')
    return out


def _from_document(
    doc: dict,
    ctx: _Ctx,
    path: str,
    *,
    load_generated: bool = True,
    proxy_defaults: Optional[dict] = None,
    generated: Optional[_Generated] = None,
) -> Config:
    report = ctx.report
    generated = generated or _Generated()
    if load_generated:
        doc = _merge_proxy_settings(ctx, doc, generated)
    tables = addon_config_tables()
    addon_doc = {k: v for k, v in doc.items() if k in tables}
    if addon_doc:
        doc = {k: v for k, v in doc.items() if k not in tables}
    proxy_table = doc.get("proxy", {})
    inline = None
    if isinstance(proxy_table, dict) and "routes" in proxy_table:
        # Inline routes keep their key path for the checks made after
        # merging (a dest naming a trunk defined in another file).
        inline = proxy_table["routes"]
        doc = {**doc, "proxy": {k: v for k, v in proxy_table.items() if k != "routes"}}
    config = _build(Config, ctx, "", doc)
    if config is _INVALID:  # pragma: no cover - Config has no required keys
        raise ConfigError(report.problems)
    inline_routes = [] if inline is None else _located_routes(ctx, "proxy.routes", inline)
    inline_routes = [] if inline_routes is _INVALID else inline_routes
    config.path = path
    config.base_dir = ctx.base_dir
    config.addon_tables = _read_addon_tables(addon_doc, ctx, config.proxy.addons, tables)
    if "database_url" not in doc:
        config.database_url = _default_database_url(ctx.base_dir)
    proxy = config.proxy
    # Path defaults are relative to the configuration file too.
    proxy.generated_dir = ctx.resolve(proxy.generated_dir)
    proxy.queue_dir = ctx.resolve(proxy.queue_dir)
    # Identity: one random value shared by whichever of the two is unset.
    shared = secrets.token_hex(8)
    proxy.contact_username = proxy.contact_username or shared
    proxy.rtc_cname = proxy.rtc_cname or shared
    # Database-backed user backends default to the main database.
    for backend in proxy.user_backends:
        if backend.type == "database" and backend.url is None:
            backend.url = config.database_url
        if backend.type == "extension" and backend.database_url is None:
            backend.database_url = config.database_url
    _check_tls(ctx, config)
    _load_included(report, ctx, proxy, inline_routes, load_generated, generated)
    if report.problems:
        raise ConfigError(report.problems)
    config.warnings = list(report.warnings)
    return config


def _parse_bytes(data: bytes, src: str, path: str, base_dir: str, generated: Optional[_Generated] = None) -> Config:
    report = _Report()
    ctx = _Ctx(src, base_dir, report)
    doc = _parse_toml(ctx, data)
    if doc is None:
        raise ConfigError(report.problems)
    return _from_document(doc, ctx, path, generated=generated)


def load_config(path: str, generated: Optional[dict[str, Optional[str]]] = None) -> Config:
    """
    Read, check and type the configuration file at C{path} and every file it
    includes.

    @param generated: texts to use instead of the generated files of
        generated_dir, by kind (C{"proxy"}, C{"routes"}, C{"trunks"},
        C{"acl"}; L{generated_file}); None as a text = no such file.  The
        console checks what it is about to write this way.
    @raise ConfigError: listing every problem found, each naming the file and
        the key.
    """
    src = os.fspath(path)
    absolute = os.path.abspath(src)
    try:
        with open(absolute, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{src}: cannot read the configuration file: {_os_reason(e)}"])
    return _parse_bytes(data, src, absolute, os.path.dirname(absolute), _Generated(generated))


def parse_config_text(text: str, path: str = "<string>") -> Config:
    """
    Check and type configuration given as TOML text, as L{load_config} does
    for a file.  Relative paths resolve against the directory of C{path}, or
    the current directory when C{path} is a C{<placeholder>}.

    @raise ConfigError: listing every problem found.
    """
    if path.startswith(_NO_FILE_PREFIX):
        shown, base = path, os.getcwd()
    else:
        shown = os.path.abspath(path)
        base = os.path.dirname(shown)
    return _parse_bytes(text.encode("utf-8"), path, shown, base)


def _is_typed(value: Any) -> bool:
    """Whether a default_config override is already a typed value (as opposed
    to the TOML form, which is validated like a file)."""
    if value is None or dataclasses.is_dataclass(value):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(dataclasses.is_dataclass(v) for v in value)
    if isinstance(value, dict) and value:
        return all(dataclasses.is_dataclass(v) for v in value.values())
    return False


def default_config(**proxy_overrides: Any) -> Config:
    """
    A L{Config} with every default, built without a file, for tests of the
    other layers: C{default_config(udp_port=0, realms=["example.com"])}.

    Overrides are C{[proxy]} keys in their TOML form (checked exactly as in a
    file, e.g. C{frequency_limiter="10/1s"}, C{acl_rules=["deny all"]},
    C{routes=[{...}]}) or already typed values (L{FrequencyLimit},
    L{AclRule} lists, L{RouteConfig} lists, ...) which are set as they are.
    Relative paths resolve against the current directory; the generated
    directory is not read.

    @raise ConfigError: when an override is not valid.
    """
    names = {f.name for f in dataclasses.fields(ProxyConfig)}
    unknown = [k for k in proxy_overrides if k not in names]
    if unknown:
        raise ConfigError([f"<default_config>: proxy.{k}: unknown key{_suggest(k, names)}" for k in unknown])
    raw = {k: v for k, v in proxy_overrides.items() if not _is_typed(v)}
    typed = {k: v for k, v in proxy_overrides.items() if _is_typed(v)}
    report = _Report()
    ctx = _Ctx("<default_config>", os.getcwd(), report)
    config = _from_document({"proxy": raw}, ctx, "<default_config>", load_generated=False)
    # Tests of the other layers run without the HTTP server.
    config.http_addr = None
    for k, v in typed.items():
        if k == "trunks" and isinstance(v, dict):
            v = dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        setattr(config.proxy, k, v)
    if "routes" in typed:
        config.proxy.routes = sorted(config.proxy.routes, key=lambda r: -r.priority)
    return config
