"""
Capture pjsip's offer through pjsua2 (the pjsua2-python wheel): an account
bound to 127.0.0.1 calls sip:bob@127.0.0.1:PORT, where listen_invite.py
waits.  "srtp" makes SRTP optional (RTP/AVP with a=crypto lines).

Usage: python pjsua2_offer.py PORT plain|srtp
"""
import sys
import time

import pjsua2 as pj

port, srtp = int(sys.argv[1]), sys.argv[2] == "srtp"
ep = pj.Endpoint(); ep.libCreate()
c = pj.EpConfig(); c.uaConfig.threadCnt = 0; c.uaConfig.mainThreadOnly = True; c.logConfig.level = 1; c.logConfig.consoleLevel = 1
c.uaConfig.userAgent = "pjsua2"
ep.libInit(c)
t = pj.TransportConfig(); t.port = 0; t.boundAddress = "127.0.0.1"; t.publicAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, t)
ep.libStart(); ep.audDevManager().setNullDev()
acfg = pj.AccountConfig(); acfg.idUri = "sip:alice@127.0.0.1"
acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"; acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
if srtp:
    acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_OPTIONAL
    acfg.mediaConfig.srtpSecureSignaling = 0
acc = pj.Account(); acc.create(acfg)
call = pj.Call(acc); call.makeCall(f"sip:bob@127.0.0.1:{port}", pj.CallOpParam(True))
end = time.time() + 4
while time.time() < end:
    ep.libHandleEvents(50)
ep.hangupAllCalls(); ep.libHandleEvents(200)
print("pjsua2", ep.libVersion().full)
ep.libDestroy()
