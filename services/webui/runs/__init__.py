"""Runs: the server-side owner of an agent's reply, from the agent's stream to every subscriber.

`manager` (the app's RunManager: start, cancel, subscribe, recover, shutdown), `events` (the one
reducer of run events), `bus` (where events travel: this process's memory, or Redis Streams),
`store` (the durable record, written off the serving thread) and `recovery` (runs whose driver
is gone).
"""

from .manager import RunManager, init_runs, run_manager

__all__ = ["RunManager", "init_runs", "run_manager"]
