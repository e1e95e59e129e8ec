"""The graph hook's copy of dbt's invocation args: what run_results.json writes, never a secret."""

from __future__ import annotations

from typing import Any

import pytest

from dbtbus._dbt import hook
from dbtbus._dbt.hook import REDACTED, redact


def test_secret_looking_vars_are_redacted_at_any_depth() -> None:
    found: list[str] = []
    value = {"region": "eu", "db_password": "s3cr3t!", "nested": {"API_KEY": "k-123", "n": 3, "flag": True},
             "sf": {"private_key_path": "/keys/p8"}, "tokens": ["t-1", "t-2"],
             "url": "postgres://me:pa55word@host:5432/db"}
    assert redact(value, found) == {
        "region": "eu", "db_password": REDACTED, "nested": {"API_KEY": REDACTED, "n": 3, "flag": True},
        "sf": {"private_key_path": REDACTED}, "tokens": [REDACTED, REDACTED],
        "url": f"postgres://me:{REDACTED}@host:5432/db",
    }
    assert set(found) == {"s3cr3t!", "k-123", "/keys/p8", "t-1", "t-2", "pa55word"}


def test_the_invocation_command_loses_the_secrets_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import dbt.flags
    import dbt.utils

    args: dict[str, Any] = {"which": "run", "vars": {"snowflake_token": "abc-def", "n": "ab"},
                            "invocation_command": "dbt run --vars {snowflake_token: abc-def, n: ab}"}
    monkeypatch.setattr(dbt.flags, "get_flags", lambda: object())
    monkeypatch.setattr(dbt.utils, "args_to_dict", lambda flags: dict(args))
    payload = hook.invocation_payload()
    assert payload["dbt_args"]["vars"] == {"snowflake_token": REDACTED, "n": "ab"}
    assert payload["dbt_args"]["invocation_command"] == f"dbt run --vars {{snowflake_token: {REDACTED}, n: ab}}"
    # dbt-common tells the invocation's start from the releases that go with dbt-core 1.10 (not with 1.8)
    import dbt_common.invocation

    has_it = hasattr(dbt_common.invocation, "get_invocation_started_at")
    assert ("invocation_started_at" in payload) is has_it


def test_no_dbt_flags_no_args(monkeypatch: pytest.MonkeyPatch) -> None:
    import dbt.flags

    def boom() -> None:
        raise RuntimeError("no flags yet")

    monkeypatch.setattr(dbt.flags, "get_flags", boom)
    assert "dbt_args" not in hook.invocation_payload()  # never raises: the graph still goes out
