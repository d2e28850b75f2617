# -*- test-case-name: rustpbx_py.test.test_settings -*-
"""
Settings > Proxy Settings: the C{[proxy]} keys an admin changes from the
console, kept in C{generated_dir/proxy.generated.toml} (merged over the
main file's C{[proxy]} at every load, L{rustpbx_py.config}), never in the
admin's own file.

A change is checked by the configuration loader itself (the new settings
file stands in for the real one), so a wrong value gets the message the
file would give, naming its key.  Then the file is written, and each
changed key is either applied to the running PBX at once or waits for a
restart:

 - I{live} keys (L{LIVE_KEYS}) are read by the code each time they are
   needed (per call, per request) or have a hook here that updates the
   module holding them; they are set on the running configuration and
   take effect for the next call or request;
 - every other key -- listeners, realms (the auth module picks its realm
   list at start), modules, the user backends, timers the transaction
   layer copied at start, ... -- is read once at start: the page and the
   API say a restart is needed, and the running value stays until then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from rustpbx_py.config import PROXY_SETTINGS_EXCLUDED, Config, ProxyConfig, _toml_fields
from rustpbx_py.generated import GeneratedFiles, Problems, to_json

__all__ = [
    "LIVE_KEYS",
    "SettingField",
    "ProxySettings",
    "apply_live",
    "fields",
]


def _acl(context: Any) -> List[Any]:
    return [m for m in getattr(context, "modules", []) if getattr(m, "name", None) == "acl"]


def _module(name: str) -> Callable[[Any], List[Any]]:
    return lambda context: [m for m in getattr(context, "modules", []) if getattr(m, "name", None) == name]


def _set_ua_lists(context: Any, proxy: ProxyConfig) -> None:
    for acl in _acl(context):
        acl.black_list = [s.lower() for s in proxy.ua_black_list if s]
        acl.white_list = [s.lower() for s in proxy.ua_white_list if s]


def _set_limiter(context: Any, proxy: ProxyConfig) -> None:
    from rustpbx_py.modules.acl import FrequencyLimiter, parse_frequency

    for acl in _acl(context):
        limit = parse_frequency(proxy.frequency_limiter)
        acl.limiter = FrequencyLimiter(limit[0], limit[1], acl._reactor) if limit else None


def _set_registrar(context: Any, proxy: ProxyConfig) -> None:
    for registrar in _module("registrar")(context):
        registrar.max_contacts = max(1, int(proxy.max_contacts))
        registrar.nat_fix = proxy.nat_fix


def _set_ensure_user(context: Any, proxy: ProxyConfig) -> None:
    for auth in _module("auth")(context):
        auth.ensure_user = bool(proxy.ensure_user)


def _set_concurrency(context: Any, proxy: ProxyConfig) -> None:
    core = getattr(context, "core", None)
    if core is not None:
        core.max_concurrency = proxy.max_concurrency


#: Keys that take effect at once, with the hook that updates the modules
#: holding a copy (None: the code reads C{config.proxy.KEY} each time).
#: test_settings checks each one becomes the running value when saved, and
#: several (User-Agent lists, limiter, max_contacts, callid_suffix) by their
#: effect on the next request or call.
LIVE_KEYS: Dict[str, Optional[Callable[[Any, ProxyConfig], None]]] = {
    # read per call (call module, B2BUA, media policy)
    "passthrough_failure": None,
    "max_ring_time": None,
    "max_call_duration": None,
    "sip_flow_max_items": None,
    "session_timer": None,
    "session_expires": None,
    "media_proxy": None,
    "codecs": None,
    "codec_strategy": None,
    "enable_latching": None,
    "latching_probation_max_packets": None,
    "rtp_timeout": None,
    "callid_suffix": None,
    # copied by a module at start: updated by a hook
    "ua_black_list": _set_ua_lists,
    "ua_white_list": _set_ua_lists,
    "frequency_limiter": _set_limiter,
    "max_contacts": _set_registrar,
    "nat_fix": _set_registrar,
    "ensure_user": _set_ensure_user,
    "max_concurrency": _set_concurrency,
}

#: Keys whose unset value is random per load (compared only when set).
_RANDOM_DEFAULTS = ("contact_username", "rtc_cname", "nonce_secret")


@dataclass
class SettingField:
    """
    One key of the form.

    @ivar kind: C{bool}, C{int}, C{number}, C{list} (one item a line),
        C{choice} (C{choices}) or C{text}.
    @ivar optional: unset is a value of its own (no listener, no limit).
    @ivar live: applied at once (L{LIVE_KEYS}); otherwise at the next start.
    """

    key: str
    kind: str
    doc: str
    live: bool
    optional: bool
    default: Any
    choices: Tuple[str, ...] = ()
    aliases: Tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The HTML id of the field's input."""
        return f"field-{self.key}"


