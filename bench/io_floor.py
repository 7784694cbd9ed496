"""I/O floor bench: the CPU one gevent process spends to receive agents' streams, before any
run, bus, store or page is involved, and which layer of the gateway costs what.

    .venv/bin/python bench/io_floor.py [--streams 500] [--tokens 150] [--delay-ms 33] [--spread 5]

Starts one reference agent and opens --streams replies on it (by default bench/load.py (a)'s
load: 500 x 150 tokens at 33 ms, ~15,000 tokens/s in all, started over 5 s), read four ways in
this one gevent process, one after the other:
  - raw:        plain gevent sockets, one recv() per wake-up, bytes only;
  - + parse:    the same, with the gateway's chunked decoding, SSE parsing and the JSON of each
                event (transport.ChunkedBody, sse.SSEParser, events.NativeTranslator);
  - + hand-off: raw, with each read handed to a second greenlet through a queue, as the gateway's
                reader hands its reads to the run's driver;
  - gateway:    services/gateway's TaskStream, as a run's driver reads its agent (urllib3 and
                http.client for the request, then the consumer's own reads of the socket, the
                parsing and the stream's bookkeeping: gateway/body.DirectBody);
and prints this process's CPU (user + system) per event and per socket read, and the share of
one core it took. Whatever a worker does on top (runs, bus, page streams, sends) comes after
this. Figures only: nothing here asserts.
"""

from __future__ import annotations

import os

os.environ.setdefault("GEVENT_RESOLVER", "ares")

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load_line, raise_fd_limit  # noqa: E402

from services.agents.fleet import Fleet  # noqa: E402
from services.gateway.client import open_task  # noqa: E402
from services.gateway.events import NativeTranslator  # noqa: E402
from services.gateway.registry import load_registry_file  # noqa: E402
from services.gateway.sse import SSEParser  # noqa: E402
from services.gateway.transport import ChunkedBody  # noqa: E402
from tests.support import free_port, write_registry  # noqa: E402

AGENT = "dir-code"
MODEL = "ref-fast"


def agent_socket(port: int, content: str, task_id: str) -> socket.socket:
    """A connection to the agent with a native task request sent on it (HTTP/1.1, by hand)."""
    body = json.dumps(
        {"task_id": task_id, "session_id": "bench", "model": MODEL, "messages": [{"role": "user", "content": content}]}
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(120)  # as the gateway reads: with an idle timeout
    sock.sendall(
        b"POST /tasks HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Accept: text/event-stream\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    return sock


def raw_reader(
    port: int, content: str, index: int, delay_before: float, counts: dict, handed: queue.Queue | None = None
) -> None:
    """Bytes only; with `handed`, each read is put there for another greenlet."""
    gevent.sleep(delay_before)
    task_id = f"{'hand' if handed is not None else 'raw'}-{index}"  # an agent refuses a task id twice
    with agent_socket(port, content, task_id) as sock:
        while True:
            data = sock.recv(65536)
            counts["reads"] += 1
            counts["events"] += data.count(b"\n\n")
            if handed is not None:
                handed.put(data)
                time.sleep(0)  # as the gateway's reader does: the consumer takes each read at once
            if not data or b"event: done" in data:
                return


def parsing_reader(port: int, content: str, index: int, delay_before: float, counts: dict) -> None:
    gevent.sleep(delay_before)
    body, parser, translator = ChunkedBody(), SSEParser(), NativeTranslator()
    head = b""
    with agent_socket(port, content, f"parse-{index}") as sock:
        while True:
            data = sock.recv(65536)
            counts["reads"] += 1
            if not data:
                return
            if head is not None:  # the response's head, up to its blank line
                head += data
                if b"\r\n\r\n" not in head:
                    continue
                head, data = None, head.split(b"\r\n\r\n", 1)[1]
            for message in parser.feed(body.feed(data)):
                for event in translator.translate(message):
                    counts["events"] += 1
                    if event.type == "done":
                        return


def handing_reader(port: int, content: str, index: int, delay_before: float, counts: dict) -> None:
    handed = queue.Queue()

    def consume():
        while handed.get() is not None:
            pass

    consumer = gevent.spawn(consume)
    try:
        raw_reader(port, content, index, delay_before, counts, handed)
    finally:
        handed.put(None)
        consumer.join()


def gateway_reader(agent, content: str, delay_before: float, counts: dict) -> None:
    gevent.sleep(delay_before)
    stream = open_task(agent, session_id="bench", model_id=MODEL, messages=[{"role": "user", "content": content}])
    for event in stream:
        if event is None:
            continue
        counts["events"] += 1
        if not stream.batch_pending:
            counts["reads"] += 1  # the events one read brought are handed over together
        if event.type == "done":
            return


def measure(label: str, spawn, streams: int, spread: float) -> dict:
    counts = {"events": 0, "reads": 0}
    cpu0, wall0 = os.times(), time.perf_counter()
    gevent.joinall([spawn(index, spread * index / streams, counts) for index in range(streams)])
    cpu1, wall = os.times(), time.perf_counter() - wall0
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "path": label,
        "wall s": f"{wall:.1f}",
        "CPU s": f"{cpu:.2f}",
        "share of a core": f"{100 * cpu / wall:.0f} %",
        "events": str(counts["events"]),
        "socket reads": str(counts["reads"]),
        "CPU per event (us)": f"{1e6 * cpu / max(counts['events'], 1):.1f}",
        "CPU per read (us)": f"{1e6 * cpu / max(counts['reads'], 1):.1f}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=150)
    parser.add_argument("--delay-ms", type=float, default=33.0)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which the streams start")
    args = parser.parse_args()
    print(f"client file limit: {raise_fd_limit()}")
    print(load_line("start"))
    content = f"Floor @@tokens={args.tokens} @@delay_ms={args.delay_ms:g} @@first_token_ms=0"
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        registry = write_registry(Path(workdir) / "agents.toml", [{"agent_id": AGENT, "name": "Coder", "port": port}])
        fleet = Fleet(str(registry))
        fleet.start()
        try:
            fleet.wait_healthy(timeout=20)
            agent = load_registry_file(registry).get(AGENT)
            readers = {
                "raw gevent sockets": partial(raw_reader, port, content),
                "+ parse": partial(parsing_reader, port, content),
                "+ hand-off": partial(handing_reader, port, content),
                "gateway TaskStream": lambda _index, delay, counts: gateway_reader(agent, content, delay, counts),
            }
            columns = [
                measure(label, lambda i, d, c, reader=reader: gevent.spawn(reader, i, d, c), args.streams, args.spread)
                for label, reader in readers.items()
            ]
        finally:
            fleet.stop()
    print(
        f"\n{args.streams} streams x {args.tokens} tokens at {args.delay_ms:g} ms "
        f"({args.streams * 1000 / args.delay_ms:,.0f} tokens/s in all), started over {args.spread:g} s"
    )
    for key in columns[0]:
        print(f"  {key:20} " + " ".join(f"{c[key]:>20}" for c in columns))
    print("\n" + load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
