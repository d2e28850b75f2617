# -*- test-case-name: rustpbx_py.test.test_web_login -*-
"""
Failed console logins slowed down per source address, then banned: the
SIP login guard's counting and bans (L{rustpbx_py.modules.guard.LoginGuard},
with its doubling bans and its trust of sources that logged in) with an
exponential delay: each failure holds the next attempt from the source
back twice as long as the one before.
"""

from __future__ import annotations

from typing import Dict, Optional

from rustpbx_py.modules.guard import LoginGuard

#: Failures (within WINDOW seconds) before a source is banned.
LIMIT = 10
WINDOW = 900.0
#: The first ban's length, seconds (each further one doubles).
BAN_TIME = 900.0
#: The delay after the first failure, seconds; doubles at each failure.
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
#: Logins one source may have checked at once.
MAX_PARALLEL = 2


class LoginThrottle:
    def __init__(self, clock, limit: int = LIMIT, window: float = WINDOW, ban_time: float = BAN_TIME,
                 first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY) -> None:
        self.clock = clock
        self.guard = LoginGuard(clock, limit=(limit, window), ban_time=ban_time, delay=0.0, max_keys=10000)
        self.first_delay = first_delay
        self.max_delay = max_delay
        #: source -> earliest time of its next attempt
        self._not_before: Dict[object, float] = {}
        #: sources with a login being checked now
        self._checking: Dict[str, int] = {}

    def wait(self, source: str, username: str = "") -> Optional[float]:
        """Seconds C{source} must wait before trying again (banned or slowed
        down), or None when it may try now."""
        key = self.guard.key(source, username)
        now = self.clock.seconds()
        if self.guard.banned(key):
            until = self.guard._bans[key][0]
            return max(until - now, 1.0)
        not_before = self._not_before.get(key)
        if not_before is not None and not_before > now:
            return not_before - now
        if self._checking.get(source, 0) >= MAX_PARALLEL:
            # Parallel guesses would all be checked before the first
            # failure slows the source down.
            return 1.0
        return None

    def begin(self, source: str) -> None:
        """A login from C{source} is being checked (until L{end})."""
        self._checking[source] = self._checking.get(source, 0) + 1

    def end(self, source: str) -> None:
        left = self._checking.get(source, 0) - 1
        if left > 0:
            self._checking[source] = left
        else:
            self._checking.pop(source, None)

    def failed(self, source: str, username: str = "") -> float:
        """Count a failure; returns the seconds before the next attempt is
        allowed (the ban's length when this failure banned the source)."""
        key = self.guard.key(source, username)
        count, _delay, banned = self.guard.failed(key)
        if banned:
            self._not_before.pop(key, None)
            return banned
        delay = min(self.first_delay * 2 ** max(count - 1, 0), self.max_delay)
        self._not_before[key] = self.clock.seconds() + delay
        if len(self._not_before) > 10000:
            now = self.clock.seconds()
            self._not_before = {k: t for k, t in self._not_before.items() if t > now}
        return delay

    def succeeded(self, source: str, username: str = "") -> None:
        key = self.guard.key(source, username)
        self._not_before.pop(key, None)
        self.guard._failures.pop(key, None)
        self.guard.succeeded(source)
