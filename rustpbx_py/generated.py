# -*- test-case-name: rustpbx_py.test.test_generated -*-
"""
The files of C{generated_dir} the console writes: RustPBX's
C{routes/routes.generated.toml}, C{trunks/trunks.generated.toml},
C{acl/acl.generated.toml}, and the Proxy Settings file
C{proxy.generated.toml} (L{rustpbx_py.config.PROXY_SETTINGS_FILE}).

The admin's own configuration file is never written.  A new text is first
checked by L{rustpbx_py.config.load_config} itself -- the code that will
read it at the next start -- with the text standing in for the file; only
a text that loads is written, atomically (a temporary file renamed over
the old one), so the PBX never finds half a file.

This module also holds the small TOML writer the files need (the standard
library reads TOML but does not write it).
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import math
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from rustpbx_py.config import Config, ConfigError, generated_file, load_config

__all__ = [
    "FILE_KEYS",
    "GeneratedFiles",
    "Problems",
    "dumps",
    "problems_by_field",
    "to_json",
    "write_atomic",
]

#: kind -> the one top-level key its generated file holds.
FILE_KEYS = {"routes": "routes", "trunks": "trunks", "acl": "acl_rules", "proxy": "proxy"}

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


# -- TOML writing ------------------------------------------------------------------


def _key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    """One TOML value (inline form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes (\" \\ \n \t \uXXXX) are all TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = [f"{_key(str(k))} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}" if items else "{}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(lines: List[str], prefix: str, table: Dict[str, Any]) -> None:
    """Write C{table}'s plain keys, then its sub-tables and arrays of
    tables as sections (nested tables deeper down stay inline)."""
    for k, v in table.items():
        if v is None or isinstance(v, dict) or _is_table_list(v):
            continue
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict):
            lines.append("")
            lines.append(f"[{name}]")
            for sk, sv in v.items():
                if sv is not None:
                    lines.append(f"{_key(str(sk))} = {_value(sv)}")
        elif _is_table_list(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{name}]]")
                for sk, sv in item.items():
                    if sv is not None:
                        lines.append(f"{_key(str(sk))} = {_value(sv)}")


