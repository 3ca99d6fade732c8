#!/usr/bin/env python3
"""The `spawn` row's Python peer: multiprocessing.Process(target=f).start(); join(),
with the fork start method, f returning at once; with --start-method forkserver, the
`forkserver-spawn` row's (the server is started by the warm-up runs).

Prints the same CSV as bench/spawn_bench.cpp, one line per round after a header:
    round,contender,per_op_us
per_op_us is the mean over --iterations back-to-back start+join operations, after
--warmup untimed ones. Rounds are numbered from --start-round.
"""

import multiprocessing
import sys
import time

import bench_common



def returns_at_once():
    pass


def start_join(ctx):
    p = ctx.Process(target=returns_at_once)
    p.start()
    p.join()
    if p.exitcode != 0:
        sys.exit(f"spawn.py: child exited with {p.exitcode}")


def main():
    parser = bench_common.parser(__doc__, iterations=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--start-round", type=int, default=0)
    parser.add_argument("--start-method", choices=["fork", "forkserver"], default="fork")
    args = parser.parse_args()
    if args.rounds < 1 or args.iterations < 1 or args.warmup < 0 or args.start_round < 0:
        parser.error("--rounds and --iterations must be >= 1, --warmup and --start-round >= 0")

    ctx = multiprocessing.get_context(args.start_method)
    contender = f"python_mp_{args.start_method}"
    for _ in range(args.warmup):
        start_join(ctx)
    print("round,contender,per_op_us", flush=True)
    for r in range(args.start_round, args.start_round + args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.iterations):
            start_join(ctx)
        t1 = time.perf_counter()
        print(f"{r},{contender},{(t1 - t0) * 1e6 / args.iterations:.3f}", flush=True)


if __name__ == "__main__":
    main()
