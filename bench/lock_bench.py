#!/usr/bin/env python3
"""The Python peer of the lock rows (bench/lock_bench.cpp): multiprocessing.Lock with the
fork start method ("python_lock"), lock/unlock pairs per second:
    lock-uncontended  one process: acquire(); release() in a loop.
    lock-contended    two processes (the parent and a forked child) do the same loop on
                      one Lock at once; the clock runs from a common start line to the
                      later of the two finishing (time.monotonic_ns is CLOCK_MONOTONIC,
                      one clock for both), and the rate counts both processes' pairs.

The loop does nothing inside the lock: the C++ contenders increment a counter there (about
a nanosecond) to check the lock excludes; a shared counter in Python would cost more than
the lock and hide its cost.

Prints the same CSV as the C++ program, one line per round after a header:
    round,contender,pairs_per_s
Each round runs --iterations pairs (contended: per process) in --slices sessions; rounds are
numbered from --start-round. Any failure exits with 2.
"""

import multiprocessing
import time

import bench_common

PROG = "lock_bench.py"
CONTENDER = "python_lock"
ROWS = {"lock-uncontended": 1_000_000, "lock-contended": 200_000}


def pairs(lock, n):
    acquire, release = lock.acquire, lock.release
    for _ in range(n):
        acquire()
        release()


def child(lock, n, ready, go, done_ns):
    ready.set()
    go.wait()
    pairs(lock, n)
    done_ns.value = time.monotonic_ns()


def session(ctx, lock, n, contended):
    """Seconds for n pairs (and n more in a child when contended)."""
    if not contended:
        t0 = time.perf_counter()
        pairs(lock, n)
        return time.perf_counter() - t0
    ready, go = ctx.Event(), ctx.Event()
    done_ns = ctx.RawValue("q", 0)
    p = bench_common.start_child(ctx, child, lock, n, ready, go, done_ns)
    if not ready.wait(60):
        bench_common.fail(PROG, "the child never started")
    t0 = time.monotonic_ns()
    go.set()
    pairs(lock, n)
    parent_done = time.monotonic_ns()
    p.join()
    if p.exitcode != 0:
        bench_common.fail(PROG, f"child exited with {p.exitcode}")
    return (max(parent_done, done_ns.value) - t0) / 1e9


def main():
    parser = bench_common.parser(__doc__, iterations=0, rows=ROWS)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--start-round", type=int, default=0)
    args = parser.parse_args()
    n = args.iterations or ROWS[args.row]
    if args.rounds < 1 or n < 1 or args.slices < 1 or args.start_round < 0:
        parser.error("--rounds, --iterations and --slices must be >= 1, --start-round >= 0")
    contended = args.row == "lock-contended"
    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    session(ctx, lock, max(1, n // 20), contended)  # warm-up
    print("round,contender,pairs_per_s", flush=True)
    for r in range(args.start_round, args.start_round + args.rounds):
        seconds = 0.0
        for s in range(args.slices):
            seconds += session(ctx, lock, bench_common.slice_size(n, args.slices, s), contended)
        total = n * (2 if contended else 1)
        print(f"{r},{CONTENDER},{total / seconds:.1f}", flush=True)


if __name__ == "__main__":
    bench_common.run(main, PROG, failures=(Exception,))  # any failure is exit status 2, as in C++
