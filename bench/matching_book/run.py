"""Benchmark the matching book against peer order-book libraries on one stream.

Usage (from the repository root, with the peers installed, see requirements.txt)::

    .venv/bin/python -m bench.matching_book.run [--ops 200000] [--repeat 3]

Every engine gets the same seeded stream (about 60% new limit orders, 30% cancels,
10% aggressive orders sweeping 1-3 levels, ~1,000 resting orders over ~500 levels),
preloaded with 1,000 resting orders. Each engine's trades are checked against the
stream's expected trades before its figures are reported.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.matching_book.engines import FACTORIES
from bench.matching_book.stream import CANCEL, NEW, TAKE, Op, Stream, generate

KIND_NAMES = {NEW: "new", CANCEL: "cancel", TAKE: "take"}


def _prepare(factory: Callable[[], Any], stream: Stream, gc_mode: str) -> Any:
    engine = factory()
    new = engine.new
    for op in stream.preload:
        new(op)
    gc.collect()
    if gc_mode == "freeze":
        gc.freeze()
    return engine


def _timed(engine: Any, ops: list[Op], clock: Callable[[], float] = time.perf_counter) -> float:
    new, cancel, take = engine.new, engine.cancel, engine.take
    t0 = clock()
    for op in ops:
        kind = op[0]
        if kind == 0:
            new(op)
        elif kind == 1:
            cancel(op)
        else:
            take(op)
    return clock() - t0


def _latencies(engine: Any, ops: list[Op]) -> dict[str, list[int]]:
    clock = time.perf_counter_ns
    out: dict[str, list[int]] = {"new": [], "cancel": [], "take": [], "all": []}
    fns = {NEW: engine.new, CANCEL: engine.cancel, TAKE: engine.take}
    per_kind = {k: out[KIND_NAMES[k]] for k in KIND_NAMES}
    every = out["all"]
    for op in ops:
        fn = fns[op[0]]
        t0 = clock()
        fn(op)
        dt = clock() - t0
        per_kind[op[0]].append(dt)
        every.append(dt)
    return out


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--engines", default=",".join(FACTORIES))
    parser.add_argument(
        "--gc",
        choices=["default", "freeze"],
        default="default",
        help="freeze: gc.collect(); gc.freeze() after the preload (all engines alike)",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: time the runs with process_time (CPU time of this process), which "
        "leaves out the time other processes take the CPU (for a shared, loaded machine)",
    )
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    stream = generate(args.ops, seed=args.seed)
    total_expected = sum(t[3] for t in stream.trades)
    print(f"# Matching book benchmark  (python {platform.python_version()}, {platform.machine()})")
    print(
        f"stream: seed={args.seed} ops={len(stream.ops)} mix={stream.mix} "
        f"preload={len(stream.preload)} resting_at_end={stream.resting_at_end} "
        f"levels_at_end={stream.levels_at_end} expected_trades={len(stream.trades)} "
        f"expected_qty={total_expected} gc={args.gc} repeat={args.repeat} clock={args.clock}"
    )

    factories: dict[str, Callable[[], Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    for key in args.engines.split(","):
        factory = FACTORIES[key]
        try:
            probe = factory()
        except Exception as exc:  # a peer that is not installed
            print(f"{key}: SKIPPED ({type(exc).__name__}: {exc})")
            continue
        # Correctness first, untimed: the engine's trades and open orders after the
        # whole stream must equal the stream's expectations.
        engine = _prepare(factory, stream, "default")
        _timed(engine, stream.ops)
        trades = engine.trades()
        if key == "null":
            ok, verdict = True, "n/a"
        elif trades:
            ok = trades == stream.trades
            verdict = "trades identical" if ok else "TRADES DIFFER"
        else:
            ok = getattr(engine, "filled", -1) == total_expected
            verdict = "filled qty identical" if ok else "FILLED QTY DIFFERS"
        open_ok = engine.open_ok(stream.live_at_end)
        if key != "null":
            verdict += ", open orders identical" if open_ok else ", OPEN ORDERS DIFFER"
        if not (ok and open_ok):
            qty = sum(t[3] for t in trades)
            print(f"{key}: {verdict} (qty {qty} vs {total_expected})", file=sys.stderr)
        del engine
        gc.collect()
        factories[key] = factory
        results[key] = {
            "name": getattr(probe, "name", key),
            "notes": getattr(probe, "notes", ""),
            "verdict": verdict,
            "runs": [],
        }
        del probe

    # Timed runs, round robin so that noise from other work on the machine spreads
    # over all engines rather than hitting one.
    for _ in range(args.repeat):
        for key, factory in factories.items():
            engine = _prepare(factory, stream, args.gc)
            results[key]["runs"].append(_timed(engine, stream.ops, clock))
            if args.gc == "freeze":
                gc.unfreeze()
            del engine
            gc.collect()
    for key, factory in factories.items():
        engine = _prepare(factory, stream, args.gc)
        results[key]["lat"] = _latencies(engine, stream.ops)
        if args.gc == "freeze":
            gc.unfreeze()
        del engine
        gc.collect()
        runs = results[key]["runs"]
        results[key]["best_ops"] = len(stream.ops) / min(runs)
        results[key]["median_ops"] = len(stream.ops) / statistics.median(runs)
        print(
            f"{key}: {results[key]['best_ops']:,.0f} ops/s (best of {args.repeat}), "
            f"median {results[key]['median_ops']:,.0f}; {results[key]['verdict']}",
            flush=True,
        )

    print()
    # Ratios of our two builds' best over each engine's best, within this run.
    ours = {
        label: results[key]["best_ops"]
        for key, label in (("ours-compiled", "compiled"), ("ours", "pure"))
        if key in results
    }
    print(
        "| engine | ops/s (best) | ops/s (median) | "
        + "".join(f"ours {label} ÷ engine | " for label in ours)
        + "check | notes |"
    )
    print("|---|---:|---:|" + "---:|" * len(ours) + "---|---|")
    for key, res in results.items():
        ratios = "".join(
            (f"{best / res['best_ops']:.2f}× | " if key != "null" else "- | ")
            for best in ours.values()
        )
        print(
            f"| {res['name']} | {res['best_ops']:,.0f} | {res['median_ops']:,.0f} | {ratios}"
            f"{res['verdict']} | {res['notes']} |"
        )
    print()
    print("Per-op latency in µs (separate pass, perf_counter_ns around each call):")
    print()
    print("| engine | op | n | p50 | p99 | p99.9 | max |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for res in results.values():
        for kind in ("all", "new", "cancel", "take"):
            values = res["lat"][kind]
            print(
                f"| {res['name']} | {kind} | {len(values)} | {_pct(values, 0.5):.2f} "
                f"| {_pct(values, 0.99):.2f} | {_pct(values, 0.999):.2f} "
                f"| {max(values) / 1000:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
