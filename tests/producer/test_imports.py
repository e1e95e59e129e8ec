from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_importing_dbtbus_and_the_producer_imports_no_dbt_psutil_or_protobuf() -> None:
    code = (
        "import sys, dbtbus, dbtbus.producer; dbtbus.Producer; dbtbus.publish_log; dbtbus.ProducerResult\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dbt', 'psutil', 'google', 'memray')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


_MODULES_AFTER = """
import json, sys
from pathlib import Path
from dbtbus.testing.projects import copy_shop
project = copy_shop(Path(sys.argv[2]))
args = ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
if sys.argv[1] == "bare":
    from dbt.cli.main import dbtRunner
    assert dbtRunner().invoke(args).exception is None  # the shop has a failing model
else:
    from dbtbus.producer import Producer
    assert not Producer("memory://imports", run_id="imports").invoke(args).crashed
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "dbt")))
"""


def test_a_producer_build_loads_no_dbt_module_a_bare_build_does_not(tmp_path: Path) -> None:
    """Each module dbt would not load costs the producer memory: ``dbt.task.retry`` alone is ~2 MiB."""
    loaded = {}
    for how in ("bare", "producer"):
        project = tmp_path / how
        env = {**os.environ, "DBTBUS_DUCKDB_PATH": str(project / "shop.duckdb")}
        out = subprocess.run([sys.executable, "-c", _MODULES_AFTER, how, str(project)], check=True,
                             capture_output=True, text=True, env=env).stdout
        loaded[how] = set(json.loads(out.splitlines()[-1]))
    assert "dbt.task.build" in loaded["bare"]
    assert loaded["producer"] - loaded["bare"] == set()
