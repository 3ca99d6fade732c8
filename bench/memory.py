#!/usr/bin/env python3
"""The memory table of bench/: what an idle pool worker and a queue holding unconsumed
messages cost, mproc beside Python's multiprocessing (fork), from the kernel's own counts.

Runs bench/memory_bench.cpp (mproc_memory_bench) and its Python peer bench/memory_bench.py,
whose header comments define every quantity and how it is measured, once per case
(--repeat N: N times, alternating which goes first, and the median of each quantity):

pool    an idle pool of --processes workers (default 2) after a warm-up (a map of x*x over
        100000 ints, then tasks returning the worker's pid until every worker answered):
        per worker RSS, PSS and USS (Private_Clean + Private_Dirty, /proc/PID/smaps_rollup);
        mproc's zygote (the process that forks its workers); the parent's PSS change; the
        whole pool's cost, the PSS of the parent and of all the pool's processes minus the
        parent's PSS before the pool (each page counted once); mproc's shared memory files.
queue   --queue-cases (default 8 B × 1 MiB, and 64 KiB × 0, 1, 16 and 64 MiB, and one 64 MiB
        message): B bytes of S-byte messages put by a producer process into an unbounded
        queue that nobody reads yet, then drained by the parent. Where the bytes are:
        mproc's memfd (its allocated size, counted once, by inode), Python's pipe (FIONREAD)
        and each process's anonymous memory (Pss_Anon; Python keeps the messages in the
        producer's heap, in its feeder thread's deque). total = file + pipe + the producer's
        and the consumer's growth; the same after the queue was drained.

Writes memory-pool.csv and memory-queue.csv (one line per contender, per case) into
--out-dir (default: the build dir) and prints both as Markdown tables. Takes about 30 s.
Leftover processes and /dev/shm files are checked as in bench/curves.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

from curves import become_subreaper, dev_shm, leftovers, machine, size_label

BENCH_DIR = Path(__file__).resolve().parent
KIB, MIB = 1 << 10, 1 << 20
DEFAULT_CASES = "8:1M,64K:0,64K:1M,64K:16M,64K:64M,64M:64M"
CONTENDERS = ("mproc", "python")
LABELS = {"mproc": "mproc", "python": "Python mp (fork)"}


class Failure(Exception):
    pass


def parse_bytes(text: str) -> int:
    units = {"K": KIB, "M": MIB, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def parse_cases(text: str) -> list[tuple[int, int]]:
    cases = []
    for item in text.split(","):
        size, _, buffered = item.partition(":")
        s, b = parse_bytes(size), parse_bytes(buffered)
        if s < 8 or s % 8 or b < 0 or b % s:
            raise argparse.ArgumentTypeError(f"bad case {item}: S a multiple of 8, B a multiple of S")
        cases.append((s, b))
    return cases


def run(cmd: list[str], timeout: float) -> dict[str, float]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise Failure(f"not found: {cmd[0]} (build it first: scripts/bench.sh)") from None
    except subprocess.TimeoutExpired:
        raise Failure(f"took over {timeout} s: {' '.join(cmd)}") from None
    if done.returncode != 0:
        raise Failure(f"exit status {done.returncode}\n$ {' '.join(cmd)}\n{done.stderr}")
    rows = list(csv.reader(io.StringIO(done.stdout)))
    if not rows or rows[0] != ["contender", "quantity", "value"]:
        raise Failure(f"unexpected output of {' '.join(cmd)}:\n{done.stdout}")
    return {q: float(v) for _, q, v in rows[1:] if q}


def measure(args, extra: list[str]) -> dict[str, dict[str, float]]:
    """Both contenders over one case, --repeat times alternating who goes first: the median
    of each quantity."""
    commands = {"mproc": [str(args.build_dir / "bench" / "mproc_memory_bench"), *extra],
                "python": [args.python, str(BENCH_DIR / "memory_bench.py"), *extra]}
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
    for r in range(args.repeat):
        for c in (CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]):
            runs[c].append(run(commands[c], args.timeout))
    return {c: {q: statistics.median(run[q] for run in runs[c]) for q in runs[c][0]} for c in CONTENDERS}


def kib(x: float) -> str:
    if abs(x) >= 10 * MIB:
        return f"{x / MIB:.1f} MiB"
    return f"{x / KIB:.0f} KiB"


def write_csv(path: Path, lines: list[dict]) -> None:
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for line in lines for k in line)))
        out.writeheader()
        for line in lines:
            out.writerow({k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in line.items()})


def pool_table(args) -> list[dict]:
    figures = measure(args, ["--part", "pool", "--processes", str(args.processes), "--idle-ms", str(args.idle_ms)])
    lines = [dict(contender=c, **figures[c]) for c in CONTENDERS]
    write_csv(args.out_dir / "memory-pool.csv", lines)
    print(f"\nidle pool of {args.processes} workers after a warm-up (bytes from /proc/PID/smaps_rollup; "
          f"USS = private pages; whole pool = Σ PSS of the parent and the pool's processes − the parent's "
          f"PSS before)\n")
    print("| contender | worker USS (mean / max) | worker PSS | worker RSS | zygote USS / PSS | parent PSS Δ | "
          "whole pool PSS Δ | shared files |")
    print("|---|---|---|---|---|---|---|---|")
    for c in CONTENDERS:
        f = figures[c]
        zygote = f"{kib(f['zygote_uss'])} / {kib(f['zygote_pss'])}" if "zygote_uss" in f else "– (none)"
        print(f"| {LABELS[c]} | {kib(f['worker_uss'])} / {kib(f['worker_uss_max'])} | {kib(f['worker_pss'])} | "
              f"{kib(f['worker_rss'])} | {zygote} | {kib(f['parent_pss_delta'])} | {kib(f['total_pss_delta'])} | "
              f"{kib(f['shared_files'])} |")
    return lines


def queue_table(args) -> list[dict]:
    lines = []
    for size, buffered in args.queue_cases:
        figures = measure(args, ["--part", "queue", "--message-bytes", str(size), "--buffered-bytes", str(buffered),
                                 "--idle-ms", str(args.idle_ms)])
        for c in CONTENDERS:
            lines.append(dict(contender=c, message_bytes=size, buffered_bytes=buffered, **figures[c]))
    write_csv(args.out_dir / "memory-queue.csv", lines)
    print("\nqueue holding B bytes of unconsumed S-byte messages (unbounded; a producer process put them, "
          "nobody has read yet), then drained\n"
          "(file: mproc's memfd, allocated bytes; pipe: Python's pipe buffer; producer / consumer: growth of "
          "the process's anonymous memory, Pss_Anon; total = file + pipe + producer + consumer)\n")
    print("| S | B | contender | file | pipe | producer | consumer | total | total / B | "
          "after drain: file | producer | consumer | total |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for line in lines:
        ratio = f"{line['total'] / line['buffered_bytes']:.2f}×" if line["buffered_bytes"] else "–"
        print(f"| {size_label(line['message_bytes'])} | {size_label(line['buffered_bytes'])} | "
              f"{LABELS[line['contender']]} | {kib(line['file'])} | {kib(line['pipe'])} | "
              f"{kib(line['producer_anon'])} | {kib(line['consumer_anon'])} | {kib(line['total'])} | {ratio} | "
              f"{kib(line['drained_file'])} | {kib(line['drained_producer_anon'])} | "
              f"{kib(line['drained_consumer_anon'])} | {kib(line['drained_total'])} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, default=Path("build-release"),
                        help="where the benchmark programs were built (default: build-release)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the CSVs go (default: the build dir)")
    parser.add_argument("--parts", default="pool,queue", help="pool, queue or both (default)")
    parser.add_argument("--processes", type=int, default=2, help="pool workers (default 2)")
    parser.add_argument("--queue-cases", type=parse_cases, default=parse_cases(DEFAULT_CASES),
                        help=f"comma-separated S:B, message size : bytes buffered (default {DEFAULT_CASES})")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; each quantity's median (default 1)")
    parser.add_argument("--idle-ms", type=int, default=500, help="idle time before each measurement (default 500)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the Python peer")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one program may take")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if not parts or set(parts) - {"pool", "queue"}:
        parser.error("--parts takes pool, queue or both")
    if args.processes < 1 or args.repeat < 1 or args.idle_ms < 0:
        parser.error("--processes and --repeat must be >= 1, --idle-ms >= 0")
    args.build_dir = args.build_dir.resolve()
    args.out_dir = (args.out_dir or args.build_dir).resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    become_subreaper()
    shm_before = dev_shm()
    t0 = time.monotonic()
    print(f"\n== memory: mproc beside Python's multiprocessing ({machine()})")
    status = 0
    try:
        if "pool" in parts:
            pool_table(args)
        if "queue" in parts:
            queue_table(args)
    except Failure as e:
        print(f"memory.py: {e}", file=sys.stderr)
        status = 2
    written = [args.out_dir / f"memory-{p}.csv" for p in parts]
    print(f"\nwritten: {', '.join(str(w) for w in written if w.exists())}")
    if leftovers("memory.py", shm_before):
        status = 2
    print(f"memory: {time.monotonic() - t0:.0f} s in all", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
