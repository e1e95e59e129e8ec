"""Records that fit: the producer's maximum record size, and truncating the text that makes a record too big.

A record travels through Redis streams and XCom and is read by every waiter of the run, so it has a
maximum encoded size (``max_record_size``, default 4 MiB — the backends and readers refuse bigger ones).
A dbt message, a compiled query or an adapter response can be larger than that; a node's result must still
reach its waiters, so the producer cuts the longest text fields down (keeping their start and a visible
marker saying how much was cut) until the record fits. A record that cannot be made to fit (a RunStarted
whose graph alone is too big) is returned as ``None`` for the caller to count and log — never dropped
silently; a RunStarted too big for its graph is published without the graph (waiters then know the run
but not its nodes' edges) rather than not at all.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from .events import BatchResult, NodeResult, Record, RunCrashed, RunFinished, RunStarted, encode

DEFAULT_MAX_RECORD_SIZE: Final = 4 * 2**20
#: The smallest maximum that leaves room for a record's fixed fields.
MIN_RECORD_SIZE: Final = 4096
TRUNCATION_MARKER: Final = "… [truncated by dbtbus: {kept} of {total} characters kept]"


def truncate_text(text: str, keep: int) -> str:
    """``text`` cut to about ``keep`` characters, with a marker saying how much is left out."""
    if len(text) <= keep:
        return text
    keep = max(0, keep)
    return text[:keep] + TRUNCATION_MARKER.format(kept=keep, total=len(text))


class RecordFitter:
    """Makes records fit ``max_size`` encoded bytes (see the module's doc)."""

    def __init__(self, max_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        if max_size < MIN_RECORD_SIZE:
            raise ValueError(f"max_record_size must be at least {MIN_RECORD_SIZE} bytes, got {max_size}")
        self.max_size = max_size
        self.truncated = 0

    def fit_encoded(self, record: Record) -> tuple[Record, bytes] | None:
        """The record that fits and its encoded bytes (encoded once on the common path), or ``None``."""
        data = encode(record)
        if len(data) <= self.max_size:
            return record, data
        fitted = self._shrink(record, len(data))
        if fitted is None:
            return None
        self.truncated += 1
        return fitted, encode(fitted)

    def _shrink(self, record: Record, size: int) -> Record | None:
        for _ in range(4):  # each pass frees at least the excess from the longest fields; a few suffice
            excess = size - self.max_size
            changes = _cuts(record, excess, self.max_size)
            if not changes:
                break
            record = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
            size = len(encode(record))
            if size <= self.max_size:
                return record
        if isinstance(record, RunStarted) and record.graph is not None:
            without = dataclasses.replace(record, graph=None)
            if len(encode(without)) <= self.max_size:
                return without
        return None


def _cuts(record: Record, excess: int, max_size: int) -> dict[str, object]:
    """New values for the longest text fields, together about ``excess`` (+ markers) bytes shorter."""
    fields: dict[str, str] = {}
    if isinstance(record, (NodeResult, BatchResult)) and record.message:
        fields["message"] = record.message
    if isinstance(record, NodeResult) and record.compiled_code:
        fields["compiled_code"] = record.compiled_code
    elif isinstance(record, (RunFinished, RunCrashed)) and record.error:
        fields["error"] = record.error
    changes: dict[str, object] = {}
    if isinstance(record, (NodeResult, BatchResult)) and record.adapter_response:
        response = encode_size(record.adapter_response)
        if response > max_size // 4 or not fields:
            # Free-form and adapter-specific: kept whole or replaced by a note, never cut mid-structure.
            changes["adapter_response"] = {"_dbtbus_truncated": f"adapter response of {response} bytes left out"}
            excess -= response
    if excess <= 0:
        return changes
    # JSON escaping can make a character cost up to 6 bytes: cut by bytes, measured on the encoded text.
    by_length = sorted(fields.items(), key=lambda kv: -len(kv[1]))
    for name, text in by_length:
        if excess <= 0:
            break
        encoded = encode_size(text) or 1
        ratio = len(text) / encoded
        cut = int((excess + 200) * ratio) + 1
        changes[name] = truncate_text(text, len(text) - cut)
        if name == "compiled_code":
            changes["compiled_code_truncated"] = True
        excess -= cut
    return changes


def encode_size(value: object) -> int:
    import orjson

    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(str(value))
