"""Event parsing bench: the CPU the gateway spends on each event an agent sends, layer by layer,
with no sockets and no servers (io_floor.py measures the same layers on real streams).

    .venv/bin/python bench/event_parse.py [--reads 4000]

An agent writes one HTTP chunk per event; under load one read brings several. For reads of 1
and of 15 token events, prints microseconds per event for: the chunked decoding
(transport.ChunkedBody), the SSE parsing (sse.SSEParser), and all of it with each event's JSON
made an AgentEvent (events.NativeTranslator). Best of three rounds. Figures only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.gateway.events import NativeTranslator  # noqa: E402
from services.gateway.sse import SSEParser  # noqa: E402
from services.gateway.transport import ChunkedBody  # noqa: E402


def chunk_of(index: int) -> bytes:
    data = json.dumps({"text": f" word{index}", "at": "2026-12-02T08:00:00.000Z"})
    body = f"event: token\ndata: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(body), body)


def per_event(work, reads: int, events: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(reads):
            work()
        best = min(best, time.perf_counter() - started)
    return best / reads / events * 1e6


def layers(read: bytes, reads: int, events: int) -> tuple[float, float, float]:
    payload = ChunkedBody().feed(read)

    def everything():
        translator = NativeTranslator()
        for message in SSEParser().feed(ChunkedBody().feed(read)):
            translator.translate(message)

    return (
        per_event(lambda: ChunkedBody().feed(read), reads, events),
        per_event(lambda: SSEParser().feed(payload), reads, events),
        per_event(everything, reads, events),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=4000)
    args = parser.parse_args()
    print(f"{'events per read':>16} {'chunked':>9} {'SSE':>9} {'all + JSON':>11}   (us per event)")
    for events in (1, 15):
        figures = layers(b"".join(chunk_of(i) for i in range(events)), args.reads, events)
        print(f"{events:>16} {figures[0]:9.2f} {figures[1]:9.2f} {figures[2]:11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
