"""The ingest's watch loop (streaming.ingest.run_ingest) around its queries, with stand-in query objects: the loop's
own control flow, no Spark."""

from __future__ import annotations

from jobrec.streaming.ingest import run_ingest


class _Query:
    """What run_ingest asks of a StreamingQuery."""

    def __init__(self) -> None:
        self.isActive = True
        self.lastProgress = None
        self.id = id(self)
        self.waits = 0

    def exception(self) -> None:
        return None

    def awaitTermination(self, timeout: float) -> bool:  # noqa: N802 - the StreamingQuery method's name
        self.waits += 1
        return not self.isActive

    def stop(self) -> None:
        self.isActive = False


def test_queries_that_end_while_the_loop_folds_end_the_run() -> None:
    # an --once run whose last query finishes during the fold between two waits: the loop must see that they
    # ended, not look for a running one to wait on (it raised StopIteration)
    queries = [_Query(), _Query()]
    calls = []

    def between() -> None:
        calls.append(1)
        if len(calls) == 2:
            for q in queries:
                q.isActive = False

    run_ingest(lambda: queries, backoff_seconds=0, between=between)
    assert len(calls) == 2
    assert queries[0].waits == 1  # waited once, after the first fold; not after the second


def test_between_runs_at_every_turn_until_stopped() -> None:
    queries = [_Query()]
    calls = []
    run_ingest(lambda: queries, backoff_seconds=0, should_stop=lambda: len(calls) >= 3, between=lambda: calls.append(1))
    assert len(calls) == 3 and not queries[0].isActive  # stopped by the loop when asked to
