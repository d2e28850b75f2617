#!/usr/bin/env python3
"""
SIP message layer throughput: messages per second for

  parse            parse_message() alone
  parse+touch      parse, then read what every request/response needs on the
                   hot path: Call-ID, CSeq, top Via (parsed), From/To tags,
                   Max-Forwards and the Request-URI (parsed)
  parse+validate   parse, rustpbx_py.sip.validate.check_message(), then the
                   same reads as parse+touch (served from the parse cache
                   the checks filled): the full receive path
  serialise        to_bytes() of already parsed messages

over the corpus in bench/corpus/*.sip (INVITEs, REGISTERs, 1xx/2xx/4xx
responses, ACK, BYE, OPTIONS).  Each figure is the best of --repeat runs
of about --seconds of this process's CPU time each (CPU time, so that other
processes on a shared machine disturb the figures less).

    python bench/parser_bench.py [--seconds 1] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from rustpbx_py.sip.message import parse_message  # noqa: E402
from rustpbx_py.sip.validate import check_message  # noqa: E402


def load_corpus(directory: str):
    names = sorted(n for n in os.listdir(directory) if n.endswith(".sip"))
    if not names:
        raise SystemExit(f"no *.sip files in {directory}")
    corpus = []
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            corpus.append(f.read())
    return names, corpus


def touch(msg) -> None:
    msg.call_id
    msg.cseq
    msg.via.branch
    msg.from_addr.tag
    msg.to_addr.tag
    if msg.is_request:
        msg.max_forwards
        msg.ruri.host


def run_parse(corpus):
    for data in corpus:
        parse_message(data)


def run_parse_touch(corpus):
    for data in corpus:
        touch(parse_message(data))


def run_parse_validate(corpus):
    for data in corpus:
        msg = parse_message(data)
        check_message(msg)
        touch(msg)


def make_serialise(corpus):
    parsed = [parse_message(data) for data in corpus]

    def run_serialise(_corpus):
        for msg in parsed:
            msg.to_bytes()

    return run_serialise


def measure(fn, corpus, seconds: float, repeat: int) -> float:
    """Best messages/second over C{repeat} runs of about C{seconds}."""
    fn(corpus)  # warm caches
    # Calibrate the number of passes over the corpus for one run.
    passes = 1
    while True:
        start = time.process_time()
        for _ in range(passes):
            fn(corpus)
        elapsed = time.process_time() - start
        if elapsed >= 0.05:
            break
        passes *= 2
    passes = max(1, int(passes * seconds / elapsed))
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(passes):
            fn(corpus)
        elapsed = time.process_time() - start
        best = max(best, passes * len(corpus) / elapsed)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept (default 3)")
    parser.add_argument("--corpus", default=os.path.join(HERE, "corpus"), help="directory of *.sip messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    names, corpus = load_corpus(args.corpus)
    for name, data in zip(names, corpus):
        msg = parse_message(data)
        rejection = check_message(msg)
        if rejection is not None:
            raise SystemExit(f"{name}: corpus message refused: {rejection!r}")

    results = {
        "parse": measure(run_parse, corpus, args.seconds, args.repeat),
        "parse+touch": measure(run_parse_touch, corpus, args.seconds, args.repeat),
        "parse+validate+touch": measure(run_parse_validate, corpus, args.seconds, args.repeat),
        "serialise": measure(make_serialise(corpus), corpus, args.seconds, args.repeat),
    }
    info = {
        "python": platform.python_implementation() + " " + platform.python_version(),
        "machine": platform.machine(),
        "messages": len(corpus),
        "mean_bytes": sum(map(len, corpus)) // len(corpus),
    }
    if args.json:
        print(json.dumps({"msgs_per_second": {k: round(v) for k, v in results.items()}, **info}))
    else:
        print(
            f"corpus: {info['messages']} messages, mean {info['mean_bytes']} bytes "
            f"({info['python']}, {info['machine']})"
        )
        for name, rate in results.items():
            print(f"{name:<21} {rate:>10,.0f} msgs/s  {1e6 / rate:7.1f} us/msg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
