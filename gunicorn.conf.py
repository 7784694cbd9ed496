"""gunicorn settings for Switchboard (`gunicorn -c gunicorn.conf.py wsgi:app`).

gevent workers: a reply stream is a long-lived response, and with gevent each one costs a
greenlet rather than a thread, so one process holds a thousand of them.
"""
import os

# gevent's default resolver runs getaddrinfo in a thread pool, and under a busy hub that thread
# waits for the GIL: measured 16 ms p50 per lookup, even for 127.0.0.1, on every connection to
# an agent. c-ares resolves inside the hub without blocking it (5 µs for an IP literal).
os.environ.setdefault("GEVENT_RESOLVER", "ares")

bind = os.environ.get("BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5050')}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "2000"))
# Streams are long; this is the worker heartbeat timeout, not a request timeout under gevent.
timeout = 60
graceful_timeout = 5
keepalive = 5
# The app logs each request itself with a request id; gunicorn's access log would add a second,
# unredacted line per request.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
