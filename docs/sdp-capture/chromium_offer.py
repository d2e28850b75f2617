"""
Capture Chromium's WebRTC offers: headless Chromium (selenium, as
interop/test_jssip_chromium.py runs it) opens a page on 127.0.0.1, makes an
RTCPeerConnection with fake devices, createOffer(), waits for ICE
gathering and returns localDescription.sdp.  Run it under
C{unshare -rn sh -c 'ip link set lo up; ...'} for an offer without the
host's addresses.

Usage: python chromium_offer.py OUTDIR
"""
import functools
import http.server
import os
import sys
import tempfile
import threading

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

VARIANTS = [
    ("audio", "const s = await navigator.mediaDevices.getUserMedia({audio:true}); s.getTracks().forEach(t=>pc.addTrack(t,s));"),
    ("audio-video", "const s = await navigator.mediaDevices.getUserMedia({audio:true, video:true}); s.getTracks().forEach(t=>pc.addTrack(t,s));"),
    ("audio-datachannel", "const s = await navigator.mediaDevices.getUserMedia({audio:true}); s.getTracks().forEach(t=>pc.addTrack(t,s)); pc.createDataChannel('chat');"),
]
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream"]

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
web = tempfile.mkdtemp()
with open(os.path.join(web, "index.html"), "w") as f:
    f.write("<html><body>offer</body></html>")
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=web))
threading.Thread(target=srv.serve_forever, daemon=True).start()
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in FLAGS:
    options.add_argument(flag)
browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    browser.get(f"http://127.0.0.1:{srv.server_address[1]}/index.html")
    browser.set_script_timeout(30)
    for name, js in VARIANTS:
        sdp = browser.execute_async_script(
            "const done = arguments[arguments.length-1];"
            "(async () => { const pc = new RTCPeerConnection();" + js +
            "const offer = await pc.createOffer(); await pc.setLocalDescription(offer);"
            "await new Promise(r => { if (pc.iceGatheringState === 'complete') r();"
            " pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); }; setTimeout(r, 5000); });"
            "done(pc.localDescription.sdp); })().catch(e => done('ERROR ' + e));"
        )
        with open(os.path.join(out, f"chromium-{name}.sdp"), "w", newline="") as f:
            f.write(sdp)
        print(name, len(sdp), browser.capabilities.get("browserVersion"))
finally:
    browser.quit()
