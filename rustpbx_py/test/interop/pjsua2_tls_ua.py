"""
A pjsua2 (pjsip's C++ API, from the C{pjsua2-python} wheel) user agent
over TLS for the interop tests, run as a child process: pjsip owns its
threads and sockets, which does not mix with a reactor.

C{callee}: register, answer the first call with 200, wait for the BYE.
C{caller}: register, call the callee, hang up once the call is confirmed.
Both verify the PBX's certificate against the CA file given, print one
JSON line with what happened and exit 0 when every step happened.

Usage: python pjsua2_tls_ua.py '{"role": "caller", "port": 5061, "ca": "cert.pem",
  "user": "alice", "password": "...", "callee": "bob", "ready_file": "..."}'
"""

from __future__ import annotations

import json
import sys
import time


def main(options: dict) -> int:
    import pjsua2 as pj

    result = {"role": options["role"], "steps": []}
    steps = result["steps"]

    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "pjsua2-python interop test"
    config.logConfig.level = 3
    config.logConfig.consoleLevel = 3
    ep.libInit(config)
    tls = pj.TransportConfig()
    tls.port = 0
    tls.tlsConfig.CaListFile = options["ca"]
    tls.tlsConfig.verifyServer = True
    ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tls)
    ep.libStart()
    ep.audDevManager().setNullDev()

    registrar = f"sip:127.0.0.1:{options['port']};transport=tls"
    state = {"registered": False, "call": None, "confirmed": False, "disconnected": False, "reg_error": None}

    class Call(pj.Call):
        def onCallState(self, prm):
            info = self.getInfo()
            steps.append(f"{info.stateText} {info.lastStatusCode}")
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                state["confirmed"] = True
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                state["disconnected"] = True
                result["last_status"] = info.lastStatusCode

    class Account(pj.Account):
        def onRegState(self, prm):
            if prm.code == 200 and self.getInfo().regIsActive:
                state["registered"] = True
            elif prm.code >= 300:
                state["reg_error"] = f"{prm.code} {prm.reason}"

        def onIncomingCall(self, prm):
            call = Call(self, prm.callId)
            state["call"] = call
            steps.append("incoming")
            answer = pj.CallOpParam()
            answer.statusCode = 200
            call.answer(answer)

    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{options['user']}@127.0.0.1"
    account_config.regConfig.registrarUri = registrar
    account_config.sipConfig.proxies.append(registrar + ";lr")
    account_config.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", options["user"], 0, options["password"]))
    account = Account()
    account.create(account_config)

    def pump(until, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until():
                return True
            ep.libHandleEvents(20)
        return until()

    code = 1
    try:
        if not pump(lambda: state["registered"] or state["reg_error"], 15) or not state["registered"]:
            result["error"] = f"not registered: {state['reg_error']}"
            return 1
        steps.append("registered")
        if options["role"] == "callee":
            with open(options["ready_file"], "w") as f:
                f.write("registered\n")
            if not pump(lambda: state["disconnected"], 40):
                result["error"] = "no call ended"
                return 1
            code = 0 if state["confirmed"] else 1
        else:
            state["call"] = Call(account)
            state["call"].makeCall(f"sip:{options['callee']}@127.0.0.1", pj.CallOpParam(True))
            if not pump(lambda: state["confirmed"] or state["disconnected"], 20) or not state["confirmed"]:
                result["error"] = "call not confirmed"
                return 1
            pump(lambda: False, 0.5)
            state["call"].hangup(pj.CallOpParam())
            if not pump(lambda: state["disconnected"], 10):
                result["error"] = "no end after BYE"
                return 1
            code = 0
        return code
    finally:
        # pjsua2 objects must go before the library: a Call deleted after
        # libDestroy() trips an assertion in pjsua_call_set_user_data.
        state["call"] = None
        account.shutdown()
        pump(lambda: False, 0.3)
        del account
        import gc

        gc.collect()
        print(json.dumps(result), flush=True)
        ep.libDestroy()


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
