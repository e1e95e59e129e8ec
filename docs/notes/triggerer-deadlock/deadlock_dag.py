"""A self-contained reproducer of an Airflow 3.3 triggerer deadlock (no dbt, no dbtbus): an airflow dag file.

Put this file in the dags folder of a deployment with a triggerer, ``deadlock_trigger.py`` on the triggerer's
PYTHONPATH (and the dag-processor's), and trigger ``triggerer_deadlock``. It has
TASKS ``start_from_trigger`` tasks whose serialized DAG is large (PADDING bytes of doc per task), and CHATTY
of them run a trigger that writes log lines synchronously from the trigger runner's event loop.

What happens (Airflow 3.3.2, task-sdk 1.3.2): for every new ``start_from_trigger`` trigger the supervisor
puts the whole serialized DAG into the trigger's workload and sends all new workloads to the trigger runner
in one state-sync message (``TriggerRunnerSupervisor._handle_request`` → ``WatchedSubprocess.send_msg``). While
it sends, it reads nothing from the runner — its log socket included. The chatty triggers fill that socket;
the runner's event loop then blocks in a synchronous log write (structlog ``BytesLogger.msg``) and no longer
reads the message the supervisor is sending: each waits for the other for good. The triggerer stops
heartbeating, every task of the run stays ``deferred``, the run never ends; SIGTERM does not stop it.

The size of the message is (new triggers) × (DAG size): a DAG of a few hundred ``start_from_trigger`` tasks
is enough. Any synchronous write from the event loop can be the other half (a trigger's ``self.log.info``).
"""

from __future__ import annotations

from airflow.sdk import DAG
from deadlock_trigger import WaitingTask

TASKS = 400
CHATTY = 40
PADDING = 4000  # bytes of doc_md per task: the serialized DAG is about TASKS x PADDING bytes

with DAG("triggerer_deadlock", schedule=None, catchup=False) as dag:
    for i in range(TASKS):
        WaitingTask(task_id=f"wait_{i:04d}", chatty=i < CHATTY, doc_md="p" * PADDING)