def dumps(doc: Dict[str, Any], header: str = "") -> str:
    """
    C{doc} (str keys; str, int, float, bool, list and dict values; None =
    left out) as TOML text: top-level tables become C{[name]} sections,
    lists of tables C{[[name]]}, tables below those inline tables.
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _table(lines, "", doc)
    return "\n".join(lines).strip("\n") + "\n"


# -- writing files --------------------------------------------------------------


def write_atomic(path: str, text: Optional[str]) -> None:
    """
    Replace the file at C{path} by C{text} in one step (a temporary file in
    the same directory, flushed, renamed over it), creating the directory;
    C{None} removes the file.
    """
    if text is None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


# -- problems -> form fields -------------------------------------------------------

_PROBLEM = re.compile(r"^(?P<src>.*?): (?P<key>[A-Za-z0-9_]+(?:[.\[][^:\s]*)?): (?P<text>.*)$", re.S)


class Problems(Exception):
    """
    A new text would not load: C{fields} maps a field (the first part of
    the key path after C{prefix}, e.g. C{realms} for C{proxy.realms[0]})
    to its messages, C{general} holds the rest; each message is the
    loader's, key path included and file name left out.
    """

    def __init__(self, fields: Dict[str, List[str]], general: List[str]) -> None:
        super().__init__("; ".join([m for ms in fields.values() for m in ms] + general))
        self.fields = fields
        self.general = general

    def first(self) -> Tuple[Optional[str], str]:
        """(field, message) of the first problem, for one-line answers."""
        for name, messages in self.fields.items():
            return name, messages[0]
        return None, self.general[0] if self.general else "invalid"


def problems_by_field(problems: List[str], prefix: str = "proxy.", files: Tuple[str, ...] = ()) -> Problems:
    """
    Sort a L{ConfigError}'s problems by field: a problem whose key path
    starts with C{prefix} (in one of C{files} when given, by base name) is
    the field's; the others are general (shown above the form, file name
    kept).
    """
    fields: Dict[str, List[str]] = {}
    general: List[str] = []
    for problem in problems:
        m = _PROBLEM.match(problem)
        if m is not None and m.group("key").startswith(prefix) and (
            not files or os.path.basename(m.group("src")) in files
        ):
            rest = m.group("key")[len(prefix):]
            name = re.split(r"[.\[]", rest, maxsplit=1)[0] or prefix.rstrip(".")
            fields.setdefault(name, []).append(f"{m.group('key')}: {m.group('text')}")
        else:
            general.append(problem)
    return Problems(fields, general)


# -- typed config -> JSON ------------------------------------------------------------


def to_json(value: Any) -> Any:
    """
    A configuration value in the form its TOML key takes (what the API
    shows and accepts): dataclasses as tables of their set keys, ACL rules
    and frequency limits as their text, networks as text.
    """
    from rustpbx_py.config import AclRule, FrequencyLimit

    if isinstance(value, AclRule):
        return value.text
    if isinstance(value, FrequencyLimit):
        return f"{value.count}/{value.window_seconds}s"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if "read" not in f.metadata and f.name not in ("name", "origin"):
                continue
            if v is None or v == [] or v == {}:
                continue
            out[f.name] = to_json(v)
        return out
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int) and isinstance(value[0], str):
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    if isinstance(value, (datetime.time, datetime.date)):
        return value.isoformat()
    return value


# -- the generated files of one configuration -----------------------------------------


class GeneratedFiles:
    """
    The generated files of the configuration at C{path}: read, check,
    write.

    @param path: the admin's main configuration file (never written).
    """

    HEADER = (
        "Written by the rustpbx_py console ({what}); loaded after {main}.\n"
        "Edit it in the console, or by hand while the PBX is stopped."
    )

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self, **texts: Optional[str]) -> Config:
        """The configuration as it would load with C{texts} (kind -> TOML
        text, None = no file) in place of the generated files.

        @raise ConfigError: it would not load."""
        return load_config(self.path, generated=texts or None)

    def file(self, config: Config, kind: str) -> str:
        """Path of the C{kind} generated file (C{routes}, C{trunks},
        C{acl}, C{proxy})."""
        return generated_file(config.proxy.generated_dir, kind)

    def read(self, config: Config, kind: str) -> Optional[str]:
        """The file's text, None when there is none."""
        try:
            with open(self.file(config, kind), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def document(self, config: Config, kind: str) -> Any:
        """The value of the file's one key (C{[]}/C{{}} when there is no
        file, or when it is not TOML: a hand edit gone wrong, which
        L{problems} reports and the next save replaces), as TOML gives it."""
        import tomllib

        empty: Any = [] if kind in ("routes", "acl") else {}
        text = self.read(config, kind)
        if text is None:
            return empty
        try:
            value = tomllib.loads(text).get(FILE_KEYS[kind], empty)
        except tomllib.TOMLDecodeError:
            return empty
        return value if isinstance(value, type(empty)) else empty

    def problems(self) -> List[str]:
        """Why the configuration does not load as the files are now (none
        when it does): shown above the console's forms."""
        try:
            self.load()
        except ConfigError as e:
            return list(e.problems)
        return []

    def text_for(self, kind: str, value: Any) -> Optional[str]:
        """The file text holding C{value} as its one key (None: no file for
        an empty proxy settings table)."""
        if kind == "proxy" and not value:
            return None
        what = {"proxy": "Settings > Proxy Settings", "routes": "Routes", "trunks": "Trunks", "acl": "ACL"}[kind]
        header = self.HEADER.format(what=what, main=os.path.basename(self.path))
        return dumps({FILE_KEYS[kind]: value}, header)

    def check(self, kind: str, text: Optional[str]) -> Config:
        """
        The configuration with C{text} as the C{kind} file.

        @raise Problems: it would not load; problems in the new file are
            sorted by field (for C{proxy}: the key; for routes: C{routes};
            ...), others are general.
        """
        try:
            return self.load(**{kind: text})
        except ConfigError as e:
            prefix = FILE_KEYS[kind] + ("." if kind == "proxy" else "")
            raise problems_by_field(e.problems, prefix)

    def write(self, config: Config, kind: str, value: Any) -> Config:
        """
        Check then write C{value} (the file's one key, TOML-shaped) as the
        C{kind} file of C{config}'s generated_dir.

        @return: the configuration as it now loads.
        @raise Problems: it would not load; nothing was written.
        """
        text = self.text_for(kind, value)
        loaded = self.check(kind, text)
        write_atomic(self.file(config, kind), text)
        return loaded

    def write_text(self, config: Config, kind: str, text: str) -> Config:
        """Check then write a TOML text as the C{kind} file.

        @raise Problems: it would not load; nothing was written."""
        loaded = self.check(kind, text)
        write_atomic(self.file(config, kind), text)
        return loaded
