"""
An independent WebRTC endpoint for the interop tests: aiortc (its own ICE,
DTLS and SRTP stacks) in a child process, since it runs on asyncio.

Protocol on stdio, one JSON object a line: the peer prints
C{{"offer": sdp}} (audio only, a 440 Hz tone as its microphone), reads
C{{"answer": sdp}}, keeps the call for C{seconds} (argv[1]), then prints
C{{"dtls": state, "ice": state, "frames": n, "tone": hz or None,
"powers": {...}}} about what it received, and exits.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import os
import struct
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

import av  # noqa: E402
from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamTrack  # noqa: E402

from rustpbx_py.test.tones import strongest  # noqa: E402

RATE = 48000
FRAME = 960  # 20 ms


class Tone(MediaStreamTrack):
    """A 440 Hz microphone, paced in real time."""

    kind = "audio"

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        self.hz = hz
        self.pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.pts += FRAME
            delay = self.start + self.pts / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        data = struct.pack(f"<{FRAME}h", *(int(8000 * math.sin(2 * math.pi * self.hz * (self.pts + i) / RATE))
                                           for i in range(FRAME)))
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(data)
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


async def main(seconds: float) -> None:
    pc = RTCPeerConnection()
    received = {"frames": 0, "samples": [], "rate": 8000}

    @pc.on("track")
    def on_track(track) -> None:
        async def drain() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                received["frames"] += 1
                received["rate"] = frame.sample_rate
                count = frame.samples * len(frame.layout.channels)
                samples = struct.unpack(f"<{count}h", bytes(frame.planes[0])[:2 * count])
                received["samples"].extend(samples[::len(frame.layout.channels)])
        asyncio.ensure_future(drain())

    pc.addTrack(Tone())
    await pc.setLocalDescription(await pc.createOffer())
    print(json.dumps({"offer": pc.localDescription.sdp}), flush=True)
    line = await asyncio.get_event_loop().run_in_executor(None, sys.stdin.readline)
    await pc.setRemoteDescription(RTCSessionDescription(json.loads(line)["answer"], "answer"))
    await asyncio.sleep(seconds)
    dtls = pc.getTransceivers()[0].sender.transport
    rate = received["rate"]
    tone, powers = strongest(received["samples"][-rate:], rate, [440, 660, 880])
    print(json.dumps({"dtls": dtls.state, "ice": pc.iceConnectionState, "frames": received["frames"],
                      "tone": tone, "powers": {str(k): v for k, v in powers.items()}}), flush=True)
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 4.0))
