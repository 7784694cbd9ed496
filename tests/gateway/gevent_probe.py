"""Run by test_gevent.py in a fresh interpreter: the gateway under gevent monkey-patching.

Prints one JSON object describing what happened; the test makes the assertions.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402

import gevent  # noqa: E402

from services.gateway import load_registry_file, open_task  # noqa: E402
from tests.gateway.helpers import LocalHTTPServer, sse  # noqa: E402


def run_one(agent, index):
    stream = open_task(
        agent,
        task_id=f"gevent-{index}",
        session_id="g",
        model_id="ref-fast",
        messages=[{"role": "user", "content": "hi @@tokens=20 @@delay_ms=20 @@first_token_ms=0"}],
    )
    events = [event for event in stream if event is not None]
    return {"kinds": [event.type for event in events], "done": events[-1].data}


def stalled_then_closed(agent):
    stream = open_task(
        agent,
        task_id="gevent-stall",
        session_id="g",
        model_id="ref-fast",
        messages=[{"role": "user", "content": "x @@first_token_ms=60000"}],
        tick=0.05,
    )
    kinds, ticks, last = [], 0, None
    # Closed while the fifty other streams are still running: only this one may stop.
    gevent.spawn_later(0.1, stream.close)
    for event in stream:
        if event is None:
            ticks += 1
        else:
            kinds.append(event.type)
            last = event.data
    stream._reader.join(timeout=5)
    return {"kinds": kinds, "ticks": ticks, "reader_alive": stream._reader.is_alive(), "done": last}


def burst(agent):
    """A whole reply arriving in one piece: how much was queued when the first token came out."""
    body = b"".join(sse("token", {"text": f"t{i} "}) for i in range(200)) + sse("done", {"status": "complete"})
    with LocalHTTPServer() as server:
        server.stream("/tasks", [body])
        stream = open_task(
            replace(agent, port=server.port),
            task_id="gevent-burst",
            session_id="g",
            model_id="ref-fast",
            messages=[{"role": "user", "content": "x"}],
        )
        queued, tokens = None, 0
        for event in stream:
            if event is not None and event.type == "token":
                if queued is None:
                    queued = stream._queue.qsize()
                tokens += 1
    return {"queued_at_first_token": queued, "tokens": tokens}


def main():
    agent = load_registry_file(sys.argv[1]).get("ref-child")
    jobs = [gevent.spawn(run_one, agent, i) for i in range(50)]
    stall = gevent.spawn(stalled_then_closed, agent)
    burst_job = gevent.spawn(burst, agent)
    gevent.joinall(jobs + [stall, burst_job], timeout=30, raise_error=True)
    print(json.dumps({"streams": [job.value for job in jobs], "stall": stall.value, "burst": burst_job.value}))


if __name__ == "__main__":
    main()
