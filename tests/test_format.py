"""What dbtbus writes for people: sizes, counts, and URLs that never carry a secret."""

from __future__ import annotations

import pytest

from dbtbus._format import format_bytes, format_counts, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@db.example:6379/0", "redis://:***@db.example:6379/0"),
        ("redis://alice:s3cret@db.example/2?prefix=acme:", "redis://alice:***@db.example/2?prefix=acme:"),
        ("rediss://u:p%40ss%2Fw@[::1]:6380/0", "rediss://u:***@[::1]:6380/0"),
        ("redis://h:6379/0?password=s3cret&prefix=x", "redis://h:6379/0?password=***&prefix=x"),
        ("redis://h/0?PASSWORD=s3cret", "redis://h/0?PASSWORD=***"),
        ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("redis://u:s3cret@h:notaport/0", "redis://u:***@h:notaport/0"),  # does not parse: still no secret
        # a cluster's seed list has no one port: its query's password is masked all the same
        ("redis://:s3cret@a:7000,b:7001/0?cluster=true&password=s3cret",
         "redis://:***@a:7000,b:7001/0?cluster=true&password=***"),
        ("xcom://?poll=0.2", "xcom://?poll=0.2"),
        ("memory://", "memory://"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "p%40ss" not in redact_url(url)


def test_sizes_and_counts() -> None:
    assert [format_bytes(v) for v in (None, 512, 2048, 5 * 2**20, 3 * 2**30)] == [
        "-", "512 B", "2 KiB", "5.0 MiB", "3.0 GiB"]
    assert format_counts({"success": 3, "error": 1, "skipped": 3}) == "3 skipped, 3 success, 1 error"
    assert format_counts({}) == "none"
