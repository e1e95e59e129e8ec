"""Run the benchmark suite and regenerate docs/benchmarks.md's figures from its result files.

    python -m bench                        # every benchmark of this interpreter (~20 min on a 2-core machine)
    python -m bench --large                # and the 1,000-model end-to-end point (+ ~15 min)
    python -m bench --quick                # fewer runs, smaller sizes (~5 min)
    python -m bench --tiny                 # the smoke test's sizes: each benchmark in seconds
    python -m bench --only wakeup footprint
    python -m bench --list                 # the registered benchmarks
    python -m bench --render-only          # rebuild the page's figures from bench/results/*.json
    python -m bench --quick --results-dir /tmp/r --docs /tmp/benchmarks.md   # never touch the committed files

Benchmarks register themselves (``@benchmark`` in their module, ``bench/_harness.py``); each writes
``<results-dir>/<name>.json`` in the one result schema, and the page's generated blocks (between
``<!-- bench:NAME -->`` markers) are rendered again from every result file there, so ``--only`` refreshes
some figures and keeps the others. Benchmarks that need Airflow's virtualenv run under ``nox -s bench_airflow``
(``--interpreter airflow``).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import (
    DOCS_PATH,
    INTERPRETERS,
    RESULTS_DIR,
    Options,
    compile_bytecode,
    discover,
    log,
    run_benchmark,
    write_result,
)


def main(argv: list[str] | None = None) -> int:
    registry = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller sizes")
    parser.add_argument("--tiny", action="store_true", help="the smoke test's sizes (implies --quick)")
    parser.add_argument("--large", action="store_true", help="add the 1,000-model end-to-end point")
    parser.add_argument("--only", nargs="+", choices=sorted(registry), metavar="NAME",
                        help=f"run only these ({', '.join(registry)})")
    parser.add_argument("--interpreter", choices=INTERPRETERS, default="dbtbus",
                        help="run the benchmarks of this virtualenv (default: dbtbus)")
    parser.add_argument("--list", action="store_true", help="list the registered benchmarks and exit")
    parser.add_argument("--note", action="append", default=[],
                        help="a note for every result of this run (what the harness cannot see: a shared machine…)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the result files go")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="the page to write")
    parser.add_argument("--no-docs", action="store_true", help="do not write the page")
    parser.add_argument("--render-only", action="store_true", help="only rebuild the page from the result files")
    args = parser.parse_args(argv)

    if args.list:
        for name, b in registry.items():
            summary = b.doc.splitlines()[0] if b.doc else ""
            print(f"{name:20} {b.interpreter:8} {'redis ' if b.redis else '      '}{summary}")
        return 0
    failed: list[str] = []
    if not args.render_only:
        chosen = [b for name, b in registry.items()
                  if (name in args.only if args.only else b.interpreter == args.interpreter)]
        compile_bytecode()  # the children import dbtbus as an installed copy would, from bytecode
        opts = Options(quick=args.quick or args.tiny, tiny=args.tiny, large=args.large, results_dir=args.results_dir,
                       notes=list(args.note))
        server = None
        if any(b.redis for b in chosen):
            from dbtbus.testing.redis_server import RedisServer

            server = RedisServer().start()  # one throw-away redis-server for the whole suite
            opts.redis_url = server.url
        started = time.perf_counter()
        try:
            for b in chosen:
                log(f"=== {b.name}{' (tiny)' if args.tiny else ' (quick)' if args.quick else ''}")
                try:
                    result = run_benchmark(b, opts)
                except Exception:
                    traceback.print_exc()
                    failed.append(b.name)
                    continue
                path = write_result(args.results_dir, result)
                log(f"=== {b.name}: {result.duration_s:.0f} s → {path}")
        finally:
            if server is not None:
                server.close()
        log(f"suite: {time.perf_counter() - started:.0f} s{'; FAILED: ' + ', '.join(failed) if failed else ''}")
    if not args.no_docs:
        from bench.render import render_file

        render_file(args.results_dir, args.docs)
        log(f"wrote {args.docs}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
