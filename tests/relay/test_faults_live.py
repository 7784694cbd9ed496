"""Faults from outside, against real processes: workers SIGKILLed mid-reply, SQLite's write lock
held by another process. What a client was shown must equal what is stored, event ids must only
increase for it, and no run may outlive its driver."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests
import sseclient

from ..redis_server import redis_server, start_redis, stop_redis
from ..servers import ApiSession, LiveStack
from .test_relay_live import agent_task, db_row, open_stream, send, wait_for

pytestmark = pytest.mark.slow


class Client:
    """An API client holding what it was shown: text (with `done.content` replacing it), ids."""

    def __init__(self, api, url):
        self.api, self.url = api, url
        self.text, self.ids, self.done = "", [], None

    def follow(self, base=None, tokens=None, until_done=True):
        """Read until `done` (or until `tokens` more tokens), reconnecting with Last-Event-ID."""
        seen = 0
        while True:
            try:
                response = open_stream(self.api, self.url, self.ids[-1] if self.ids else None, base)
                for event in sseclient.SSEClient(response).events():
                    self.ids.append(int(event.id))
                    data = json.loads(event.data)
                    if event.event == "token":
                        self.text += data["text"]
                        seen += 1
                    elif event.event == "snapshot":
                        self.text = data["text"]
                    elif event.event == "done":
                        self.done = data
                        if "content" in data:
                            self.text = data["content"]
                        return
                    if tokens is not None and seen >= tokens:
                        response.close()
                        return
            except (requests.RequestException, AssertionError):
                if not until_done:
                    return
                time.sleep(0.2)  # the server is restarting: reconnect as a browser would


def worker_pids(server: subprocess.Popen) -> list[int]:
    return [child.pid for child in psutil.Process(server.pid).children()]


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory):
    """The shipped defaults (one gevent worker, events in its memory), with a small reply cap."""
    with LiveStack(tmp_path_factory.mktemp("faults"), env_overrides={"MAX_REPLY_CHARS": "5000"}) as stack:
        yield stack


def test_a_killed_worker_leaves_the_client_with_exactly_the_stored_reply(default_stack):
    api = default_stack.login()
    sent = send(api, "Report @@tokens=400 @@delay_ms=15")
    client = Client(api, sent["stream_url"])
    client.follow(tokens=60)
    for pid in worker_pids(default_stack.servers[0]):
        os.kill(pid, signal.SIGKILL)  # every worker, mid-reply; gunicorn starts a new one
    client.follow()
    row = wait_for(lambda: (r := db_row(default_stack, sent["message_id"])) and r["status"] == "interrupted" and r)
    assert client.done["status"] == "interrupted"
    assert client.text == row["content"]  # what the client holds is what is stored
    assert client.ids == sorted(client.ids) and len(set(client.ids)) == len(client.ids)
    # Recovery stopped the agent's task: the work does not go on unseen.
    task = wait_for(
        lambda: (t := agent_task(default_stack, "dir-code", sent["message_id"]))["status"] == "cancelled" and t
    )
    assert task["tokens_sent"] < 400


def test_sends_get_503_and_streams_keep_flowing_while_another_process_holds_the_write_lock(default_stack):
    api = default_stack.login()
    sent = send(api, "Steady @@tokens=200 @@delay_ms=20")
    client = Client(api, sent["stream_url"])
    client.follow(tokens=10)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(default_stack.db_path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(7); c.execute('ROLLBACK')",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    during = []

    def read_during_lock():
        response = open_stream(api, sent["stream_url"], client.ids[-1])
        started = time.monotonic()
        for event in sseclient.SSEClient(response).events():
            if event.event == "token" and holder.poll() is None:
                during.append(time.monotonic() - started)
            if event.event == "done" or holder.poll() is not None:
                break
        response.close()

    reader = threading.Thread(target=read_during_lock)
    reader.start()
    other = requests.Session()
    other.cookies.update(api.cookies)
    other.headers.update(api.headers)
    refused = other.post(
        f"{default_stack.base_url}/api/chat/message",
        json={"agent_id": "architect", "content": "Sent while locked"},
        timeout=30,
    )
    health = other.get(f"{default_stack.base_url}/healthz", timeout=10)  # details for a logged-in user
    holder_still_locked = holder.poll() is None
    reader.join(30)
    holder.wait(10)
    assert holder_still_locked
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert "nothing was saved" in refused.json()["message"]
    assert health.status_code == 503 and health.json()["database"] != "ok"
    assert len(during) >= 20, "tokens must keep flowing from memory while the database is locked"
    client.follow()
    row = wait_for(lambda: (r := db_row(default_stack, sent["message_id"])) and r["status"] == "complete" and r)
    assert client.text == row["content"] and client.done["status"] == "complete"
    with sqlite3.connect(default_stack.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE content = 'Sent while locked'").fetchone()[0] == 0


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    with redis_server() as redis_url:
        stack = LiveStack(
            tmp_path_factory.mktemp("faults-redis"), redis_url=redis_url, env_overrides={"RUN_STALE_SECONDS": "3"}
        )
        with stack:
            stack.other_url = stack.start_extra_server()
            yield stack


def redis_process(redis_url: str) -> psutil.Process:
    port = ":" + redis_url.rsplit(":", 1)[1].split("/")[0]
    # redis-server retitles itself "redis-server 127.0.0.1:<port>"
    return next(
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "redis-server" and port in " ".join(p.info["cmdline"] or [])
    )


def test_a_redis_that_stalls_mid_reply_loses_nothing_and_the_reply_goes_on(two_hosts):
    """Redis stops answering for longer than its socket timeout while a reply streams: the reply
    goes on and is stored, its events wait in the driver, and the client on the other host keeps
    its stream (heartbeats) and then gets every event, in order, with nothing lost."""
    api = two_hosts.login()
    sent = send(api, "Through a stall @@tokens=120 @@delay_ms=100")  # driven by host A
    client = Client(api, sent["stream_url"])
    client.follow(base=two_hosts.other_url, tokens=5)  # watched on host B
    redis = redis_process(two_hosts.redis_url)
    redis.suspend()  # SIGSTOP: connections stay open, nothing answers
    try:
        time.sleep(6.5)  # past the 5 s socket timeout of every Redis command
    finally:
        redis.resume()
    client.follow(base=two_hosts.other_url)
    assert client.done["status"] == "complete"
    row = wait_for(lambda: (r := db_row(two_hosts, sent["message_id"])) and r["status"] == "complete" and r)
    task = agent_task(two_hosts, "dir-code", sent["message_id"])
    assert client.text == row["content"] and task["tokens_sent"] == 120 and len(row["content"]) == task["chars_sent"]
    assert client.ids == list(range(1, len(client.ids) + 1))  # every event once, in order
    assert "holds its events: the event bus does not answer" in two_hosts.server_log()


def test_a_dead_host_s_run_is_ended_by_another_host_with_every_token_kept(two_hosts):
    api = two_hosts.login()
    sent = send(api, "Long survey @@tokens=600 @@delay_ms=15")  # driven by host A
    client = Client(api, sent["stream_url"])
    client.follow(base=two_hosts.other_url, tokens=50)  # watched on host B
    host_a = two_hosts.servers[0]
    for pid in [host_a.pid, *worker_pids(host_a)]:
        os.kill(pid, signal.SIGKILL)  # host A is gone, master and all
    # Nobody subscribes now: host B's housekeeping must end it on its own.
    row = wait_for(
        lambda: (r := db_row(two_hosts, sent["message_id"])) and r["status"] == "interrupted" and r, timeout=15
    )
    client.follow(base=two_hosts.other_url)
    assert client.done["status"] == "interrupted"
    assert client.text == row["content"] and len(row["content"]) > 0
    assert "content" not in client.done  # Redis had every event: the stored text is all of them
    assert client.ids == sorted(set(client.ids))  # only ever increasing, never repeated


def test_a_reply_past_the_length_cap_is_stopped_with_its_text_kept(default_stack):
    api = default_stack.login()
    sent = send(api, "Ramble @@tokens=5000 @@delay_ms=1")
    client = Client(api, sent["stream_url"])
    client.follow()
    assert client.done["status"] == "error" and "5,000 characters" in client.done["error"]
    row = wait_for(lambda: (r := db_row(default_stack, sent["message_id"])) and r["status"] == "error" and r)
    assert 5000 < len(row["content"]) < 6000 and row["content"] == client.text
    task = wait_for(
        lambda: (t := agent_task(default_stack, "dir-code", sent["message_id"]))["status"] == "cancelled" and t
    )
    assert task["tokens_sent"] < 5000


def test_a_redis_restarted_empty_mid_reply_leaves_every_client_with_the_stored_text(two_hosts, tmp_path):
    """Redis dies mid-reply and comes back empty (no persistence). The run holds its events
    meanwhile, then publishes them into the new, empty log: a client may lack the events the old
    log had, so `done` carries the stored text. The client that watched throughout and one that
    joins after the end both hold exactly the stored reply. (Host A is gone: the test before
    killed it, so host B drives and serves.)"""
    api = ApiSession(two_hosts.other_url, two_hosts.username, two_hosts.password)
    sent = send(api, "Through a restart @@tokens=150 @@delay_ms=60")
    client = Client(api, sent["stream_url"])
    client.follow(tokens=5)
    old = redis_process(two_hosts.redis_url)
    port = int(two_hosts.redis_url.rsplit(":", 1)[1].split("/")[0])
    old.kill()
    old.wait(5)
    time.sleep(1.5)  # the run's publishes fail meanwhile
    restarted = start_redis(port, str(tmp_path))
    try:
        client.follow()
        row = wait_for(lambda: (r := db_row(two_hosts, sent["message_id"])) and r["status"] == "complete" and r)
        assert client.done["status"] == "complete" and client.done["content"] == row["content"]
        assert client.text == row["content"] and client.ids == sorted(set(client.ids))
        late = Client(api, sent["stream_url"])
        late.follow()
        assert late.text == row["content"] and late.done["status"] == "complete"
        assert agent_task(two_hosts, "dir-code", sent["message_id"])["tokens_sent"] == 150
    finally:
        stop_redis(restarted)
