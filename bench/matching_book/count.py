"""Run one engine over the benchmark stream N times in one process, for instruction counts.

Instruction counts are load-independent (this machine is shared), so A/B comparisons of
the book use them: run under valgrind with 1 and with 2 timed runs and divide the
difference by the number of ops (stream generation, imports and start-up cancel out)::

    for n in 1 2; do valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null .venv/bin/python -m bench.matching_book.count \\
        ours-compiled --ops 60000 --runs $n 2>&1 | grep 'I *refs'; done

Each run is what ``run.py`` times: a fresh engine, the preload, ``gc.collect()``, the
ops. Prints the CPU-clock throughput of each run as well.
"""

from __future__ import annotations

import argparse
import time

from bench.matching_book.engines import FACTORIES
from bench.matching_book.run import _prepare, _timed
from bench.matching_book.stream import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("engine", choices=sorted(FACTORIES))
    parser.add_argument("--ops", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=20260302)
    args = parser.parse_args(argv)
    stream = generate(args.ops, seed=args.seed)
    for _ in range(args.runs):
        engine = _prepare(FACTORIES[args.engine], stream, "default")
        seconds = _timed(engine, stream.ops, time.process_time)
        print(f"{args.engine}: {len(stream.ops) / seconds:,.0f} ops/s (CPU clock)")
        del engine
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
