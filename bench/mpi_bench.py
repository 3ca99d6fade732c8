#!/usr/bin/env python3
"""The mpi4py.futures peer of the MPI rows (bench/mpi_bench.cpp), contender "mpi4py". Run it
as mpi4py.futures' own launcher does, which makes every rank but 0 a worker of a shared pool:

    mpirun -np 2 python3 -m mpi4py.futures bench/mpi_bench.py --row apply

(Debian's python3-mpi4py, so /usr/bin/python3; the workers import this file as __worker__,
so nothing runs at import). One MPIPoolExecutor per invocation, square(x) = x*x:
    apply  a blocking round trip, executor.submit(square, x).result(). per_op_us.
    async  --iterations (default 2000) executor.submit(square, x), then result() of each
           future in order. tasks_per_s. (Fewer tasks than mproc's 100k: mpi4py.futures
           does a few thousand tasks a second, and its rate is what compares.)
    map    list(executor.map(square, items, chunksize=--chunksize)) over --iterations ints
           (default 200k, fewer than mproc's 1M for the same reason), chunksize 100 as
           mproc's. items_per_s.

Prints the same CSV as the C++ programs, one line per round after a header:
round,contender,<metric>. The executor is warmed up with one untimed session of --warmup
tasks (items). Each round runs --iterations tasks (items) in --slices sessions; the clock
covers the executor calls only (map: the input list is built before). Every result is
compared with the square of its own input, in order, and folded into a checksum, as the C++
programs do; a mismatch exits with 2.
"""

import time

from bench_common import Mismatch, checksum
import bench_common

ROWS = {
    # row: (metric, default iterations, default warmup, default slices)
    "apply": ("per_op_us", 1_000, 100, 4),
    "async": ("tasks_per_s", 2_000, 200, 1),
    "map": ("items_per_s", 200_000, 20_000, 1),
}


def square(x):
    return x * x


def verify(what, results, base):
    n = len(results)
    want = [square(base + i) for i in range(n)]
    if results != want:
        i = next((i for i in range(min(n, len(want))) if results[i] != want[i]), n)
        raise Mismatch(f"{what}: result {i} is {results[i] if i < n else None}, expected {want[i]}")
    if checksum(results) != checksum(want):
        raise Mismatch(f"{what}: checksum mismatch")


def apply(executor, n, base, chunksize):
    results = []
    t0 = time.perf_counter()
    for i in range(n):
        results.append(executor.submit(square, base + i).result())
    t1 = time.perf_counter()
    verify("apply", results, base)
    return t1 - t0, n


def apply_async(executor, n, base, chunksize):
    t0 = time.perf_counter()
    futures = [executor.submit(square, base + i) for i in range(n)]
    results = [f.result() for f in futures]
    t1 = time.perf_counter()
    verify("async", results, base)
    return t1 - t0, n


def map_(executor, n, base, chunksize):
    items = list(range(base, base + n))
    t0 = time.perf_counter()
    results = list(executor.map(square, items, chunksize=chunksize))
    t1 = time.perf_counter()
    if len(results) != n:
        raise Mismatch(f"map: {len(results)} results for {n} items")
    verify("map", results, base)
    return t1 - t0, n


SESSIONS = {"apply": apply, "async": apply_async, "map": map_}


def base_of(r, s):
    """Input bases, distinct for every session, as in the C++ programs."""
    return (r * 7919 + s * 104_729 + 26) % 1_000_000


def main():
    from mpi4py import MPI
    from mpi4py.futures import MPIPoolExecutor

    parser = bench_common.parser(__doc__, iterations=None, rows=ROWS)
    parser.add_argument("--slices", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="tasks (items) of the untimed warm-up session")
    parser.add_argument("--start-round", type=int, default=0)
    parser.add_argument("--chunksize", type=int, default=100, help="map's chunksize (default 100)")
    args = parser.parse_args()
    metric, iterations, warmup, slices = ROWS[args.row]
    bench_common.fill_defaults(args, iterations=iterations, warmup=warmup, slices=slices)
    if args.rounds < 1 or args.slices < 1 or args.iterations < 1 or args.chunksize < 1:
        parser.error("--rounds, --slices, --iterations and --chunksize must be >= 1")
    if args.warmup < 0 or args.start_round < 0:
        parser.error("--warmup and --start-round must be >= 0")
    if MPI.COMM_WORLD.Get_size() < 2:
        bench_common.fail("mpi_bench.py", "run it as: mpirun -np 2 python3 -m mpi4py.futures bench/mpi_bench.py ...")
    args.slices = min(args.slices, args.iterations)
    session = SESSIONS[args.row]

    with MPIPoolExecutor() as executor:
        if args.warmup > 0:
            session(executor, args.warmup, 1, args.chunksize)
        print(f"round,contender,{metric}", flush=True)
        for r in range(args.start_round, args.start_round + args.rounds):
            seconds = units = 0
            for s in range(args.slices):
                n = bench_common.slice_size(args.iterations, args.slices, s)
                t, u = session(executor, n, base_of(r, s), args.chunksize)
                seconds += t
                units += u
            print(f"{r},mpi4py,{bench_common.figure(metric, seconds, units):.6g}", flush=True)


if __name__ == "__main__":
    bench_common.run(main, "mpi_bench.py")
