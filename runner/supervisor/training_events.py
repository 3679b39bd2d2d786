"""A training job's timeline: rank 0's reports become the workload's events, once per report line
(the driver calls its listeners as it stores new log lines, which it does once per line across
restarts). The messages themselves are ``runner.core.training.timeline_messages`` (pure)."""

from __future__ import annotations

import logging
from typing import Any

from runner.core.events import EventKind
from runner.core.training import timeline_messages
from runner.store import Replica, Store, Workload

log = logging.getLogger("runner.training")


class TrainingEvents:
    """A report listener of the replica driver that writes training events."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, w: Workload, rep: Replica, reports: dict[str, dict[str, Any]]) -> None:
        if w.kind != "training" or rep.index != 0:
            return
        for message in timeline_messages(rep, reports):
            self.store.add_event(w.id, w.state, message, kind=EventKind.TRAINING)
            log.info("%s: %s", w.id, message)
