"""The one table of deprecated names (dbtbus/_deprecated.py): each old name warns and is its new name."""

from __future__ import annotations

import importlib

import pytest

from dbtbus._deprecated import RENAMED


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_name_warns_and_is_its_new_name(old: str) -> None:
    old_module, _, old_name = old.rpartition(".")
    new_module, _, new_name = RENAMED[old].rpartition(".")
    module = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: use {RENAMED[old]}"):
        value = getattr(module, old_name)
    assert value is getattr(importlib.import_module(new_module), new_name)
    assert old_name not in module.__all__ and old_name not in dir(module)


@pytest.mark.parametrize("module", ["dbtbus", "dbtbus.report", "dbtbus.export"])
def test_a_name_that_never_was_is_an_attribute_error(module: str) -> None:
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        _ = importlib.import_module(module).nonesuch


def test_each_twin_is_plain_when_blocking_and_a_prefixed_when_a_coroutine() -> None:
    import inspect

    import dbtbus.export
    import dbtbus.report

    for module, blocking in ((dbtbus.report, "report"), (dbtbus.export, "export_run_results")):
        assert not inspect.iscoroutinefunction(getattr(module, blocking))
        assert inspect.iscoroutinefunction(getattr(module, "a" + blocking))


def test_the_api_reference_lists_every_old_name() -> None:
    from pathlib import Path

    reference = (Path(__file__).parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    for old, new in RENAMED.items():
        assert f"| `{old}` | `{new}`" in reference, old
