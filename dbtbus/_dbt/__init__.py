"""Everything dbt decides, in one place: nothing else in dbtbus knows a dbt rule.

* :mod:`.rules` — which failures skip a node's children, per command; the command of a command line;
* :mod:`.exit_codes` — dbt's exit codes and what a dbt process's code says;
* :mod:`.graph` — the node graph: what a test is, children, descendants, a manifest's graph, build's
  test edges (:mod:`.test_edges` drops those another path implies);
* :mod:`.args` — command lines: selecting one node, re-running it, resuming a run, running dbt (one
  invocation at a time per process: ``DBT_LOCK``);
* :mod:`.versions` — how the supported dbt-core versions (1.8 to 1.11) differ;
* :mod:`.hook` and :mod:`.bootstrap` — what runs inside dbt's interpreter: the graph dbt plans, its final
  results (``exit_codes``, ``test_edges``, ``hook`` and ``bootstrap`` are standard library only: the
  subprocess producer runs their source verbatim in another virtualenv's dbt).
"""
