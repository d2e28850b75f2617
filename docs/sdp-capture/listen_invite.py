"""
Receive one SIP INVITE over UDP on 127.0.0.1:PORT, answer it 486 and save
its body (the offer) to OUT.  Used by the capture scripts beside it.

Usage: python3 listen_invite.py PORT OUT [TIMEOUT]
"""
import socket
import sys

port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
s.settimeout(float(sys.argv[3]) if len(sys.argv) > 3 else 20)
while True:
    data, addr = s.recvfrom(65535)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"INVITE"):
        continue
    keep = (b"via", b"from", b"to", b"call-id", b"cseq", b"v", b"f", b"t", b"i")
    hdrs = [l for l in lines[1:] if l.split(b":")[0].strip().lower() in keep]
    hdrs = [h + b";tag=cap1" if h.lower().startswith((b"to:", b"t:")) else h for h in hdrs]
    s.sendto(b"SIP/2.0 486 Busy Here\r\n" + b"\r\n".join(hdrs) + b"\r\nContent-Length: 0\r\n\r\n", addr)
    with open(out, "wb") as f:
        f.write(body)
    print("captured", len(body), "bytes from", addr)
    try:
        s.recvfrom(65535)  # the ACK
    except OSError:
        pass
    break
