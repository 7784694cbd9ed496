"""The run engine's parts on their own: the one reducer, the memory bus's bounded log, the store's
coalescing and retries, incremental block splitting."""

from __future__ import annotations

import threading
import time

import pytest

from services.webui.markdown import GrowingText, render_markdown
from services.webui.runs.bus import ENDED_GRACE_SECONDS, MemoryBus
from services.webui.runs.events import ReplyState, StreamEvent
from services.webui.runs.store import Flush, RunStore


def tokens(texts, start=1):
    return [StreamEvent(seq, "token", {"text": text}) for seq, text in enumerate(texts, start=start)]


def reduce(events) -> ReplyState:
    state = ReplyState()
    for event in events:
        state.apply(event)
    return state


def test_the_reducer_builds_text_status_usage_and_end():
    state = reduce(
        [
            StreamEvent(1, "status_update", {"status": "planning"}),
            *tokens(["Hel", "lo"], start=2),
            StreamEvent(4, "status_update", {"status": "awaiting_approval"}),
            StreamEvent(5, "status_update", {"status": "no-such-status"}),
            StreamEvent(6, "usage", {"total_tokens": 7}),
            StreamEvent(7, "done", {"status": "complete"}),
        ]
    )
    assert (state.text, state.status, state.usage, state.seq, state.done) == (
        "Hello",
        "complete",
        {"total_tokens": 7},
        7,
        True,
    )
    assert reduce([StreamEvent(1, "done", {"status": "exploded"})]).status == "error"
    # Stored text replaces what a client assembled, and a snapshot replaces the text so far.
    assert (
        reduce([*tokens(["a", "b"]), StreamEvent(9, "done", {"status": "interrupted", "content": "ab and more"})]).text
        == "ab and more"
    )
    assert (
        reduce([*tokens(["x"]), StreamEvent(5, "snapshot", {"text": "whole", "status": "executing"})]).status
        == "executing"
    )
    late = reduce(
        [StreamEvent(1, "done", {"status": "complete"}), StreamEvent(2, "status_update", {"status": "planning"})]
    )
    assert late.status == "complete"  # nothing reopens an ended reply


def test_the_memory_bus_keeps_a_bounded_log_and_a_late_reader_gets_a_snapshot():
    bus = MemoryBus(cap=10)
    words = [f"w{i} " for i in range(100)]
    for event in tokens(words):
        bus.publish("r", event)
    kept = bus.events("r")  # a snapshot of the folded events, then the ones kept in full
    assert kept[0].type == "snapshot" and len(kept) <= 11 and kept[-1].seq == 100
    late = bus.read("r", 3, timeout=0)
    assert late[0].type == "snapshot" and late[0].seq < late[1].seq
    assert reduce(late).text == "".join(words)  # the snapshot plus the rest is the whole reply
    recent = bus.read("r", 97, timeout=0)
    assert [event.seq for event in recent] == [98, 99, 100]  # exact events while they are kept
    assert bus.read("r", 100, timeout=0.01) == []  # live and nothing new: an empty wait
    assert bus.read("unknown", 0, timeout=0) is None


def test_the_memory_bus_releases_an_ended_run_after_its_grace():
    bus = MemoryBus()
    bus.publish("r", StreamEvent(1, "done", {"status": "complete"}))
    assert bus.read("r", 1, timeout=0) is None  # past done: the database has the end
    now = time.monotonic()
    assert bus.forget_ended(now=now + 1) == 0 and bus.has_log("r")
    assert bus.forget_ended(now=now + ENDED_GRACE_SECONDS + 1) == 1 and not bus.has_log("r")


