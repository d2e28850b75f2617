# -*- test-case-name: rustpbx_py.test.test_config -*-
"""
Command line helpers: C{python -m rustpbx_py check-config FILE} and
C{python -m rustpbx_py create-admin USER --config FILE}.

Checking a configuration without starting the PBX lets an admin validate an
edited file (or a RustPBX file being migrated) before a restart, and lets
packaging scripts refuse a broken file.  The check is exactly the one
C{twistd pbx} runs at start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, TextIO

from rustpbx_py import __version__
from rustpbx_py.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rustpbx_py",
        description="rustpbx_py command line tools.",
    )
    parser.add_argument("--version", action="version", version=f"rustpbx_py {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    check = sub.add_parser(
        "check-config",
        help="check a configuration file and every file it includes",
        description="Check a RustPBX-style TOML configuration the way `twistd pbx` does at "
        "start-up. Prints FILE: OK and any warnings, or every problem found (exit status 1).",
    )
    check.add_argument("file", metavar="FILE", help="the main configuration file, e.g. etc/pbx.toml")
    admin = sub.add_parser(
        "create-admin",
        help="create a web console administrator (or set its password)",
        description="Create administrator USER of the web console in the configuration's database, "
        "or set a new password when USER exists (its sessions end). The password is asked on the "
        "terminal, or read as one line from standard input.",
    )
    admin.add_argument("username", metavar="USER", help="the administrator's user name")
    admin.add_argument("--config", required=True, metavar="FILE", help="the main configuration file (for database_url)")
    return parser


def read_password(stdin: TextIO, stderr: TextIO) -> str:
    """The new password: asked twice on a terminal, else one line of C{stdin}."""
    if stdin.isatty():
        import getpass

        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    line = stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def create_admin(path: str, username: str, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """C{create-admin}: returns the exit status."""
    from rustpbx_py.web.accounts import AccountError, check_password, check_username

    try:
        config = load_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=stderr)
        return 1
    try:
        username = check_username(username)
        password = check_password(read_password(stdin, stderr))
    except (AccountError, ValueError, EOFError) as e:
        print(f"create-admin: {e}", file=stderr)
        return 1
    from twisted.internet import defer, task

    from rustpbx_py.store.db import Database, redact

    result: list = []

    @defer.inlineCallbacks
    def run(reactor):
        from rustpbx_py.web.accounts import Accounts

        store = None
        try:
            store = Database(config.database_url)
            yield store.migrate()
            created = yield Accounts(store, b"unused", reactor).set_admin(username, password)
            result.append(created)
        except Exception as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            print(f"{path}: database_url: cannot use the database {redact(config.database_url)}: {reason}", file=stderr)
        finally:
            if store is not None:
                store.close()

    try:
        task.react(lambda reactor: run(reactor), [])
    except SystemExit:
        pass  # react() always exits; the outcome is in result
    if not result:
        return 1
    what = "created" if result[0] else "password changed (its sessions are closed)"
    print(f"administrator {username!r}: {what}", file=stdout)
    return 0


def check_config(path: str, stdout: TextIO, stderr: TextIO) -> int:
    """Load C{path}; report OK and warnings on C{stdout}, or the problems on
    C{stderr}.  Returns the exit status."""
    try:
        config = load_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=stderr)
        print(f"{path}: {len(e.problems)} problem(s); configuration refused", file=stderr)
        return 1
    print(f"{path}: OK", file=stdout)
    from rustpbx_py.features import pending_features

    for warning in config.warnings + pending_features(config):
        print(f"warning: {warning}", file=stdout)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """
    Entry point of C{python -m rustpbx_py} and of the C{rustpbx-py-check}
    script (which implies C{check-config}).  Returns the exit status instead
    of exiting, so that tests can call it.
    """
    if argv is None:
        argv = sys.argv[1:]
        if os.path.basename(sys.argv[0]).startswith("rustpbx-py-check"):
            argv = ["check-config", *argv]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, --version or a usage error
        return e.code if isinstance(e.code, int) else 2
    if args.command == "check-config":
        return check_config(args.file, sys.stdout, sys.stderr)
    if args.command == "create-admin":
        return create_admin(args.config, args.username, sys.stdin, sys.stdout, sys.stderr)
    return 2  # pragma: no cover - argparse refuses other commands


if __name__ == "__main__":
    raise SystemExit(main())
