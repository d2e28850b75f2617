#!/usr/bin/env python3
"""
CPU cost of transcoding one 20 ms frame, for every codec pair the relay
can bridge: ``.venv/bin/python bench/transcode.py [seconds-of-audio]``.

Encodes a few seconds of speech-band signal (a tone sweep plus a little
noise, so Opus does not coast on silence) in each source codec with PyAV,
then times L{rustpbx_py.media.transcode.Transcoder.convert} over those
payloads on one core and prints microseconds per frame (median of 5 runs)
and what that means in concurrent one-way streams per core (20 ms of CPU
per 20 ms of audio).  Not a test: it asserts nothing.
"""

from __future__ import annotations

import math
import os
import platform
import random
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import av  # noqa: E402

from rustpbx_py.media.transcode import Transcoder  # noqa: E402

from rustpbx_py.media.codecs import codec_by_name  # noqa: E402

AV = {"pcmu": ("pcm_mulaw", 8000), "pcma": ("pcm_alaw", 8000),
      "g722": ("g722", 16000), "opus": ("libopus", 48000)}


def payloads(name: str, seconds: float) -> list:
    """C{seconds} of a 300-3000 Hz sweep with noise, as 20 ms C{name} payloads."""
    encoder, rate = AV[name]
    ctx = av.CodecContext.create(encoder, "w")
    ctx.sample_rate, ctx.format, ctx.layout = rate, "s16", "mono"
    if name == "opus":
        ctx.bit_rate = 32000
    ctx.open()
    rng = random.Random(1)
    step = rate // 50
    out = []
    phase = 0.0
    for n in range(int(seconds * 50)):
        hz = 300 + 2700 * ((n % 100) / 100)
        samples = []
        for _ in range(step):
            phase += 2 * math.pi * hz / rate
            samples.append(int(6000 * math.sin(phase) + rng.uniform(-500, 500)))
        frame = av.AudioFrame(format="s16", layout="mono", samples=step)
        frame.sample_rate, frame.pts = rate, n * step
        frame.planes[0].update(struct.pack(f"<{step}h", *samples))
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    names = ["pcmu", "pcma", "g722", "opus"]
    source = {name: payloads(name, seconds) for name in names}
    print(f"# transcoding cost per 20 ms frame ({platform.python_implementation()} "
          f"{platform.python_version()}, PyAV {av.__version__}, {platform.machine()}, "
          f"{seconds:g} s of audio per run, median of 5 runs)")
    print(f"{'pair':<14} {'us/frame':>9} {'streams/core':>13}")
    for src in names:
        for dst in names:
            if src == dst:
                continue
            runs = []
            for _ in range(5):
                t = Transcoder(codec_by_name(src), codec_by_name(dst))
                frames = source[src]
                start = time.process_time()
                for payload in frames:
                    t.convert(payload)
                runs.append((time.process_time() - start) / len(frames))
            us = statistics.median(runs) * 1e6
            print(f"{src + '->' + dst:<14} {us:9.1f} {int(20000 / us):13d}")


if __name__ == "__main__":
    main()
