"""
Capture Firefox's WebRTC offers without a WebDriver: headless firefox-esr
opens firefox_offer.html from a server on 127.0.0.1, which makes the
offers with fake devices and POSTs each back here.

Usage: python3 firefox_offer.py OUTDIR
"""
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(here, "firefox_offer.html"), "rb") as f:
            page = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/sdp/"):
            with open(os.path.join(out, f"firefox-{self.path[5:]}.sdp"), "wb") as f:
                f.write(body)
        else:
            print(body.decode())
            done.set()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
profile = tempfile.mkdtemp()
with open(os.path.join(profile, "user.js"), "w") as f:
    f.write('user_pref("media.navigator.streams.fake", true);\n'
            'user_pref("media.navigator.permission.disabled", true);\n'
            'user_pref("browser.shell.checkDefaultBrowser", false);\n'
            'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n')
firefox = subprocess.Popen(["firefox-esr", "--headless", "--no-remote", "--profile", profile,
                            f"http://127.0.0.1:{srv.server_address[1]}/"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    print("done" if done.wait(90) else "timed out")
finally:
    firefox.terminate()
    firefox.wait(10)
    shutil.rmtree(profile, True)
