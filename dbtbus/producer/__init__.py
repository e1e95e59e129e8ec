"""The producer: ONE dbt invocation → a live stream of per-node records on a bus.

* :class:`Producer` — ``invoke`` (dbt in this process through ``dbtRunner`` callbacks), ``ainvoke`` (the
  same from async code) and ``invoke_subprocess`` (dbt in another process, read from its JSON log);
* :func:`publish_log` / :func:`apublish_log` — replay an existing dbt JSON log (a pod log, an exported file).

See ``docs/producer.md``. Nothing here imports dbt, protobuf or psutil until a run needs them.
"""

from __future__ import annotations

from ._producer import Producer
from ._replay import apublish_log, publish_log
from ._results import ProducerResult

__all__ = ["Producer", "ProducerResult", "apublish_log", "publish_log"]
