"""The one rule for ``dbt build``'s test edges that another path already implies: drop them.

``dbt build`` makes a test a parent of every node downstream of what it tests (``Linker.add_test_edges``;
without ``USE_FAST_TEST_EDGES``, dbt's default): a test of ``a`` becomes a parent of ``a``'s child ``b``,
of ``b``'s child ``c``, and so on down. Most of those edges are implied by a shorter path (the test is a
parent of ``b``, and ``b`` of ``c``), and there are O(nodes × depth) of them: a generated project of 1,000
models with one test each has 148,000 edges, a 5.8 MB graph. Dropping the implied ones keeps every node's
ancestors and descendants (all that skipping, propagation and a retry's redo need) and leaves the edges a
person reads: a node's own ``depends_on`` and the tests it truly waits for.

Standard library only, and no names from the rest of dbtbus: the subprocess producer runs this module's
source verbatim in dbt's interpreter, next to ``hook.py``'s.
"""

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence

#: Resource types whose result gates the nodes they test rather than being a node of their own.
TEST_RESOURCE_TYPES = frozenset({"test", "unit_test"})


def parents_first(parents: Mapping[str, Sequence[str]]) -> list[str]:
    """The nodes of ``parents``, parents before children (Kahn's algorithm; parents outside it are ignored).

    Nodes on a cycle (which dbt forbids), and those below them, come last in the mapping's order rather
    than being dropped.
    """
    pending = dict.fromkeys(parents, 0)
    children: dict[str, list[str]] = {}
    for uid, ps in parents.items():
        for parent in ps:
            if parent in pending:
                pending[uid] += 1
                children.setdefault(parent, []).append(uid)
    ready = deque(uid for uid, count in pending.items() if count == 0)
    order: list[str] = []
    while ready:
        uid = ready.popleft()
        order.append(uid)
        for child in children.get(uid, ()):
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    if len(order) < len(parents):
        placed = set(order)
        order.extend(uid for uid in parents if uid not in placed)
    return order


def drop_implied_test_edges(
    parents: Mapping[str, Sequence[str]], is_test: Callable[[str], bool]
) -> dict[str, list[str]]:
    """Each node's parents without the edges from a test that another path of the graph implies.

    An edge ``test → node`` is implied when the test is an ancestor of another parent of ``node``. Only
    edges from tests are dropped (a node's own dependencies stay, implied or not); parents outside
    ``parents`` are kept. Nodes on a cycle (which dbt forbids), and those below them, keep their parents whole.

    Ancestor sets are bit sets (Python ints) over :func:`parents_first`'s order, each freed once its last
    child is done: one pass over the edges.
    """
    index = {uid: i for i, uid in enumerate(parents)}
    unfinished = Counter(parent for ps in parents.values() for parent in ps if parent in index)
    ancestors: dict[str, int] = {}
    out: dict[str, list[str]] = {}
    for uid in parents_first(parents):
        inside = [p for p in parents[uid] if p in index]
        covered = 0
        for parent in inside:
            bits = ancestors.get(parent)
            if bits is None:  # on or below a cycle: the parent's ancestors were never made
                out[uid] = list(parents[uid])
                break
            covered |= bits
        else:
            out[uid] = [p for p in parents[uid] if p not in index or not (covered >> index[p]) & 1 or not is_test(p)]
            if unfinished[uid]:
                for parent in inside:
                    covered |= 1 << index[parent]
                ancestors[uid] = covered
        for parent in inside:
            unfinished[parent] -= 1
            if unfinished[parent] == 0:
                ancestors.pop(parent, None)
    return {uid: out[uid] for uid in parents}