def _kind(f: dataclasses.Field) -> Tuple[str, Tuple[str, ...]]:
    t = str(f.type).replace("Optional[", "").rstrip("]")
    read = f.metadata["read"]
    doc_kind = getattr(read, "kind", "")
    if doc_kind.startswith("string: ") and " | " in doc_kind:
        return "choice", tuple(doc_kind[len("string: "):].split(" | "))
    if t == "bool":
        return "bool", ()
    if t == "int":
        return "int", ()
    if t == "float":
        return "number", ()
    if t.startswith("list["):
        return "list", ()
    if t in ("str", "FrequencyLimit"):
        return "text", ()
    return "", ()


def fields() -> List[SettingField]:
    """The [proxy] keys the Proxy Settings form shows, in the order of
    L{ProxyConfig} (tables like dialog_auth_cache stay in the file)."""
    out = []
    for f in dataclasses.fields(ProxyConfig):
        if "read" not in f.metadata or f.name in PROXY_SETTINGS_EXCLUDED:
            continue
        kind, choices = _kind(f)
        if not kind:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append(SettingField(
            key=f.name,
            kind=kind,
            doc=f.metadata["doc"],
            live=f.name in LIVE_KEYS,
            optional=str(f.type).startswith("Optional["),
            default=to_json(default),
            choices=choices,
            aliases=tuple(f.metadata["aliases"]),
        ))
    return out


def parse_form_value(field: SettingField, text: str) -> Any:
    """
    A form's text as the TOML value the file will hold (None: leave the
    key to the main file).  Text that is not of the key's type is kept as
    a string so that the loader reports it with its own message
    ("expected an integer port 0-65535, found "abc"").
    """
    text = text.replace("\r\n", "\n")
    if field.kind == "list":
        return [line.strip() for line in text.replace(",", "\n").split("\n") if line.strip()]
    text = text.strip()
    if text == "":
        return None
    if field.kind == "bool":
        return {"true": True, "false": False}.get(text.lower(), text)
    if field.kind == "int":
        try:
            return int(text)
        except ValueError:
            return text
    if field.kind == "number":
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        return text
    return text


def form_text(field: SettingField, value: Any) -> str:
    """A TOML value as the form shows it."""
    if value is None:
        return ""
    if field.kind == "list" and isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def apply_live(context: Any, new: Config, keys: List[str]) -> List[str]:
    """
    Set the live C{keys} of C{new} on the running configuration
    (C{context.config.proxy}) and run their hooks; the keys applied.
    """
    running = context.config.proxy
    hooks = []
    for key in keys:
        if key not in LIVE_KEYS:
            continue
        setattr(running, key, getattr(new.proxy, key))
        hook = LIVE_KEYS[key]
        if hook is not None and hook not in hooks:
            hooks.append(hook)
    for hook in hooks:
        hook(context, running)
    return [k for k in keys if k in LIVE_KEYS]


@dataclass
class SaveResult:
    """What a save did: C{applied} keys took effect at once,
    C{restart} keys wait for the next start, C{config} is the
    configuration as it now loads."""

    applied: List[str]
    restart: List[str]
    config: Config


