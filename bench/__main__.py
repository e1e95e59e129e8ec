"""Run the benchmark suite and regenerate docs/benchmarks.md from its JSON results.

    python -m bench                        # everything (~20 min on a 2-core machine)
    python -m bench --large                # and the 1,000-model end-to-end point (+ ~15 min)
    python -m bench --quick                # fewer runs, smaller sizes (~5 min)
    python -m bench --only wakeup footprint
    python -m bench --render-only          # rebuild the page from bench/results/*.json
    python -m bench --quick --results-dir /tmp/r --docs /tmp/benchmarks.md   # never touch the committed files

Each benchmark writes ``<results-dir>/<name>.json``; the page is then rendered from every JSON file there
(so ``--only`` refreshes some figures and keeps the others).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DOCS_PATH, RESULTS_DIR, Options, compile_bytecode, log, write_json

#: In the order they run: the short ones first, the long end-to-end last.
BENCHMARKS = ("footprint", "callback_cost", "wakeup", "throughput", "scale", "report", "end_to_end")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller sizes")
    parser.add_argument("--large", action="store_true", help="add the 1,000-model end-to-end point")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="the page to write")
    parser.add_argument("--no-docs", action="store_true", help="do not write the page")
    parser.add_argument("--render-only", action="store_true", help="only rebuild the page from the JSON results")
    args = parser.parse_args(argv)

    failed: list[str] = []
    if not args.render_only:
        names = [n for n in BENCHMARKS if not args.only or n in args.only]
        compile_bytecode()  # the children import dbtbus as an installed copy would, from bytecode
        opts = Options(quick=args.quick, results_dir=args.results_dir, extra={"large": args.large})
        server = None
        if {"wakeup", "throughput", "scale", "end_to_end"} & set(names):
            from dbtbus.testing.redis_server import RedisServer

            server = RedisServer().start()  # one throw-away redis-server for the whole suite
            opts.redis_url = server.url
        started = time.perf_counter()
        try:
            for name in names:
                t0 = time.perf_counter()
                log(f"=== {name}{' (quick)' if args.quick else ''}")
                module = importlib.import_module(f"bench.{name}")
                try:
                    result = module.run(opts)
                except Exception:
                    traceback.print_exc()
                    failed.append(name)
                    continue
                result["duration_s"] = time.perf_counter() - t0
                path = write_json(args.results_dir, name, result)
                log(f"=== {name}: {result['duration_s']:.0f} s → {path}")
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
