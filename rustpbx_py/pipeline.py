# -*- test-case-name: rustpbx_py.test.test_pipeline -*-
"""
The module pipeline (RustPBX's proxy module chain): every new server
transaction goes through the configured modules in order until one aborts.

A module's error answers 500; a request no module answered gets 501; a
request a module marked as spam gets nothing at all.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule


class TransactionContext:
    """
    What the modules learn about one request as it passes through them.

    @ivar spam: set by a module that wants the request dropped silently
        (scanner, flood, unknown user with C{ensure_user}).
    @ivar user: the authenticated L{rustpbx_py.users.SipUser}, if any.
    @ivar trunk: the name of the trunk whose C{inbound_hosts} the request
        came from, if any; such requests bypass acl rules and auth.
    @ivar credit: set by the acl module when its frequency limiter counted
        this request: called with how many of the source's requests proved
        legitimate (the auth module, on success), it refunds them.
    @ivar values: free-form data for modules and addons.
    """

    __slots__ = ("spam", "user", "trunk", "realm", "credit", "values")

    def __init__(self) -> None:
        self.spam = False
        self.credit: Optional[Callable[[int], None]] = None
        self.user: Any = None
        self.trunk: Optional[str] = None
        self.realm: Optional[str] = None
        self.values: Dict[str, Any] = {}


class Pipeline:
    """Runs modules in order for each transaction."""

    log = Logger()

    def __init__(self, modules: List[IProxyModule]) -> None:
        self.modules = modules
        self._methods = []
        for m in modules:
            self._methods.append(frozenset(x.upper() for x in m.allow_methods()))

    def allowed_methods(self) -> List[str]:
        """The methods some module handles, for the C{Allow} header."""
        out: List[str] = []
        for methods in self._methods:
            for m in sorted(methods):
                if m != "*" and m not in out:
                    out.append(m)
        return out

    def run(self, tx) -> defer.Deferred:
        """
        Offer C{tx} to each module in turn.  Fires with True when a module
        aborted (it answered or dropped the request) and False when every
        module continued; a module failure is logged and answered 500.
        """
        method = tx.request.method.upper()
        return self._step(tx, method, 0)

    def _step(self, tx, method: str, index: int):
        modules = self.modules
        while index < len(modules):
            allowed = self._methods[index]
            if "*" not in allowed and method not in allowed:
                index += 1
                continue
            module = modules[index]
            try:
                result = module.on_transaction_begin(tx)
            except Exception:
                self._failed(tx, module, Failure())
                return defer.succeed(True)
            if isinstance(result, defer.Deferred):
                nxt = index + 1

                def done(action, module=module, nxt=nxt):
                    if action == ABORT or tx.context.spam:
                        return True
                    return self._step(tx, method, nxt)

                def failed(f, module=module):
                    self._failed(tx, module, f)
                    return True

                return result.addCallbacks(done, failed)
            if result == ABORT or tx.context.spam:
                return defer.succeed(True)
            if result != CONTINUE:
                self._failed(tx, module, Failure(ValueError(f"module answered {result!r}")))
                return defer.succeed(True)
            index += 1
        return defer.succeed(False)

    def _failed(self, tx, module, failure: Failure) -> None:
        self.log.failure(
            "module {module} failed on {method} {callid}",
            failure,
            module=getattr(module, "name", module),
            method=tx.request.method,
            callid=tx.request.call_id,
        )
        if not tx.completed and not tx.context.spam:
            tx.reply(500, "Server Internal Error")

    def end(self, tx) -> None:
        """Tell every module the transaction is over."""
        for module in self.modules:
            try:
                module.on_transaction_end(tx)
            except Exception:
                self.log.failure("module {module} failed at transaction end", module=module.name)
