"""Run one real producer (dbt in this process) for the fault suite; print its result as one JSON line.

    python _produce.py URL RUN_ID HEARTBEAT ATTEMPT -- dbt args...

``DBTBUS_FAULTS_RETENTION`` (seconds) in the environment gives the producer a retention.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    url, run_id, heartbeat, attempt = argv[:4]
    dbt_args = argv[5:] if len(argv) > 4 and argv[4] == "--" else argv[4:]
    from dbtbus.producer import Producer

    # The test's environment may ask for a retention (seconds): an abandoned run's keys must expire by it.
    retention = os.environ.get("DBTBUS_FAULTS_RETENTION")
    producer = Producer(
        url, run_id, heartbeat_interval=float(heartbeat), attempt=int(attempt), grace=0.5,
        retention=float(retention) if retention else None,
    )
    try:
        result = producer.invoke(dbt_args)
    except Exception as exc:  # the report says how it failed; the test decides whether that is right
        print(json.dumps({"exception": type(exc).__name__, "error": str(exc)}), flush=True)
        return 3
    report = {
        "success": result.success,
        "crashed": result.crashed,
        "exit_code": result.exit_code,
        "error": result.error,
        "counts": result.counts,
        "published": getattr(result, "published", None),
        "claims_lost": getattr(result, "claims_lost", None),
        "republished": getattr(result, "republished", None),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
