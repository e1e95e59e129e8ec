from __future__ import annotations

import subprocess
import sys


def test_importing_dbtbus_and_the_producer_imports_no_dbt_psutil_or_protobuf() -> None:
    code = (
        "import sys, dbtbus, dbtbus.producer; dbtbus.Producer; dbtbus.publish_log; dbtbus.ProducerResult\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dbt', 'psutil', 'google', 'memray')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
