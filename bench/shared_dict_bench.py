#!/usr/bin/env python3
"""The Python peer of the shared-dict row (bench/shared_dict_bench.cpp): a
multiprocessing.Manager().dict() ("python_manager"), set and get operations per second from
the parent, each an IPC round trip to the manager's server process.

Workload, as in C++: iteration i sets key i % 1024 to i, then gets it back; an iteration is
two operations. Every value read is folded into a checksum, which must be the expected one.

Prints the same CSV as the C++ program, one line per round after a header:
    round,contender,ops_per_s
Each round runs --iterations iterations in --slices sessions; rounds are numbered from
--start-round. Any failure exits with 2.
"""

import multiprocessing
import time

import bench_common

PROG = "shared_dict_bench.py"
CONTENDER = "python_manager"
ROWS = {"shared-dict": 20_000}
KEYS = 1024


def session(d, first, n):
    """Seconds for n iterations starting at `first`; checks every value read."""
    got = []
    t0 = time.perf_counter()
    for i in range(first, first + n):
        k = i % KEYS
        d[k] = i
        got.append(d[k])
    seconds = time.perf_counter() - t0
    if got != list(range(first, first + n)):
        raise bench_common.Mismatch("a get returned another value than the set before it")
    return seconds


def main():
    parser = bench_common.parser(__doc__, iterations=0, rows=ROWS)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--start-round", type=int, default=0)
    args = parser.parse_args()
    n = args.iterations or ROWS[args.row]
    if args.rounds < 1 or n < 1 or args.slices < 1 or args.start_round < 0:
        parser.error("--rounds, --iterations and --slices must be >= 1, --start-round >= 0")
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        d = manager.dict()
        nxt = 0
        session(d, nxt, max(KEYS, n // 20))  # warm-up: every key present
        nxt += max(KEYS, n // 20)
        print("round,contender,ops_per_s", flush=True)
        for r in range(args.start_round, args.start_round + args.rounds):
            seconds = 0.0
            for s in range(args.slices):
                size = bench_common.slice_size(n, args.slices, s)
                seconds += session(d, nxt, size)
                nxt += size
            print(f"{r},{CONTENDER},{2 * n / seconds:.1f}", flush=True)


if __name__ == "__main__":
    bench_common.run(main, PROG, failures=(Exception,))  # any failure is exit status 2, as in C++
