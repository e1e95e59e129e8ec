"""The subprocess producer's bootstrap: runs dbt like its CLI does, in dbt's own interpreter.

The subprocess producer runs ``python -c <hook.py, exit_codes.py, test_edges.py and this module, verbatim>
<dbt args...>`` with the interpreter of the ``dbt`` console script (possibly another virtualenv, without
dbtbus), so this module uses only the standard library and the names those modules define. It prints dbt's
selected graph as one JSON log line (``"name": "DbtbusGraph"``) before dbt's own events and dbt's final per-node results
(``"name": "DbtbusResults"``) after them, then exits with dbt's own exit code.
"""

import sys
import threading
from typing import Any

if __name__ != "__main__":  # imported as part of dbtbus; run verbatim, these names are defined above
    from .exit_codes import dbt_exit_code
    from .hook import (
        COMPILED_EVENT,
        GRAPH_EVENT,
        RESULTS_EVENT,
        dbt_elapsed,
        install_graph_hook,
        json_line,
        results_payload,
        vm_hwm,
    )


def bootstrap_main(argv: list[str]) -> int:  # pragma: no cover - runs in the dbt subprocess
    from dbt.cli.main import dbtRunner

    lock = threading.Lock()

    def emit(name: str, data: Any) -> None:
        with lock:
            sys.stdout.write(json_line(name, data))
            sys.stdout.flush()

    restore = install_graph_hook(lambda payload: emit(GRAPH_EVENT, payload), argv,
                                 lambda payload: emit(COMPILED_EVENT, payload))
    try:
        res = dbtRunner().invoke(argv)
    finally:
        restore()
    exception = None if res.exception is None else str(res.exception)
    payload = {
        "results": results_payload(res),
        "success": bool(res.success),
        "exception": exception,
        "elapsed_time": dbt_elapsed(res),
        # Measured here, in dbt's own process: the parent's wait4 rusage would count the parent's memory
        # at fork time too.
        "peak_rss": vm_hwm(),
    }
    emit(RESULTS_EVENT, payload)
    return dbt_exit_code(bool(res.success), res.exception)


if __name__ == "__main__":  # pragma: no cover - the subprocess entry point
    sys.exit(bootstrap_main(sys.argv[1:]))