def test_the_store_coalesces_pending_states_and_retries_failures(tmp_path, monkeypatch):
    store = RunStore(f"sqlite:///{tmp_path / 'unused.db'}")
    written = []
    failures = [RuntimeError("database is locked")]

    def write(flushes):
        if failures:
            raise failures.pop()
        written.append([(f.run_id, f.content, f.final) for f in flushes])
        return set()

    monkeypatch.setattr(store, "write", write)
    flush = lambda content, final=False: Flush("r", "s", content, "streaming", None, None, 10, final)  # noqa: E731
    store.submit(flush("a"))
    end = store.submit(flush("ab", final=True))
    store.submit(flush("abc"))  # a later partial state never replaces a pending end
    assert store.pump(now=0.0) == 0 and not store.healthy and store.last_error == "database is locked"
    assert store.pump(now=0.01) == 0  # backing off
    assert store.pump(now=10.0) == 1 and store.healthy
    assert written == [[("r", "ab", True)]] and end.stored.is_set()
    store.close()


def slow_first_write(tmp_path, monkeypatch):
    """A store whose first write waits for `release`; `writes` lists the run ids of each write."""
    store = RunStore(f"sqlite:///{tmp_path / 'unused.db'}")
    writes, release = [], threading.Event()

    def write(flushes):
        writes.append(sorted(f.run_id for f in flushes))
        if len(writes) == 1:
            release.wait(10)
        return set()

    monkeypatch.setattr(store, "write", write)
    return store, writes, release


def end(run_id: str) -> Flush:
    return Flush(run_id, "s", "text", "complete", None, None, 1, final=True)


def test_runs_ending_during_a_write_are_stored_together_by_the_next_one(tmp_path, monkeypatch):
    """Each run that ends pumps the store at once. Those that come while a write is in progress
    wait for it and are then stored by one more write, not one write each."""
    store, writes, release = slow_first_write(tmp_path, monkeypatch)
    first = store.submit(end("r0"))
    pumps = [threading.Thread(target=store.pump, kwargs={"stored": first.stored})]
    pumps[0].start()
    while not writes:
        time.sleep(0.01)
    for index in range(1, 6):  # as each driver does: submit its end, then pump
        flush = store.submit(end(f"r{index}"))
        pumps.append(threading.Thread(target=store.pump, kwargs={"stored": flush.stored}))
        pumps[-1].start()
    time.sleep(0.1)  # they all wait on the write in progress
    release.set()
    for pump in pumps:
        pump.join(10)
    assert not any(pump.is_alive() for pump in pumps)
    assert writes == [["r0"], ["r1", "r2", "r3", "r4", "r5"]]
    store.close()


def test_the_periodic_pump_does_not_queue_behind_a_write_in_progress(tmp_path, monkeypatch):
    """The housekeeping loop pumps with wait=False: it also keeps the runs' heartbeats and picks
    up stops, and waiting its turn at the writer behind ending runs held all of that for seconds."""
    store, writes, release = slow_first_write(tmp_path, monkeypatch)
    store.submit(end("r0"))
    writing = threading.Thread(target=store.pump)
    writing.start()
    while not writes:
        time.sleep(0.01)
    later = store.submit(end("r1"))
    try:
        assert store.pump(wait=False) == 0  # returns while the first write still runs
        assert writing.is_alive() and not later.stored.is_set()
    finally:
        release.set()
        writing.join(10)
    assert store.pump(wait=False) == 1 and later.stored.is_set()  # the next pump stores it
    assert writes == [["r0"], ["r1"]]
    store.close()


@pytest.mark.parametrize(
    "text",
    [
        "# Title\n\nIntro with **bold**.\n\n- one\n- two\n\n```python\nprint('x')\n```\n\nClosing words",
        "para\r\n\r\n> quote\r\n> more\r\n\r\n| a | b |\n|---|---|\n| 1 | 2 |\n\nend",
        "1. first\n2. second\n\n   continued item\n\nafter the list\n\n---\n\nlast",
    ],
)
def test_streaming_blocks_rendered_one_by_one_add_up_to_the_whole_render(text):
    html, committed = "", 0
    for end in range(1, len(text) + 1):  # the text grows one character at a time
        rest = GrowingText(text[committed:end])
        if rest.finished:
            html += rest.finished_html()
            committed += rest.finished
    html += GrowingText(text[committed:]).tail_html()
    assert committed > 0
    assert html == render_markdown(text)


