"""Each node's terminal record as the producer published it, kept as its wire bytes.

A decoded ``NodeResult`` with its timing phases, datetimes and adapter response takes ~1.3 KB; its encoding
~630 B, and on ``memory://`` the very bytes object the run's log holds, so keeping it costs nothing more.
A 10,000-node run's summary (:attr:`ProducerResult.results`) is then a few MiB at most, decoded only for
the nodes someone looks at.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import cast

from ..events import NodeResult, decode

__all__ = ["TerminalRecords"]


class TerminalRecords(Mapping[str, NodeResult]):
    """``unique_id`` → the node's terminal record, decoded on each access (hold on to what you use)."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[str, bytes | NodeResult] = {}

    def keep(self, record: NodeResult, data: bytes | None) -> None:
        """Keep ``record`` as ``data`` (its encoding), or as itself where it has none (it was never published)."""
        self._kept[record.unique_id] = record if data is None else data

    def __getitem__(self, unique_id: str) -> NodeResult:
        kept = self._kept[unique_id]
        return kept if isinstance(kept, NodeResult) else cast(NodeResult, decode(kept))

    def data(self, unique_id: str) -> bytes | None:
        """The wire bytes ``unique_id``'s record was published as (``None``: it never fit, never published)."""
        kept = self._kept[unique_id]
        return None if isinstance(kept, NodeResult) else kept

    def __contains__(self, unique_id: object) -> bool:
        return unique_id in self._kept

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)

    def __repr__(self) -> str:
        return f"<TerminalRecords of {len(self._kept)} nodes>"
