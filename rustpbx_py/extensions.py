# -*- test-case-name: rustpbx_py.test.test_extensions -*-
"""
Extensions: the SIP accounts of the C{database} user backend, managed from
the console and the API -- listed and searched, added, edited, disabled,
deleted, imported from and exported to CSV.

The rows are those the backend reads (L{rustpbx_py.users.DatabaseUserBackend}:
its table and configured column names), so an account saved here is the
one the auth module finds at the next request, without a restart.
Passwords are stored as the backend stores and reads them: in the clear
in the password column (RustPBX's database backend does the same; the
HA1 columns stay as they are).  Lists and exports never show passwords.

A CSV import is all or nothing: every row is checked first, and one bad
row refuses the file with a message per row and column, as a config file
is refused with every problem at once.
"""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer

from rustpbx_py.users import PROJECT_USERS_COLUMNS, DatabaseUserBackend

__all__ = ["CSV_COLUMNS", "ExtensionError", "Extensions", "ImportProblems", "RowError"]

#: Editable fields, in form and CSV order (password is write-only).
FIELDS = ("username", "realm", "password", "enabled", "display_name", "email", "phone", "note")
#: CSV columns of an export (an import also takes "password").
CSV_COLUMNS = ("id", "username", "realm", "enabled", "display_name", "email", "phone", "note")

_USERNAME = re.compile(r"^[^\s@:<>;,\"]+$")
_REALM = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+$")
_EMAIL = re.compile(r"^[^\s@]+@[^\s@]+$")
_PHONE = re.compile(r"^[0-9+*#()\-. ]+$")
_TRUE = ("1", "true", "yes", "y", "on", "t")
_FALSE = ("0", "false", "no", "n", "off", "f", "")


class ExtensionError(Exception):
    """A value refused (C{field} names it) or an unknown extension (404)."""

    def __init__(self, message: str, field: Optional[str] = None, code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


@dataclass
class RowError:
    """One problem of a CSV import: line number (header = 1), column, text."""

    line: int
    column: Optional[str]
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.column}" if self.column else "")
        return f"{where}: {self.message}"