def test_a_subscriber_finds_in_the_database_an_end_the_bus_never_got(app_config):
    """The run's events reached the bus, its end was stored, but its `done` never came (the bus
    did not answer as the run ended): after RUN_STALE_SECONDS of quiet the subscriber reads the
    stored end, with the stored text, instead of waiting for ever."""
    from sqlalchemy import update

    from services.webui import create_app
    from services.webui.auth import create_user
    from services.webui.extensions import db
    from services.webui.models import Message, Run, utcnow
    from services.webui.runs import run_manager

    from .test_approvals import live_request

    app = create_app({**app_config, "RUN_STALE_SECONDS": 1.0})
    manager = run_manager(app)
    try:
        with app.app_context():
            create_user("dora", "correct horse battery")
        _, reply_id = live_request(app, "dora", status="streaming")
        with app.app_context():  # ended and stored: only the bus never heard of it
            db.session.execute(
                update(Message).where(Message.id == reply_id).values(content="Hello there", status="complete")
            )
            db.session.execute(update(Run).where(Run.message_id == reply_id).values(last_seq=4, ended_at=utcnow()))
            db.session.commit()
        manager.bus.open(reply_id)
        manager.bus.publish_many(reply_id, tokens(["Hello", " there"]))  # seq 1, 2; no done
        started = time.monotonic()
        batches = [b for b in manager.subscribe_batches(reply_id, 2, lambda: 0.1) if b is not None]
        assert 1.0 <= time.monotonic() - started < 5
        done = batches[-1][-1]
        assert done.type == "done" and done.data["status"] == "complete" and done.data["content"] == "Hello there"
        assert all(event.seq > 2 for batch in batches for event in batch)
    finally:
        manager.shutdown(timeout=0.5)


def test_heartbeats_go_on_while_a_slow_write_is_in_progress(app_config, monkeypatch):
    """The housekeeping loop does not take a turn at the writer behind the runs that are ending:
    it did, and with 500 runs ending it waited 6 s, beating nobody (a run looks dead to every
    other worker after RUN_STALE_SECONDS without a beat). Under gevent the beat itself still
    runs on the store's thread after the write in progress; here (no gevent) it runs at once."""
    from sqlalchemy import select, update

    from services.webui import create_app
    from services.webui.auth import create_user
    from services.webui.extensions import db
    from services.webui.fleet import registry
    from services.webui.models import Run, utcnow
    from services.webui.runs import run_manager

    from .test_approvals import live_request

    app = create_app({**app_config, "RUN_STALE_SECONDS": 1.5})  # a beat every 0.5 s
    manager = run_manager(app)
    release = threading.Event()
    writing = None
    try:
        with app.app_context():
            create_user("dora", "correct horse battery")
            agent = registry().get("architect")
        session_id, reply_id = live_request(app, "dora", status="streaming")
        with app.app_context():
            db.session.execute(update(Run).where(Run.message_id == reply_id).values(owner=manager.owner))
            db.session.commit()

        def slow_write(flushes):
            release.wait(10)
            return set()

        monkeypatch.setattr(manager.store, "write", slow_write)
        manager.store.submit(end("another"))
        writing = threading.Thread(target=manager.store.pump)  # another run storing its end
        writing.start()
        time.sleep(0.1)
        manager.prepare(agent, reply_id, session_id, "ref-standard")  # driven here from now on

        def beat_at():
            with app.app_context():
                try:
                    return db.session.scalar(select(Run.beat_at).where(Run.message_id == reply_id))
                finally:
                    db.session.remove()

        first = beat_at()
        deadline = time.monotonic() + 5
        while beat_at() == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert writing.is_alive(), "the slow write ended before the check"
        assert beat_at() > first
        assert beat_at() <= utcnow()
    finally:
        release.set()
        if writing is not None:
            writing.join(10)
        manager.shutdown(timeout=0.5)
