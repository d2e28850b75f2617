# -*- test-case-name: rustpbx_py.test.test_guard -*-
"""
Failed logins counted per source: slow the source down, then ban it for a
while (Kamailio's pike and fail2ban, inside the PBX).

What counts as a failure (the auth module reports them): a digest response
with a wrong password, credentials of a disabled user, and a request naming
a user no backend knows (with C{ensure_user}: enumeration).  A source is
an IPv4 address or an IPv6 /64 (L{rustpbx_py.modules.acl.limiter_key}).

 - Each failure within C{auth_failure_limit}'s window is answered later
   than the one before (n x C{auth_failure_delay} seconds, at most
   L{MAX_DELAY}): a guessing tool waits for answers, a phone with a typo
   does not care.
 - At the limit the source is banned for C{auth_ban_time} seconds: all of
   its requests get no answer at all (the auth module screens them before
   the core answers anything).  Each further ban of the same source within a
   day doubles, up to a day.
 - A source that authenticated successfully within the last hour (an
   office's NAT address) is never banned as a whole for failures: they are
   counted per (source, user), and only that user from that source is
   silenced, so one phone with a wrong password or a guesser among the
   office's phones cannot cut the office off.
 - Accounts are never locked: failures are counted per source, so the right
   password from another address always works.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Optional, Tuple

__all__ = ["LoginGuard", "MAX_DELAY", "MAX_BAN"]

#: The longest a failed attempt's answer is held back, seconds (well under
#: the 32 s after which a UDP client gives up on its transaction).
MAX_DELAY = 10.0
#: The longest ban, seconds.
MAX_BAN = 86400.0
#: How long a successful login makes its source trusted (see the module
#: docstring), seconds.
TRUST_SECONDS = 3600.0


class TrustedSources:
    """
    Sources trusted for C{seconds} after a success (a login that passed),
    bounded to C{max_keys}: the least recently trusted are forgotten first.
    Shared by the login guard and the frequency limiter.
    """

    def __init__(self, clock: Any, seconds: float, max_keys: int) -> None:
        self._clock = clock
        self.seconds = seconds
        self.max_keys = max_keys
        self._until: "OrderedDict[str, float]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def trust(self, source: str, now: Optional[float] = None) -> None:
        """Trust C{source} for L{seconds} from C{now} (the clock's time by default)."""
        until = self._until
        until[source] = (self._clock.seconds() if now is None else now) + self.seconds
        until.move_to_end(source)
        while len(until) > self.max_keys:
            until.popitem(last=False)

    def trusted(self, source: str) -> bool:
        """Whether C{source} is still trusted (an expired entry is forgotten)."""
        until = self._until.get(source)
        if until is None:
            return False
        if until <= self._clock.seconds():
            del self._until[source]
            return False
        return True


class _Record:
    __slots__ = ("start", "count")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0


class LoginGuard:
    """
    @param limit: (failures, window seconds) before a ban, or None for no
        counting at all.
    @param ban_time: the first ban's length in seconds; 0 bans nobody (the
        answers are still slowed down).
    @param delay: seconds added to the answer of each further failure.
    """

    def __init__(
        self,
        clock: Any,
        limit: Optional[Tuple[int, float]] = (5, 600.0),
        ban_time: float = 900.0,
        delay: float = 1.0,
        max_keys: int = 100000,
    ) -> None:
        self._clock = clock
        self.limit = limit
        self.ban_time = float(ban_time)
        self.delay = float(delay)
        self.max_keys = max_keys
        self._failures: "OrderedDict[Hashable, _Record]" = OrderedDict()
        #: key -> (banned until, bans so far)
        self._bans: "OrderedDict[Hashable, Tuple[float, int]]" = OrderedDict()
        self._trusted = TrustedSources(clock, TRUST_SECONDS, max_keys)

    @property
    def enabled(self) -> bool:
        return self.limit is not None

    # -- trust -----------------------------------------------------------------

    def succeeded(self, source: str) -> None:
        """A login from C{source} succeeded: trust it (see the module docstring)."""
        self._trusted.trust(source)

    def trusted(self, source: str) -> bool:
        return self._trusted.trusted(source)

    def key(self, source: str, user: Optional[str]) -> Hashable:
        """What a failure of C{user} from C{source} counts against."""
        if self.trusted(source):
            return (source, (user or "").lower())
        return source

    # -- failures and bans -------------------------------------------------------

    def banned(self, key: Hashable) -> bool:
        """Whether C{key} (a source, or a (source, user) pair) is banned now."""
        entry = self._bans.get(key)
        if entry is None:
            return False
        return entry[0] > self._clock.seconds()

    def failures(self, key: Hashable) -> int:
        """Failures of C{key} counted in its current window."""
        record = self._failures.get(key)
        return record.count if record is not None else 0

    def failed(self, key: Hashable) -> Tuple[int, float, float]:
        """
        Count one failure of C{key}: (failures in the current window, seconds
        to hold the answer back, ban length in seconds if this failure
        banned the key, else 0).
        """
        if self.limit is None:
            return 0, 0.0, 0.0
        count_limit, window = self.limit
        now = self._clock.seconds()
        failures = self._failures
        record = failures.get(key)
        if record is None or now - record.start >= window:
            record = failures[key] = _Record(now)
        failures.move_to_end(key)
        while len(failures) > self.max_keys:
            failures.popitem(last=False)
        record.count += 1
        count = record.count
        if count >= count_limit and self.ban_time > 0:
            del failures[key]
            return count, 0.0, self._ban(key, now)
        return count, min(count * self.delay, MAX_DELAY), 0.0

    def _ban(self, key: Hashable, now: float) -> float:
        bans = self._bans
        previous = bans.get(key)
        strikes = 0
        if previous is not None and now - previous[0] < MAX_BAN:
            strikes = previous[1] + 1
        seconds = min(self.ban_time * (2 ** min(strikes, 20)), MAX_BAN)
        bans[key] = (now + seconds, strikes)
        bans.move_to_end(key)
        while len(bans) > self.max_keys:
            bans.popitem(last=False)
        return seconds

    def __len__(self) -> int:
        """Keys with failures being counted (for tests and the console)."""
        return len(self._failures)