class ProxySettings:
    """
    The Proxy Settings of a running PBX (C{context.config} is the running
    configuration; C{context.config.path} its main file).
    """

    def __init__(self, context: Any) -> None:
        self.context = context
        self.files = GeneratedFiles(context.config.path)
        self.fields = fields()
        self.by_key = {f.key: f for f in self.fields}

    @property
    def running(self) -> Config:
        return self.context.config

    def _main_table(self) -> Dict[str, Any]:
        """The admin's file's [proxy] table; empty when the file cannot be
        read or parsed now (edited or removed while the PBX runs: the
        pages show why, from L{GeneratedFiles.problems}, instead of
        failing)."""
        import tomllib

        try:
            with open(self.running.path, "rb") as f:
                table = tomllib.load(f).get("proxy", {})
        except (OSError, tomllib.TOMLDecodeError):
            return {}
        return table if isinstance(table, dict) else {}

    def overlay(self) -> Dict[str, Any]:
        """The settings file's [proxy] table as written (empty when none)."""
        return dict(self.files.document(self.running, "proxy"))

    def _base_value(self, field: SettingField, main: Dict[str, Any]) -> Any:
        for name in (field.key,) + field.aliases:
            if name in main:
                return main[name]
        return field.default

    def current(self) -> Dict[str, Dict[str, Any]]:
        """
        Per key: C{value} (TOML form, as the files give it now: settings
        file over main file over default), C{source} (C{settings},
        C{file} or C{default}), C{running} (the value in use), C{live},
        C{pending} (a restart key whose files value is not the running
        one yet), C{doc}.
        """
        main = self._main_table()
        overlay = self.overlay()
        try:
            loaded = self.files.load()
        except Exception:
            loaded = None
        out = {}
        for field in self.fields:
            if field.key in overlay:
                value, source = overlay[field.key], "settings"
            elif any(n in main for n in (field.key,) + field.aliases):
                value, source = self._base_value(field, main), "file"
            else:
                value, source = field.default, "default"
            running = getattr(self.running.proxy, field.key)
            pending = False
            if loaded is not None and not field.live and self._differs(field.key, loaded, main, overlay):
                pending = True
            out[field.key] = {
                "value": value,
                "source": source,
                "running": to_json(running),
                "live": field.live,
                "pending": pending,
                "doc": field.doc,
            }
        return out

    def _differs(self, key: str, loaded: Config, main: Dict[str, Any], overlay: Dict[str, Any]) -> bool:
        if key in _RANDOM_DEFAULTS and key not in main and key not in overlay:
            return False
        return getattr(loaded.proxy, key) != getattr(self.running.proxy, key)

    def new_overlay(self, values: Dict[str, Any]) -> Dict[str, Any]:
        """
        The settings file's table after setting C{values} (key -> TOML
        value; None = back to the main file's value): a key equal to the
        main file's value (or the default) is left out, so the file holds
        only what the console changed.
        """
        main = self._main_table()
        overlay = self.overlay()
        for key, value in values.items():
            field = self.by_key.get(key)
            if field is None:
                overlay[key] = value  # refused by the loader, named
                continue
            if value is None or value == self._base_value(field, main):
                overlay.pop(key, None)
            else:
                overlay[key] = value
        return overlay

    def check(self, values: Dict[str, Any]) -> Config:
        """The configuration with C{values} set.

        @raise Problems: it would not load (messages by field)."""
        return self.files.check("proxy", self.files.text_for("proxy", self.new_overlay(values)))

    def save(self, values: Dict[str, Any]) -> SaveResult:
        """
        Check, write the settings file, apply the live keys that changed.

        @raise Problems: nothing was written.
        """
        unknown = [k for k in values if k not in self.by_key]
        if unknown:
            raise Problems({k: [f"proxy.{k}: not a key the proxy settings can change"] for k in unknown}, [])
        main = self._main_table()
        overlay_before = self.overlay()
        new = self.files.write(self.running, "proxy", self.new_overlay(values))
        overlay_after = self.overlay()
        changed = [
            f.key for f in self.fields
            if (f.key not in _RANDOM_DEFAULTS or f.key in main or f.key in overlay_before or f.key in overlay_after)
            and getattr(new.proxy, f.key) != getattr(self.running.proxy, f.key)
        ]
        applied = apply_live(self.context, new, changed)
        restart = [k for k in changed if k not in applied]
        return SaveResult(applied, restart, new)
