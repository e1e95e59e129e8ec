from __future__ import annotations

from dbtbus._dbt.versions import at_least, version_tuple


def test_version_tuple_reads_dbts_spellings() -> None:
    assert version_tuple("1.8.0") == (1, 8)
    assert version_tuple("=1.11.16") == (1, 11)  # MainReportVersion's
    assert version_tuple("1.10.0b1") == (1, 10)
    assert version_tuple(None) is None and version_tuple("unknown") is None


def test_an_unknown_version_counts_as_the_newest() -> None:
    assert at_least("1.10.0", (1, 10)) and at_least("1.11.2", (1, 10))
    assert not at_least("1.9.10", (1, 10)) and not at_least("1.8.0", (1, 10))
    assert at_least(None, (1, 10)) and at_least("unknown", (1, 10))