class ImportProblems(Exception):
    """The CSV file was refused; nothing was written."""

    def __init__(self, errors: List[RowError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    usernames: List[str] = field(default_factory=list)


def check_values(values: Dict[str, Any], new: bool) -> Dict[str, Any]:
    """
    Values as they are stored, checked: C{username} a SIP user part,
    C{realm} a host (empty = every realm), C{password} non-empty (required
    for a new extension), C{enabled} a boolean, C{email} and C{phone}
    plausible.  Unknown keys are refused.

    @raise ExtensionError: naming the field.
    """
    out: Dict[str, Any] = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise ExtensionError(f"unknown field {key!r} (expected one of {', '.join(FIELDS)})", key)
        if key == "enabled":
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in _TRUE + _FALSE:
                    raise ExtensionError(f"expected true or false, found {value!r}", key)
                value = low in _TRUE
            elif not isinstance(value, bool):
                raise ExtensionError(f"expected true or false, found {value!r}", key)
            out[key] = value
            continue
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ExtensionError(f"expected text, found {value!r}", key)
        value = value.strip()
        if key == "username" and not _USERNAME.match(value):
            raise ExtensionError(
                "expected a SIP user name (no spaces, @, :, <, >, ;, commas or quotes), found " + repr(value), key
            )
        if key == "realm" and value and not _REALM.match(value):
            raise ExtensionError(f"expected a domain or IP address (empty = every realm), found {value!r}", key)
        if key == "password" and not value and new:
            raise ExtensionError("a new extension needs a password", key)
        if key == "email" and value and not _EMAIL.match(value):
            raise ExtensionError(f"expected an e-mail address, found {value!r}", key)
        if key == "phone" and value and not _PHONE.match(value):
            raise ExtensionError(f"expected a phone number, found {value!r}", key)
        if key == "password" and not value:
            continue  # an empty password on edit keeps the old one
        out[key] = value or (None if key not in ("username", "realm") else "")
    if new:
        if not out.get("username"):
            raise ExtensionError("an extension needs a username", "username")
        if "password" not in out:
            raise ExtensionError("a new extension needs a password", "password")
    return out


class Extensions:
    """
    The accounts of one L{DatabaseUserBackend} (its database, table and
    columns).  All methods return Deferreds.
    """

    def __init__(self, backend: DatabaseUserBackend, clock: Any = None) -> None:
        self.backend = backend
        self.db = backend.db
        self.table = backend.table_name
        self.columns: Dict[str, str] = {f: c for c, f in backend.columns}
        if clock is None:
            clock = type("_Wall", (), {"seconds": staticmethod(time.time)})()
        self.clock = clock
        project = {f: c for c, f in ((PROJECT_USERS_COLUMNS[k], _field_of(k)) for k in PROJECT_USERS_COLUMNS)}
        #: created_at/updated_at are columns of the project's table only.
        self.stamps = self.table == "users" and self.columns == project
        self.deleted = backend.deleted_at_column
        if "id" not in self.columns:
            raise ExtensionError(f"the user table {self.table} has no id column (id_column): extensions cannot be edited", None, 409)

    @classmethod
    def from_context(cls, context: Any) -> Optional["Extensions"]:
        """The first database backend of the service's user chain, or None
        when the configuration has none."""
        for backend in getattr(getattr(context, "users", None), "backends", []) or []:
            if isinstance(backend, DatabaseUserBackend):
                return cls(backend, getattr(context, "reactor", None))
        return None

    # -- reading -------------------------------------------------------------------

    def _select(self) -> Tuple[List[str], str]:
        fields = [f for f in ("id",) + FIELDS if f in self.columns and f != "password"]
        return fields, ", ".join(self.columns[f] for f in fields)

    def _row(self, fields: List[str], row: Sequence[Any]) -> Dict[str, Any]:
        item = dict(zip(fields, row))
        enabled = item.get("enabled")
        if enabled is None:
            item["enabled"] = True  # no column, or NULL: as the backend reads it
        elif isinstance(enabled, str):
            item["enabled"] = enabled.strip().lower() in _TRUE
        else:
            item["enabled"] = bool(enabled)
        for f in ("realm", "display_name", "email", "phone", "note"):
            item.setdefault(f, None)
        item["realm"] = item["realm"] or ""
        return item

    def _where(self, search: Optional[str]) -> Tuple[str, List[Any]]:
        clauses, params = [], []
        if self.deleted:
            clauses.append(f"{self.deleted} IS NULL")
        if search:
            like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            cols = [self.columns[f] for f in ("username", "display_name", "email", "phone", "realm") if f in self.columns]
            clauses.append("(" + " OR ".join(f"LOWER({c}) LIKE LOWER(?) ESCAPE '\\'" for c in cols) + ")")
            params += [like] * len(cols)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @defer.inlineCallbacks
    def list(self, search: Optional[str] = None, offset: int = 0, limit: Optional[int] = None):
        """C{(total, items)}: extensions matching C{search} (username,
        name, e-mail, phone, realm), by username."""
        fields, select = self._select()
        where, params = self._where(search)
        rows = yield self.db.run_query(f"SELECT COUNT(*) FROM {self.table}{where}", params)
        total = int(rows[0][0])
        order = f" ORDER BY {self.columns['username']}, {self.columns['id']}"
        page = ""
        if limit is not None:
            page = f" LIMIT {int(limit)} OFFSET {int(offset)}"
        elif offset:
            page = f" LIMIT -1 OFFSET {int(offset)}" if self.db.dialect == "sqlite" else f" OFFSET {int(offset)}"
        rows = yield self.db.run_query(f"SELECT {select} FROM {self.table}{where}{order}{page}", params)
        return total, [self._row(fields, r) for r in rows]

    @defer.inlineCallbacks
    def get(self, ext_id: int):
        """One extension by id.

        @raise ExtensionError: 404 when there is none."""
        fields, select = self._select()
        where, params = self._where(None)
        cond = f"{self.columns['id']} = ?"
        where = f"{where} AND {cond}" if where else f" WHERE {cond}"
        rows = yield self.db.run_query(f"SELECT {select} FROM {self.table}{where}", params + [int(ext_id)])
        if not rows:
            raise ExtensionError(f"no extension {ext_id}", None, 404)
        return self._row(fields, rows[0])

    @defer.inlineCallbacks
    def _find(self, username: str, realm: str) -> Any:
        where, params = self._where(None)
        cond = f"{self.columns['username']} = ?"
        params = params + [username]
        if "realm" in self.columns:
            rc = self.columns["realm"]
            cond += f" AND COALESCE({rc}, '') = ?"
            params.append(realm or "")
        where = f"{where} AND {cond}" if where else f" WHERE {cond}"
        rows = yield self.db.run_query(f"SELECT {self.columns['id']} FROM {self.table}{where}", params)
        return rows[0][0] if rows else None

    # -- writing ---------------------------------------------------------------------

    def _assignments(self, values: Dict[str, Any], new: bool) -> Tuple[List[str], List[Any]]:
        cols, params = [], []
        for key, value in values.items():
            if key not in self.columns:
                if key == "realm" and not value:
                    continue
                raise ExtensionError(f"the user table {self.table} has no column for {key}", key)
            cols.append(self.columns[key])
            params.append(int(value) if key == "enabled" else value)
        now = self.clock.seconds()
        if self.stamps:
            cols.append("updated_at")
            params.append(now)
            if new:
                cols.append("created_at")
                params.append(now)
        return cols, params

    def _insert(self, values: Dict[str, Any]) -> Tuple[str, List[Any]]:
        values = dict(values)
        values.setdefault("enabled", True)
        if "realm" in self.columns:
            values.setdefault("realm", "")
        cols, params = self._assignments(values, True)
        marks = ", ".join("?" for _ in cols)
        return f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES ({marks})", params

    def _update(self, ext_id: Any, values: Dict[str, Any]) -> Tuple[str, List[Any]]:
        cols, params = self._assignments(values, False)
        sets = ", ".join(f"{c} = ?" for c in cols)
        return f"UPDATE {self.table} SET {sets} WHERE {self.columns['id']} = ?", params + [ext_id]

    @defer.inlineCallbacks
    def add(self, values: Dict[str, Any]):
        """Add an extension; fires with it.

        @raise ExtensionError: a value refused, or the username is taken
            in that realm (409)."""
        values = check_values(values, new=True)
        realm = values.get("realm", "")
        if (yield self._find(values["username"], realm)) is not None:
            raise ExtensionError(f"{values['username']} already exists" + (f" in {realm}" if realm else ""), "username", 409)
        sql, params = self._insert(values)
        yield self.db.run_operation(sql, params)
        ext_id = yield self._find(values["username"], realm)
        return (yield self.get(ext_id))

    @defer.inlineCallbacks
    def update(self, ext_id: int, values: Dict[str, Any]):
        """Change some fields (an empty password keeps the old one)."""
        current = yield self.get(ext_id)
        values = check_values(values, new=False)
        username = values.get("username", current["username"])
        realm = values.get("realm", current["realm"])
        other = yield self._find(username, realm)
        if other is not None and int(other) != int(ext_id):
            raise ExtensionError(f"{username} already exists" + (f" in {realm}" if realm else ""), "username", 409)
        if values:
            sql, params = self._update(current["id"], values)
            yield self.db.run_operation(sql, params)
        return (yield self.get(ext_id))

    def set_enabled(self, ext_id: int, enabled: bool) -> defer.Deferred:
        """Disable (or enable again) an extension: a disabled one is
        refused at authentication."""
        return self.update(ext_id, {"enabled": enabled})

    @defer.inlineCallbacks
    def delete(self, ext_id: int):
        """Delete an extension (marked deleted when the table has a
        deleted_at column); fires with the deleted one."""
        current = yield self.get(ext_id)
        if self.deleted:
            yield self.db.run_operation(
                f"UPDATE {self.table} SET {self.deleted} = ? WHERE {self.columns['id']} = ?",
                [str(self.clock.seconds()), current["id"]],
            )
        else:
            yield self.db.run_operation(f"DELETE FROM {self.table} WHERE {self.columns['id']} = ?", [current["id"]])
        return current

    # -- CSV -----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def export_csv(self, search: Optional[str] = None):
        """Every extension (matching C{search}) as CSV text with a header
        row of L{CSV_COLUMNS}; no passwords."""
        _, items = yield self.list(search)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for item in items:
            row = []
            for col in CSV_COLUMNS:
                value = item.get(col)
                if col == "enabled":
                    value = "true" if value else "false"
                row.append("" if value is None else _safe_cell(str(value)))
            writer.writerow(row)
        return out.getvalue()

    @defer.inlineCallbacks
    def import_csv(self, text: str):
        """
        Add or update extensions from CSV text with a header row naming
        the columns (C{username} required; C{realm}, C{password},
        C{enabled}, C{display_name}, C{email}, C{phone}, C{note} optional;
        C{id} ignored).  A row whose username (and realm) exists updates
        it; others are added and need a password.  Every row is checked
        first; on any problem nothing is written.

        @raise ImportProblems: one L{RowError} per problem.
        """
        if text.startswith("\ufeff"):
            text = text[1:]
        reader = csv.reader(io.StringIO(text))
        errors: List[RowError] = []
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ImportProblems([RowError(1, None, "empty file: expected a header row naming the columns")])
        except csv.Error as e:
            raise ImportProblems([RowError(1, None, f"not CSV: {e}")])
        unknown = [h for h in header if h not in FIELDS and h != "id"]
        for h in unknown:
            errors.append(RowError(1, h, f"unknown column (expected: {', '.join(('id',) + FIELDS)})"))
        if "username" not in header:
            errors.append(RowError(1, None, "missing the username column"))
        if len(set(header)) != len(header):
            errors.append(RowError(1, None, "a column is named twice"))
        if errors:
            raise ImportProblems(errors)
        rows: List[Tuple[int, Dict[str, Any]]] = []
        seen: Dict[Tuple[str, str], int] = {}
        try:
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    errors.append(RowError(line, None, f"expected {len(header)} cells, found {len(row)}"))
                    continue
                values = {h: v for h, v in zip(header, row) if h != "id"}
                rows.append((line, values))
        except csv.Error as e:
            errors.append(RowError(reader.line_num, None, f"not CSV: {e}"))
        plans = []
        for line, values in rows:
            username = values.get("username", "").strip()
            realm = values.get("realm", "").strip()
            existing = None
            if username:
                existing = yield self._find(username, realm)
            try:
                checked = check_values(values, new=existing is None)
            except ExtensionError as e:
                errors.append(RowError(line, e.field, e.message))
                continue
            key = (username, realm.lower())
            if key in seen:
                errors.append(RowError(line, "username", f"{username} is also on line {seen[key]}"))
                continue
            seen[key] = line
            plans.append((existing, checked))
        if errors:
            raise ImportProblems(errors)
        if not plans:
            raise ImportProblems([RowError(2, None, "no rows")])
        statements = []
        result = ImportResult()
        try:
            for existing, checked in plans:
                if existing is None:
                    statements.append(self._insert(checked))
                    result.added += 1
                else:
                    statements.append(self._update(existing, checked))
                    result.updated += 1
                result.usernames.append(checked["username"])
        except ExtensionError as e:
            raise ImportProblems([RowError(1, e.field, e.message)])
        yield self.db.run_many(statements)
        return result


def _field_of(key: str) -> str:
    """C{password_column} -> C{password} (PROJECT_USERS_COLUMNS keys)."""
    from rustpbx_py.users import _DB_COLUMNS

    for k, f, _ in _DB_COLUMNS:
        if k == key:
            return f
    raise KeyError(key)


def _safe_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") and not re.match(r"^[+-]?\d[\d\s().-]*$", value) else value
