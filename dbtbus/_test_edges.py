"""The one rule for ``dbt build``'s test edges that another path already implies: drop them.

``dbt build`` makes a test a parent of every node downstream of what it tests (``Linker.add_test_edges``;
without ``USE_FAST_TEST_EDGES``, dbt's default): a test of ``a`` becomes a parent of ``a``'s child ``b``,
of ``b``'s child ``c``, and so on down. Most of those edges are implied by a shorter path (the test is a
parent of ``b``, and ``b`` of ``c``), and there are O(nodes × depth) of them: a generated project of 1,000
models with one test each has 148,000 edges, a 5.8 MB graph. Dropping the implied ones keeps every node's
ancestors and descendants (all that skipping, propagation and a retry's redo need) and leaves the edges a
person reads: a node's own ``depends_on`` and the tests it truly waits for.

Standard library only, and no names from the rest of dbtbus: the subprocess producer runs this module's
source verbatim in dbt's interpreter, next to ``producer/_dbt_hook.py``'s.
"""

from collections import deque
from collections.abc import Callable, Mapping, Sequence

#: Resource types whose result gates the nodes they test rather than being a node of their own.
TEST_RESOURCE_TYPES = frozenset({"test", "unit_test"})


def drop_implied_test_edges(
    parents: Mapping[str, Sequence[str]], is_test: Callable[[str], bool]
) -> dict[str, list[str]]:
    """Each node's parents without the edges from a test that another path of the graph implies.

    An edge ``test → node`` is implied when the test is an ancestor of another parent of ``node``. Only
    edges from tests are dropped (a node's own dependencies stay, implied or not); parents outside
    ``parents`` are kept. Nodes on a cycle (which dbt forbids) keep their parents whole.

    Ancestor sets are bit sets (Python ints) over a topological order, each freed once its last child is
    done: one pass over the edges.
    """
    index = {uid: i for i, uid in enumerate(parents)}
    pending = {uid: sum(1 for p in ps if p in index) for uid, ps in parents.items()}
    children: dict[str, list[str]] = {}
    for uid, ps in parents.items():
        for parent in ps:
            if parent in index:
                children.setdefault(parent, []).append(uid)
    unfinished = {uid: len(kids) for uid, kids in children.items()}
    ancestors: dict[str, int] = {}
    out: dict[str, list[str]] = {}
    ready = deque(uid for uid, count in pending.items() if count == 0)
    while ready:
        uid = ready.popleft()
        inside = [p for p in parents[uid] if p in index]
        covered = 0
        for parent in inside:
            covered |= ancestors[parent]
        out[uid] = [p for p in parents[uid] if p not in index or not (covered >> index[p]) & 1 or not is_test(p)]
        if uid in unfinished:
            mine = covered
            for parent in inside:
                mine |= 1 << index[parent]
            ancestors[uid] = mine
        for parent in inside:
            unfinished[parent] -= 1
            if unfinished[parent] == 0:
                del ancestors[parent]
        for child in children.get(uid, ()):
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    if len(out) < len(parents):  # a cycle: its nodes were never ready
        out.update((uid, list(ps)) for uid, ps in parents.items() if uid not in out)
    return {uid: out[uid] for uid in parents}
