"""``xaiready benchmark``: a leaderboard of methods on the built-in ground-truth benchmark."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--n", type=int, default=32, metavar="N", help="test images to score (default 32)")
    p.add_argument("--methods", metavar="A,B", help="methods (default: every gradient and CAM method)")
    p.add_argument("--metrics", metavar="a,b,c", help="metrics (default: all that apply to a classifier)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random perturbation")
    p.add_argument("--json", action="store_true", help="print rows {method, metric, mean, std, n, higher_is_better}")
    p.add_argument("--plot", metavar="FILE.png", help="plot the deletion/insertion curves")


def run(args) -> int:
    import sys

    from ..benchmark.leaderboard import DEFAULT_METRICS, run_benchmark
    from ..metrics.base import Settings
    from .evaluate import print_results, split

    methods = split(args.methods) if args.methods else None
    metrics = split(args.metrics) if args.metrics else DEFAULT_METRICS
    if methods is not None:
        methods += [b for b in ("random", "center") if b not in methods]
    results = run_benchmark(args.n, methods, metrics, Settings(seed=args.seed))
    print_results(results, as_json=args.json)
    if args.plot:
        from ..metrics.table import plot_curves

        print(f"curves: {plot_curves(results, args.plot)}", file=sys.stderr)
    return 0
