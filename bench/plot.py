"""The plot of cost against project size, from ``bench/results/end_to_end.json`` and ``scale.json``.

    python -m bench.plot [--results-dir bench/results] [--out docs/benchmarks-scale.svg]

Three panels against the number of models: the end-to-end ratio to a bare ``dbt build`` (CPU and wall,
medians with the per-repetition range), the producer's peak RSS over a bare build next to the goal
(2 MiB + 1 KB per node), and the time to register 10,000 waiters. matplotlib is needed here only (the
``bench`` nox session installs it); without it :func:`plot` returns None and the page says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench._harness import DOCS_PATH, RESULTS_DIR, load_results, view
from bench.goals import GOAL_E2E_RATIO, GOAL_REGISTER_10K_S, goal_producer_rss

PLOT_PATH = DOCS_PATH.parent / "benchmarks-scale.svg"
MiB = 2**20


def _load(results_dir: Path, name: str) -> dict[str, Any] | None:
    result = load_results(results_dir).get(name)
    return view(result) if result is not None else None


def plot(results_dir: Path = RESULTS_DIR, out: Path = PLOT_PATH) -> Path | None:
    """Write the SVG; None when matplotlib is missing or there is nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    e2e = _load(results_dir, "end_to_end")
    scale = _load(results_dir, "scale")
    if not e2e and not scale:
        return None
    plt.rcParams["svg.hashsalt"] = "dbtbus"  # stable ids: the SVG only changes when the figures do
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ratio_ax, rss_ax, reg_ax = axes
    if e2e:
        projects = sorted(e2e["projects"], key=lambda p: p["models"])
        models = [p["models"] for p in projects]
        for variant, label, colour in (("producer-memory", "memory://", "tab:blue"),
                                       ("producer-redis", "Redis", "tab:red")):
            for key, style, what in (("cpu_ratios", "-o", "CPU"), ("ratios", "--s", "wall")):
                meds, lows, highs, xs = [], [], [], []
                for p in projects:
                    r = p.get(key, {}).get(f"{variant}/bare")
                    if not r:
                        continue
                    per = r["per_repetition"] or [r["of_medians"]]
                    xs.append(p["models"])
                    meds.append(r["of_medians"])
                    lows.append(r["of_medians"] - min(per))
                    highs.append(max(per) - r["of_medians"])
                if xs:
                    ratio_ax.errorbar(xs, meds, yerr=[lows, highs], fmt=style, color=colour, capsize=3,
                                      alpha=1.0 if what == "CPU" else 0.5, label=f"{label}, {what}")
        ratio_ax.axhline(GOAL_E2E_RATIO, color="grey", linestyle=":", label=f"goal {GOAL_E2E_RATIO}")
        ratio_ax.axhline(1.0, color="black", linewidth=0.5)
        ratio_ax.set_title("end to end ÷ bare dbt build")
        ratio_ax.set_xlabel("models")
        ratio_ax.set_xscale("log")
        ratio_ax.minorticks_off()
        ratio_ax.set_xticks(models, [str(m) for m in models])
        ratio_ax.legend(fontsize=8)
        for variant, label, colour in (("produceronly-memory", "memory://", "tab:blue"),
                                       ("produceronly-redis", "Redis", "tab:red")):
            xs, runs, totals = [], [], []
            for p in projects:
                o = p.get("overhead", {}).get(variant)
                if not o:
                    continue
                xs.append(p["nodes"])
                totals.append(o["peak_rss_over_bare"] / MiB)
                runs.append(o.get("run_over_bare", o["peak_rss_over_bare"]) / MiB)
            if xs:
                rss_ax.plot(xs, runs, "-o", color=colour, label=f"{label}: the run")
                rss_ax.plot(xs, totals, "--s", color=colour, alpha=0.5, label=f"{label}: with imports")
        nodes = sorted({p["nodes"] for p in projects})
        if nodes:
            rss_ax.plot(nodes, [goal_producer_rss(n) / MiB for n in nodes], ":", color="grey",
                        label="goal: 2 MiB + 1 KB/node")
        rss_ax.set_title("producer peak RSS over a bare build (MiB)")
        rss_ax.set_xlabel("nodes")
        rss_ax.legend(fontsize=8)
    if scale:
        sizes = sorted(scale["sizes"], key=lambda s: s["models"])
        for backend, colour in (("memory", "tab:blue"), ("redis", "tab:red")):
            for when, style in (("early", "-o"), ("late", "--s")):
                have = [s for s in sizes if backend in s["backends"]]
                xs = [s["models"] for s in have]
                wall = [s["backends"][backend][when]["register_wall"]["median"] for s in have]
                cpu = [s["backends"][backend][when]["register_cpu"]["median"] for s in have]
                reg_ax.plot(xs, cpu, style, color=colour, label=f"{backend}, {when}, CPU")
                reg_ax.plot(xs, wall, style, color=colour, alpha=0.35, label=f"{backend}, {when}, wall")
        reg_ax.axhline(GOAL_REGISTER_10K_S, color="grey", linestyle=":", label=f"goal {GOAL_REGISTER_10K_S} s (Redis)")
        reg_ax.set_title(f"registering {scale['waiters']:,} waiters (s)")
        reg_ax.set_xlabel("models")
        reg_ax.set_xscale("log")
        reg_ax.minorticks_off()
        reg_ax.set_xticks([s["models"] for s in sizes], [str(s["models"]) for s in sizes])
        reg_ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=PLOT_PATH)
    args = parser.parse_args(argv)
    path = plot(args.results_dir, args.out)
    print(path if path else "no plot (matplotlib missing or no results)")


if __name__ == "__main__":
    main()
