"""The live-server harness itself: what its HTTP sessions do with idle keep-alive connections."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests import servers


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn

    def do_GET(self):
        self.server.peers.append(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def keep_alive_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.peers = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_connection_idle_near_the_servers_limit_is_not_reused(keep_alive_server, monkeypatch):
    monkeypatch.setattr(servers, "REUSE_IDLE_SECONDS", 0.3)
    session = requests.Session()
    session.mount("http://", servers.FreshConnectionAdapter())
    url = f"http://127.0.0.1:{keep_alive_server.server_address[1]}/"

    session.get(url)
    session.get(url)  # right after: the same connection
    time.sleep(0.4)
    session.get(url)  # idle past the limit: a new one

    connections = [port for _host, port in keep_alive_server.peers]
    assert connections[0] == connections[1]
    assert connections[2] != connections[1]
