"""The one driver of every producing command: plans in, records out through the store.

`run`, `max-batch` and `predict` differ only in how a plan becomes a record (`make`); resume, failure
records and writing are the store's (`results.Store.produce`), the same code the matrix uses.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from mbbench import runner
from mbbench.plan import Plan
from mbbench.records import Record
from mbbench.results import Outcome, Store


def produce_all(plans: Iterable[Plan], store: Store, make: Callable[[Plan], Record], force: bool = False
                ) -> Iterator[tuple[Plan, Outcome]]:
    """Yield (plan, outcome) per plan, in order: skipped (a record of its identity exists) or ran.

    A plan whose `make` raises gets a failure record and the next plan still runs; KeyboardInterrupt
    propagates after every finished record is written.
    """
    for plan in plans:
        outcome = store.produce(plan.identity, lambda plan=plan: make(plan),
                                lambda error, plan=plan: runner.failure_record(plan, error), force=force)
        yield plan, outcome
