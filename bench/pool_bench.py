#!/usr/bin/env python3
"""The Python peers of the pool rows (bench/pool_bench.cpp), with the fork start method and
--processes workers (default: os.cpu_count(), the pools' own default). multiprocessing.Pool,
contender "python_pool":
    apply  a blocking round trip, pool.apply(f, (x,)) with f(x) = 3x + 1. per_op_us.
    async  --iterations pool.apply_async(f, (x,)), then get() of every result. tasks_per_s.
           (Python runs fewer tasks than mproc, 10k by default: the rate is what compares.)
    map    pool.map(square, items, chunksize=10000) over --iterations ints (default 1M,
           fewer than mproc's 10M, for the same reason). items_per_s.
concurrent.futures.ProcessPoolExecutor, contender "python_executor":
    as_completed  --iterations (default 100k, as many as mproc) executor.submit(f, x), kept
           in a dict future -> index (the idiom of the concurrent.futures docs), then
           result() of each future as concurrent.futures.as_completed yields it, stored at
           its index. tasks_per_s.

Prints the same CSV as bench/pool_bench.cpp, one line per round after a header:
round,contender,<metric>. The pool is made once per invocation and warmed up with one
untimed session of --warmup tasks (items). Each round runs --iterations tasks (items) in
--slices sessions; the clock covers the pool calls only (map: the input list is built
before). Every result is compared with the value expected for its input, in order, and
folded into a checksum, as the C++ program does; a mismatch exits with 2.
"""

import concurrent.futures
import multiprocessing
import os
import time

from bench_common import Mismatch, checksum
import bench_common

ROWS = {
    # row: (metric, default iterations, default warmup, default slices)
    "apply": ("per_op_us", 2_000, 200, 4),
    "async": ("tasks_per_s", 10_000, 1_000, 1),
    "map": ("items_per_s", 1_000_000, 100_000, 1),
    "as_completed": ("tasks_per_s", 100_000, 1_000, 1),
}

# The rows that run on a ProcessPoolExecutor; the others run on a multiprocessing.Pool.
EXECUTOR_ROWS = {"as_completed"}


def f(x):
    return 3 * x + 1


def square(x):
    return x * x


def verify(what, results, base, fn):
    n = len(results)
    want = [fn(base + i) for i in range(n)]
    if results != want:
        i = next(i for i in range(n) if results[i] != want[i])
        raise Mismatch(f"{what}: result {i} is {results[i]}, expected {want[i]}")
    if checksum(results) != checksum(want):
        raise Mismatch(f"{what}: checksum mismatch")


def apply(pool, n, base):
    results = []
    t0 = time.perf_counter()
    for i in range(n):
        results.append(pool.apply(f, (base + i,)))
    t1 = time.perf_counter()
    verify("apply", results, base, f)
    return t1 - t0, n


def apply_async(pool, n, base):
    t0 = time.perf_counter()
    pending = [pool.apply_async(f, (base + i,)) for i in range(n)]
    results = [r.get() for r in pending]
    t1 = time.perf_counter()
    verify("async", results, base, f)
    return t1 - t0, n


def map_(pool, n, base):
    items = list(range(base, base + n))
    t0 = time.perf_counter()
    results = pool.map(square, items, chunksize=10_000)
    t1 = time.perf_counter()
    verify("map", results, base, square)
    return t1 - t0, n


def as_completed(executor, n, base):
    t0 = time.perf_counter()
    futures = {executor.submit(f, base + i): i for i in range(n)}
    results = [None] * n
    for future in concurrent.futures.as_completed(futures):
        results[futures[future]] = future.result()
    t1 = time.perf_counter()
    verify("as_completed", results, base, f)  # a None left by an index never yielded fails too
    return t1 - t0, n


SESSIONS = {"apply": apply, "async": apply_async, "map": map_, "as_completed": as_completed}


def base_of(r, s):
    """Input bases, distinct for every session, as in the C++ program."""
    return (r * 7919 + s * 104_729 + 2 * 13) % 1_000_000


def main():
    parser = bench_common.parser(__doc__, iterations=None, rows=ROWS)
    parser.add_argument("--slices", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="tasks (items) of the untimed warm-up session")
    parser.add_argument("--start-round", type=int, default=0)
    parser.add_argument("--processes", type=int, default=None, help="pool workers (default: os.cpu_count())")
    args = parser.parse_args()
    metric, iterations, warmup, slices = ROWS[args.row]
    bench_common.fill_defaults(args, iterations=iterations, warmup=warmup, slices=slices, processes=os.cpu_count())
    if args.rounds < 1 or args.slices < 1 or args.iterations < 1 or args.processes < 1:
        parser.error("--rounds, --slices, --iterations and --processes must be >= 1")
    if args.warmup < 0 or args.start_round < 0:
        parser.error("--warmup and --start-round must be >= 0")
    args.slices = min(args.slices, args.iterations)
    session = SESSIONS[args.row]

    ctx = multiprocessing.get_context("fork")
    if args.row in EXECUTOR_ROWS:
        # ProcessPoolExecutor starts its workers as tasks come (Python 3.9+): the warm-up
        # session starts them all before the clock.
        contender = "python_executor"
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=args.processes, mp_context=ctx)
    else:
        contender = "python_pool"
        pool = ctx.Pool(args.processes)
    with pool:
        if args.warmup > 0:
            session(pool, args.warmup, 1)
        print(f"round,contender,{metric}", flush=True)
        for r in range(args.start_round, args.start_round + args.rounds):
            seconds = units = 0
            for s in range(args.slices):
                t, u = session(pool, bench_common.slice_size(args.iterations, args.slices, s), base_of(r, s))
                seconds += t
                units += u
            print(f"{r},{contender},{bench_common.figure(metric, seconds, units):.6g}", flush=True)


if __name__ == "__main__":
    bench_common.run(main, "pool_bench.py")
