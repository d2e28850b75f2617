"""
A userspace rtpengine daemon for interop tests: Debian's rtpengine-daemon
binary run in the foreground on loopback (no kernel module, no root, no
config file), its ng port ephemeral, stopped when the test ends.
"""

from __future__ import annotations

import random

from twisted.internet import defer, error, protocol, reactor, task

from rustpbx_py.test.interop.support import require_tool


class _Daemon(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        del self.output[:-65536]  # the last 64 KiB, for a failure message

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


def free_udp_port(host: str) -> int:
    """A UDP port free on C{host} (IPv4 or IPv6) now."""
    import socket

    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


@defer.inlineCallbacks
def start_rtpengine(testcase, ports: int = 200, timeout: float = 10.0,
                    interfaces=("127.0.0.1",), ng_host: str = "127.0.0.1"):
    """
    Start rtpengine with RTP on C{interfaces} and its ng socket on
    C{ng_host}; fire with C{"udp:HOST:PORT"} (its ng address) once it
    answers a ping; skips the test when the binary is missing (.ci/run
    installs rtpengine-daemon).  The RTP ports are a random block of
    C{ports} in 30000-59999 (rtpengine skips ports in use).
    """
    binary = require_tool("rtpengine")
    ng_text = f"[{ng_host}]" if ":" in ng_host else ng_host
    # The ng port is found free and then bound by rtpengine, and something
    # else may take it in between (a call's ephemeral socket): start again
    # on another port when it exits saying so.
    for _ in range(3):
        ng = free_udp_port(ng_host)
        low = random.randrange(30000, 60000 - ports, 2)
        proto = _Daemon()
        args = [binary, "--foreground", "--config-file=none", "--table=-1",
                *(f"--interface={i}" for i in interfaces),
                f"--listen-ng={ng_text}:{ng}", f"--port-min={low}", f"--port-max={low + ports - 1}",
                "--log-stderr", "--log-level=5", "--num-threads=2", "--delete-delay=0", "--timeout=60"]
        process = reactor.spawnProcess(proto, binary, args, env={"PATH": "/usr/bin:/bin"})
        testcase.daemon_output = proto.output
        testcase.rtpengine_ports = (low, low + ports - 1)
        testcase.addCleanup(_stopper(process, proto))
        server = f"udp:{ng_text}:{ng}"
        answered = yield _pinged(server, proto, timeout)
        if answered:
            return server
        if not (proto.ended.called and b"in use" in proto.output):
            break
    raise AssertionError("rtpengine did not start: " + proto.output.decode("utf-8", "replace")[-2000:])


def _stopper(process, proto):
    def stop():
        try:
            process.signalProcess("TERM")
        except error.ProcessExitedAlready:
            return None
        return proto.ended

    return stop


@defer.inlineCallbacks
def _pinged(server: str, proto, timeout: float):
    """Fire with True once the daemon at C{server} answers a ping, False
    when it exits or C{timeout} passes first."""
    from rustpbx_py.media.rtpengine import NgClient

    client = NgClient(reactor, [server], timeout=0.5)
    try:
        for _ in range(int(timeout / 0.5)):
            if proto.ended.called:
                return False
            try:
                yield client.ping(client.daemons[0])
                return True
            except Exception:
                yield task.deferLater(reactor, 0.0, lambda: None)
    finally:
        yield client.stop()
    return False
