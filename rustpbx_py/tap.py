# -*- test-case-name: rustpbx_py.test.test_tap -*-
"""
twistd glue: the C{pbx} sub-command's options and the service tree it builds.

C{makeService} is the only place that knows every layer; everything below it
receives what it needs as arguments.
"""

from __future__ import annotations

from twisted.application import service
from twisted.python import usage

from rustpbx_py import __version__
from rustpbx_py.config import Config, ConfigError, load_config


class ConfigRefused(SystemExit):
    """
    The configuration is refused: twistd exits with status 1 after printing
    the message (one line per problem) on standard error, and no traceback.
    A L{usage.UsageError} would do the same on current Twisted, but twistd
    before 2026 (Debian bookworm's 22.4 among them) exits 0 after a usage
    error, and systemd would not see the failure.
    """

    def __init__(self, message: str) -> None:
        SystemExit.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Options(usage.Options):
    """Command line of C{twistd pbx}."""

    synopsis = "[--config FILE]"
    longdesc = (
        "Run the rustpbx_py SIP PBX: SIP listeners (UDP, TCP, TLS, WebSocket), "
        "the module pipeline (acl, auth, registrar, call) and its addons, "
        "configured by a RustPBX-style TOML file."
    )
    optParameters = [
        ["config", "c", "etc/pbx.toml", "Path to the TOML configuration file."],
        ["log-level", "l", None, "Lowest level logged: trace, debug, info, warn or error (default: the config's log_level, else info)."],
    ]

    def postOptions(self) -> None:
        """Load and validate the configuration now, so that a bad file stops
        twistd with a readable message before anything starts."""
        try:
            config = load_config(self["config"])
        except ConfigError as e:
            raise ConfigRefused(str(e))
        from rustpbx_py.server import check_plugins

        problems = check_plugins(config)
        if problems:
            raise ConfigRefused("\n".join(problems))
        self["loaded"] = config
        from rustpbx_py.logs import level_for

        try:
            self["level"] = level_for(self["log-level"], config.log_level)
        except ValueError as e:
            raise ConfigRefused(f"--log-level: {e}")

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"rustpbx_py {__version__}")
        raise SystemExit(0)


def makeService(options: Options) -> service.IService:
    """Build the PBX service tree from validated options."""
    from rustpbx_py.server import buildService

    config: Config = options["loaded"]
    return buildService(config, options["level"])
