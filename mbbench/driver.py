"""The one driver of every producing command: jobs in, records out through the store.

`run`, `max-batch`, `predict` and `compare` differ only in how a job makes its record; resume, failure
records and writing are the store's (`results.Store.produce`), the same code the matrix uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

from mbbench.plan import Plan, failure_record
from mbbench.records import Identity, Record
from mbbench.results import Outcome, Store


@dataclass(frozen=True)
class Job:
    """One configuration to produce: its identity (for resume), how to make its record, how to record a failure."""

    label: str
    identity: Identity
    make: Callable[[], Record]
    fail: Callable[[Exception], Record]


def job(plan: Plan, make: Callable[[Plan], Record], identity: Identity | None = None) -> Job:
    """The job of one plan; `identity` overrides the plan's (a comparison's record spans several plans)."""
    identity = identity or plan.identity

    def fail(error: Exception) -> Record:
        return replace(failure_record(plan, error), identity=identity)

    return Job(plan.label if identity is plan.identity else f"{' vs '.join(identity.models)} / {identity.suite}",
               identity, lambda: make(plan), fail)


def produce_all(jobs: Iterable[Job], store: Store, force: bool = False) -> Iterator[tuple[Job, Outcome]]:
    """Yield (job, outcome) per job, in order: skipped (a record of its identity exists) or ran.

    A job whose `make` raises gets a failure record and the next job still runs; KeyboardInterrupt
    propagates after every finished record is written.
    """
    for item in jobs:
        yield item, store.produce(item.identity.key(), item.make, item.fail, force=force)
