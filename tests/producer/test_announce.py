"""The attempt is announced at once: RunStarted and the lease reach the bus before dbt is even imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ._helpers import DBT

pytestmark = pytest.mark.dbt

SCRIPT = r"""
import json, sys
import anyio
import dbtbus
from dbtbus.backends.mock import MockBackend
from dbtbus.events import decode
from dbtbus.producer import Producer

seen = []

def hook(call):
    if call.method in ("append", "renew_lease"):
        records = [type(decode(i.data)).__name__ for i in call.args[0]] if call.method == "append" else []
        seen.append({"method": call.method, "dbt_imported": "dbt.cli.main" in sys.modules, "records": records})

async def main():
    async with dbtbus.connect(MockBackend(hook=hook)) as bus:
        await Producer(bus, run_id="early", heartbeat_interval=0.2).ainvoke(sys.argv[1:])

anyio.run(main)
print(json.dumps(seen))
"""


def test_run_started_and_the_lease_precede_importing_dbt(tmp_path: Path) -> None:
    from dbtbus.testing.projects import generate_project

    project = generate_project(tmp_path / "p", models=2, tests_per_model=0, threads=1)
    python = str(Path(DBT).with_name(Path(sys.executable).name))
    proc = subprocess.run([python, "-c", SCRIPT, "build", *project.dbt_args()], capture_output=True,
                          text=True, check=True, timeout=300)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    first_lease = next(c for c in seen if c["method"] == "renew_lease")
    first_append = next(c for c in seen if c["method"] == "append")
    assert not first_lease["dbt_imported"] and not first_append["dbt_imported"]
    assert first_append["records"] == ["RunStarted"]
    appends = [c for c in seen if c["method"] == "append"]
    refined = [c for c in appends if "RunStarted" in c["records"]]
    assert len(refined) == 2 and refined[1]["dbt_imported"]  # the second carries dbt's graph
