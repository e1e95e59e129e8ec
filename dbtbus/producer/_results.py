"""What one invocation did: :class:`ProducerResult`, made by :func:`result_of` from the publisher and the
invocation's ending (every producer, the log replay included)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events import NodeResult
from ._publisher import Ending, Publisher

__all__ = ["ProducerResult", "result_of"]


@dataclass
class ProducerResult:
    """What one invocation did. ``results`` holds each node's terminal record as published.

    ``results`` is a read-only mapping that keeps the records' wire bytes and decodes one on each access
    (a decoded record takes twice the memory, and a 10,000-node run is rarely read whole): hold on to the
    records you use. A record that had to be cut to ``max_record_size`` is there as published, marked.

    ``success`` is True only when dbt succeeded AND the whole run reached the bus (its ending included).
    ``published`` counts the records the backend accepted; ``unpublished`` those it never got (a backend
    that failed past ``flush_timeout``, or a permanent rejection); ``oversized`` those that did not fit
    ``max_record_size`` even truncated; ``rejected`` is the permanent backend error that stopped publishing.
    ``claims_lost`` counts the times the producer found the run's claim gone from the backend (its keys were
    lost: a restart without persistence, a flush, a deletion — records it had published went with them; or
    a Redis Sentinel failover moved the run to a replica that may lack the latest of them);
    each time it claimed the run again and republished the run's start and every terminal record it held
    (``republished`` records), so readers learn every node's outcome; progress records (node starts,
    heartbeats) lost that way are not republished.
    """

    run_id: str
    success: bool
    exit_code: int | None
    crashed: bool
    error: str | None
    counts: dict[str, int]
    elapsed: float
    peak_rss: int | None
    dbt_result: Any = None
    results: Mapping[str, NodeResult] = field(default_factory=dict)
    published: int = 0
    unpublished: int = 0
    oversized: int = 0
    truncated: int = 0
    rejected: BaseException | None = None
    claims_lost: int = 0
    republished: int = 0
    #: ``"invocation"``: ``peak_rss`` is this run's own peak; ``"process"``: the host process's lifetime peak
    #: (in process where the kernel cannot reset the high-water mark).
    peak_rss_scope: str | None = None


def result_of(publisher: Publisher, ending: Ending, dbt_result: Any = None) -> ProducerResult:
    """The summary of one invocation (any producer, the replay included) from its publisher and ending."""
    normaliser = publisher.normaliser
    error = ending.error
    rejected = publisher.rejected
    if rejected is not None:
        note = (f"the bus rejected the run ({type(rejected).__name__}: {rejected}); "
                f"{publisher.published} records published")
        error = f"{error}; {note}" if error else note
    return ProducerResult(
        run_id=normaliser.run_id,
        success=ending.success and not ending.crashed and publisher.ended and rejected is None,
        exit_code=ending.exit_code,
        crashed=ending.crashed,
        error=error,
        counts=normaliser.counts(),
        elapsed=ending.elapsed,
        peak_rss=ending.peak_rss,
        dbt_result=dbt_result,
        results=publisher.results,
        published=publisher.published,
        unpublished=publisher.unpublished,
        oversized=publisher.oversized,
        truncated=publisher.fitter.truncated,
        rejected=rejected,
        claims_lost=publisher.claims_lost,
        republished=publisher.republished,
        peak_rss_scope=ending.peak_rss_scope,
    )
