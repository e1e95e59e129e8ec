"""dbt's exit codes, and what a dbt process's exit code says about how it ended.

Standard library only, and no names from the rest of dbtbus: the subprocess producer runs this module's
source verbatim in dbt's interpreter (see :mod:`dbtbus._dbt.bootstrap`).
"""

__all__ = ["EXIT_ERROR", "EXIT_FAILURES", "EXIT_SUCCESS", "dbt_exit_code", "exit_code_crashed"]

#: dbt's exit codes (``dbt.cli.exceptions``): the command ran and every node succeeded / the command ran
#: and something failed (or ``--fail-fast`` stopped it) / dbt itself failed (an exception, bad arguments).
EXIT_SUCCESS = 0
EXIT_FAILURES = 1
EXIT_ERROR = 2




def dbt_exit_code(success: bool, exception: object = None) -> int:
    """dbt's exit code for a result: 0 success, 2 when dbt raised, else 1 — the one place the rule lives."""
    if exception:
        return EXIT_ERROR
    return EXIT_SUCCESS if success else EXIT_FAILURES


def exit_code_crashed(code: int) -> bool:
    """Whether a dbt process that exited with ``code`` died before it could end the run itself.

    A negative code is a signal (the process was killed); above 2 is not a code dbt returns (the
    interpreter or the bootstrap died). 0, 1 and 2 mean dbt returned.
    """
    return code < 0 or code > EXIT_ERROR
