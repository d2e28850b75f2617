# -*- test-case-name: rustpbx_py.test.test_reload -*-
"""
Routes, trunks and ACL rules reloaded without a restart (the console's
Reload button, C{POST /api/v1/reload}).

The configuration is read again, whole, by L{rustpbx_py.config.load_config}
(main file, included files, generated files); the new trunk set, router
and ACL rules are built completely, and only then swapped into the
running modules, in one turn of the reactor, so no request ever sees half
of the old set and half of the new.  A file that does not load, or a
route or trunk the run-time code refuses, leaves everything as it was and
is reported.

What carries over: calls in progress keep counting against their trunk
(same name) and their route's policy; addresses already resolved for
trunk host names are kept, new host names are resolved once at reload
(refreshed at their TTL only from the next start); trunk registrations
are restarted only for trunks whose settings changed.  Other C{[proxy]}
keys are not touched by a reload (Settings > Proxy Settings applies
those).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from twisted.internet import defer
from twisted.logger import Logger

from rustpbx_py.config import Config, ConfigError, load_config

__all__ = ["ReloadError", "ReloadResult", "reload_routing"]

log = Logger()


class ReloadError(Exception):
    """The new configuration cannot be used; nothing was changed.

    @ivar problems: one message per problem (file, key, what is wrong)."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class ReloadResult:
    """What a reload put in place."""

    routes: int
    trunks: int
    acl_rules: int
    config: Config
    warnings: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.routes} routes, {self.trunks} trunks, {self.acl_rules} ACL rules"


def _modules(context: Any, name: str) -> List[Any]:
    return [m for m in getattr(context, "modules", None) or [] if getattr(m, "name", None) == name]


def _trunk_sets(context: Any) -> List[Any]:
    """Every TrunkSet the running modules hold, each once."""
    found: List[Any] = []
    candidates = [getattr(context, "trunks", None)]
    for module in _modules(context, "acl") + _modules(context, "call"):
        candidates.append(getattr(module, "trunks", None))
        router = getattr(module, "router", None)
        candidates.append(getattr(router, "trunks", None))
    for trunks in candidates:
        if trunks is not None and all(trunks is not f for f in found):
            found.append(trunks)
    return found


def reload_routing(context: Any, config: Optional[Config] = None) -> ReloadResult:
    """
    Read the configuration again (or take C{config}, already loaded) and
    put its routes, trunks and ACL rules in place in the running PBX.

    @param context: the service's context (C{config}, C{modules},
        C{trunks}, C{reactor}, C{dns}).
    @raise ReloadError: the configuration does not load or the run-time
        code refuses a route or trunk; the running set is unchanged.
    """
    from rustpbx_py.call.routing import Router, RoutingError
    from rustpbx_py.call.trunks import TrunkError, TrunkSet
    from rustpbx_py.modules.acl import compile_rules

    running = context.config
    if config is None:
        try:
            config = load_config(running.path)
        except ConfigError as e:
            raise ReloadError(e.problems)
    proxy = config.proxy
    clock = context.reactor
    # Build everything first: any refusal leaves the running set alone.
    try:
        probe = TrunkSet(proxy.trunks, clock)
        routers = []
        for module in _modules(context, "call"):
            if getattr(module, "router", None) is not None:
                routers.append((module, Router(proxy.routes, probe, clock, module.router.rng)))
        rules = compile_rules(proxy.acl_rules)
    except (TrunkError, RoutingError, ValueError) as e:
        raise ReloadError([f"{running.path}: {e}"])

    # Swap (nothing below may fail half-way).
    trunk_sets = _trunk_sets(context)
    previous = {n: trunk_sets[0].get(n) for n in trunk_sets[0].names()} if trunk_sets else {}
    for trunks in trunk_sets:
        trunks.replace(proxy.trunks)
    for module, router in routers:
        old = module.router
        # The router was built over a probe set of the same trunks; it
        # answers from the shared set, now holding them.
        router.trunks = module.trunks if module.trunks is not None else old.trunks
        _carry_policies(old.policies, router.policies)
        module.router = router
    for acl in _modules(context, "acl"):
        acl.rules = rules
        acl._any_trunk = bool(acl.trunks.names())
    running.proxy.routes = proxy.routes
    running.proxy.trunks = proxy.trunks
    running.proxy.acl_rules = proxy.acl_rules
    for module in _modules(context, "call"):
        registrar = getattr(module, "trunk_registrar", None)
        if registrar is not None:
            registrar.update(running.proxy).addErrback(lambda f: log.failure("trunk registrations after reload", f))
        health = getattr(module, "trunk_health", None)
        if health is not None:
            health.update(previous)
    _resolve_new_hosts(context, trunk_sets)
    result = ReloadResult(len(proxy.routes), len(proxy.trunks), len(proxy.acl_rules), config, list(config.warnings))
    log.info("reloaded: {summary}", summary=result.summary())
    return result


def _carry_policies(old: Any, new: Any) -> None:
    """Calls in progress and the windows counted so far stay counted
    under policies that still exist."""
    keep = set(new._policies)
    new._active = {k: v for k, v in old._active.items() if k[0] in keep}
    new._frequency = {k: v for k, v in old._frequency.items() if k[0] in keep}
    new._daily = {k: v for k, v in old._daily.items() if k[0] in keep}


def _resolve_new_hosts(context: Any, trunk_sets: List[Any]) -> None:
    """Host names a reload brought in are resolved once now (the start-up
    watcher refreshes only the names it was given)."""
    dns = getattr(context, "dns", None)
    if dns is None or not trunk_sets:
        return
    trunks = trunk_sets[0]
    for name in trunks.host_names():
        if name in trunks._resolved:
            continue

        def found(result: Any, name: str = name) -> None:
            addresses = result[0] if isinstance(result, tuple) else result
            for t in trunk_sets:
                t.set_addresses(name, list(addresses or []))

        d = defer.maybeDeferred(dns.addresses, name)
        d.addCallbacks(found, lambda f, name=name: log.warn("trunk host {name} did not resolve: {error}", name=name, error=f.getErrorMessage()))
