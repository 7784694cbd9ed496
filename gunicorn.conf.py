"""gunicorn settings for Switchboard (`gunicorn -c gunicorn.conf.py wsgi:app`).

gevent workers: a reply stream is a long-lived response, and with gevent each one costs a
greenlet rather than a thread, so one process holds a thousand of them.
"""

import os
import signal
import sys

# gevent's default resolver runs getaddrinfo in a thread pool, and under a busy hub that thread
# waits for the GIL: measured 16 ms p50 per lookup, even for 127.0.0.1, on every connection to
# an agent. c-ares resolves inside the hub without blocking it (5 µs for an IP literal).
os.environ.setdefault("GEVENT_RESOLVER", "ares")

from services.webui.config import ConfigError, web_workers  # noqa: E402

bind = os.environ.get("BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5050')}"
try:
    workers = web_workers()
except ConfigError as exc:  # one sentence, not a traceback
    sys.stderr.write(f"switchboard: configuration error: {exc}\n")
    raise SystemExit(2) from None
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "2000"))
# Streams are long; this is the worker heartbeat timeout, not a request timeout under gevent.
timeout = 60
# Room for a stopping worker to end its runs (runs/manager.py shutdown) before it is killed.
graceful_timeout = 10
keepalive = 5
# The app logs each request itself with a request id; gunicorn's access log would add a second,
# unredacted line per request.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# The cyclic garbage collector stops the worker, and so every stream on it, while it runs. With
# Python's defaults (a young collection every 700 allocations) and 500 replies streaming, it ran
# 540 times in 20 s for 1.6 s in all, up to 290 ms at once (bench/load.py (a)). Everything loaded
# at boot (the app, its libraries, the tokenizers) is frozen out of its reach, and collections
# come about 14 times less often: 0.45-0.75 s in all. Replies make little cyclic garbage (about
# 130 objects each, from template macros and SQL expressions), so memory is not held for long.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def post_worker_init(worker):
    """Start the worker's run housekeeping. On SIGTERM (or Ctrl-C's SIGINT, or SIGQUIT), end the
    worker's runs first (text kept, agents' tasks stopped), then stop.

    gunicorn's gevent worker would otherwise exit with its runs still live (at once on SIGINT
    and SIGQUIT), leaving them for the next start-up to find.
    """
    manager = getattr(worker.wsgi, "extensions", {}).get("switchboard.runs")
    if manager is None:
        return
    manager.start()  # housekeeping (orphans, heartbeats, stops) runs from the worker's start
    from services.webui.chat.tokens import preload_registry

    preload_registry(worker.wsgi)  # tokenizer files load at boot, not mid-request
    tune_gc()
    stopping = []

    def handle_stop(sig, frame):
        if stopping:
            return
        stopping.append(sig)
        import gevent  # the worker class is gevent's; a signal handler there may not block

        def stop():
            try:
                manager.shutdown()
            finally:
                worker.alive = False

        gevent.spawn(stop)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, handle_stop)
