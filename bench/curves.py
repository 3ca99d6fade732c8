#!/usr/bin/env python3
"""The throughput curves of bench/: how mproc scales beside its peers, drawn with gnuplot.

queue   queue throughput against message size, 8 B → 64 MiB (--sizes), 1 producer process →
        1 consumer process: mproc::queue<std::vector<std::uint8_t>> ("mproc"), the
        fixed-size std::array<std::uint8_t, S> a user would pick for small records
        ("mproc_array", at 8, 64, 512 and 4096 B), Boost.Interprocess message_queue
        ("boost", when the program was built with Boost) — bench/queue_curve_bench.cpp —
        and Python's mp.Queue with bytes, fork ("python_queue", bench/queue_curve_bench.py).
        Every queue is bounded to about --in-flight-bytes (default 16 MiB) of messages: its
        maxsize is that / S, within [2, 65536] (Boost's queue must be bounded; all share
        the bound). Reported in bytes/s and msgs/s.
map     pool map throughput against worker count, 1 → 2 × cpu_count() (--workers):
        mproc::pool::map of x*x over ints, default chunksize (mproc_pool_bench --row map
        --processes P) and Python's Pool.map(chunksize=10000), fork (pool_bench.py --row
        map --processes P). items/s.

Each point is --rounds (default 5, at least 5) interleaved rounds: a round runs every
program of the point once (one round each, through compare.py's run_round), rotating which
program goes first; the point's figure is each contender's median over its rounds, shown
with the min–max range. Iterations adapt so that a session takes about --session-seconds
(default 0.15): round 0 uses a model of each program's speed, later rounds the slowest
contender's rate in the round before (a program runs all its contenders over the same
count), with at least 3 messages per session; the rates do not depend on the count. With
the defaults the whole run takes about 2–3 minutes on 2 cores.

Writes into --out-dir (default: the build dir):
  queue-throughput-vs-size.csv         bytes,contender,rounds,median/min/max bytes/s, median msgs/s
  queue-throughput-vs-size-rounds.csv  every round's figure, with its iteration count
  queue-throughput-vs-size.png         log-log, bytes/s, one line per contender (min–max bars)
  map-throughput-vs-workers.csv, -rounds.csv, .png   the same for the map curve (items/s)
  curves.gp                            the gnuplot script that drew them
and prints a Markdown summary of both curves. --publish DIR copies the PNGs into DIR (the
README shows docs/perf/*.png).

Hygiene: every program checks its results (checksums), so a broken path cannot look fast.
The driver makes itself a child subreaper, so that a process any benchmark program leaves
behind is re-parented to it; at the end it reports (and kills, by pid) any such process and
any new file in /dev/shm, and exits with 2 if there was one.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import compare  # the side-by-side driver: its Program helpers and run_round

BENCH_DIR = Path(__file__).resolve().parent
KIB, MIB = 1 << 10, 1 << 20
DEFAULT_SIZES = [8, 64, 512, 4 * KIB, 32 * KIB, 256 * KIB, 2 * MIB, 16 * MIB, 64 * MIB]
ARRAY_SIZES = {8, 64, 512, 4096}  # mproc_array's fixed-size types (queue_curve_bench.cpp)

LABELS = {
    "mproc": "mproc queue<vector<uint8_t>>",
    "mproc_array": "mproc queue<array<uint8_t,S>>",
    "boost": "Boost.Interprocess message_queue",
    "python_queue": "Python mp.Queue, bytes (fork)",
    "python_pool": "Python Pool.map chunksize=10000 (fork)",
}
MAP_LABELS = {"mproc": "mproc pool::map", "python_pool": LABELS["python_pool"]}


# ---- hygiene, shared with bench/memory.py -------------------------------------------------

def become_subreaper() -> None:
    """Orphaned descendants of the benchmark programs are re-parented to this process."""
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("curves.py: prctl(PR_SET_CHILD_SUBREAPER) failed: leftover processes go unnoticed", file=sys.stderr)


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def leftovers(prog: str, shm_before: set[str]) -> list[str]:
    """What the benchmark programs left behind: processes re-parented to this one (killed by
    pid and reaped here) and new files in /dev/shm. Returns one line per problem."""
    problems = []
    time.sleep(0.2)  # daemon children die with their parent: give them the time to
    me = os.getpid()
    stray = set()
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as f:
            stray.update(int(p) for p in f.read().split())
    for pid in sorted(stray):  # every program run here has been waited for: these are not ours
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            os.kill(pid, signal.SIGKILL)
        except OSError:
            cmd = "?"
        problems.append(f"process {pid} ({cmd or 'ended'}) outlived its benchmark program; killed")
    deadline = time.monotonic() + 2
    while True:  # reap what was re-parented here
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        elif pid not in stray:
            problems.append(f"process {pid} outlived its benchmark program (and has ended since)")
    for name in sorted(dev_shm() - shm_before):
        problems.append(f"/dev/shm/{name} was left behind")
    for p in problems:
        print(f"{prog}: {p}", file=sys.stderr)
    return problems


def gnuplot(script: str, out_dir: Path, name: str) -> bool:
    """Runs `script` with gnuplot (saved as out_dir/name); false, with a message, if gnuplot
    is missing or fails."""
    path = out_dir / name
    path.write_text(script)
    if shutil.which("gnuplot") is None:
        print("curves.py: gnuplot not found (Debian gnuplot-nox): no PNG drawn", file=sys.stderr)
        return False
    done = subprocess.run(["gnuplot", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"curves.py: gnuplot failed:\n{done.stderr}", file=sys.stderr)
        return False
    return True


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.node()}, {os.cpu_count()} CPUs, load {load}"


# ---- measuring a point ---------------------------------------------------------------------

@dataclass
class Side:
    """One program of a point: how to make it for n iterations, and its speed model."""

    key: str
    make: object          # n -> compare.Program
    first_n: int           # round 0's count, from the model
    n_max: int
    per_unit: float = 1.0  # the count is n units of work per contender (messages, items)


def size_label(n: int) -> str:
    for unit, div in (("MiB", MIB), ("KiB", KIB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def adapt(side: Side, figures: dict[str, float], seconds: float, n_min: int) -> int:
    """The count for the next round: `seconds` of the slowest contender the program runs."""
    slowest = min(figures.values())
    return max(n_min, min(side.n_max, int(slowest * seconds)))


def measure_point(row: compare.Row, sides: list[Side], args, n_min: int) -> tuple[dict, dict]:
    """Interleaved rounds of one point: {contender: [figure per round]}, {contender: [count]}."""
    per_round: dict[str, list[float]] = {c.key: [] for c in row.contenders}
    counts: dict[str, list[int]] = {c.key: [] for c in row.contenders}
    n = {s.key: s.first_n for s in sides}
    t0 = time.monotonic()
    for r in range(args.rounds):
        order = [sides[(r + k) % len(sides)] for k in range(len(sides))]  # rotate who goes first
        for side in order:
            figures = compare.run_round(row, side.make(n[side.key]), r, args, [])  # no server
            for key, value in figures.items():
                per_round[key].append(value)
                counts[key].append(n[side.key])
            n[side.key] = adapt(side, figures, args.session_seconds, n_min)
    for key, values in per_round.items():
        if len(values) != args.rounds:
            raise compare.BenchError(f"{row.name}: contender {key} has {len(values)} figures for {args.rounds} rounds")
    print(f"  {row.name}: {args.rounds} rounds in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return per_round, counts


def cpp_contenders(build_dir: Path) -> list[str]:
    exe = build_dir / "bench" / "mproc_queue_curve_bench"
    try:
        done = subprocess.run([str(exe), "--contenders"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise compare.BenchError(f"{exe}: {e} (build it first: scripts/bench.sh)") from None
    return done.stdout.split()


# ---- queue: throughput against message size ------------------------------------------------

def queue_curve(args) -> list[dict]:
    """Runs every size; returns one summary line per (size, contender)."""
    built = cpp_contenders(args.build_dir)
    lines, rounds_out = [], []
    for size in args.sizes:
        maxsize = max(2, min(65_536, args.in_flight_bytes // size))
        cpp_keys = [k for k in built if k != "mproc_array" or size in ARRAY_SIZES]
        keys = cpp_keys + ["python_queue"]
        row = compare.Row(f"queue {size_label(size)}", f"{size_label(size)} messages, maxsize {maxsize}",
                          compare.throughput("msgs_per_s", "msg/s"),
                          [compare.Contender(k, LABELS[k]) for k in keys], programs=[])

        def common(n: int, size=size, maxsize=maxsize) -> list[str]:
            warmup = min(10_000, max(1, n // 8), (4 * MIB) // size)
            return ["--bytes", str(size), "--maxsize", str(maxsize), "--warmup", str(warmup)]

        # Models for round 0 (2-core VM): mproc ~150 ns + 1 GB/s per message, Python ~15 µs
        # + 0.5 GB/s; later rounds measure.
        cpp_n = int(args.session_seconds / (150e-9 + size / 1e9))
        py_n = int(args.session_seconds / (15e-6 + size / 0.5e9))
        sides = [
            Side("cpp", lambda n, common=common: compare.cpp("mproc_queue_curve_bench", n, *common(n)),
                 max(3, min(2_000_000, cpp_n)), 2_000_000),
            Side("py", lambda n, common=common: compare.py("queue_curve_bench.py", n, *common(n)),
                 max(3, min(200_000, py_n)), 200_000),
        ]
        per_round, counts = measure_point(row, sides, args, n_min=3)
        for key in keys:
            msgs = per_round[key]
            for r, value in enumerate(msgs):
                rounds_out.append(dict(bytes=size, round=r, contender=key, msgs_per_s=f"{value:.6g}",
                                       bytes_per_s=f"{value * size:.6g}", iterations=counts[key][r]))
            lines.append(dict(bytes=size, contender=key, rounds=len(msgs), maxsize=maxsize,
                              median_bytes_per_s=statistics.median(msgs) * size,
                              min_bytes_per_s=min(msgs) * size, max_bytes_per_s=max(msgs) * size,
                              median_msgs_per_s=statistics.median(msgs)))
    write_csv(args.out_dir / "queue-throughput-vs-size-rounds.csv", rounds_out)
    write_csv(args.out_dir / "queue-throughput-vs-size.csv", lines)
    return lines


# ---- map: throughput against worker count ---------------------------------------------------

def map_curve(args) -> list[dict]:
    lines, rounds_out = [], []
    for workers in args.workers:
        row = compare.Row(f"map {workers} worker(s)", f"map of x*x over ints, {workers} workers",
                          compare.throughput("items_per_s", "items/s"),
                          [compare.Contender(k, MAP_LABELS[k]) for k in ("mproc", "python_pool")], programs=[])
        extra = ["--row", "map", "--processes", str(workers)]
        sides = [
            # pool_bench.cpp takes at most 100M items; Python's list of them would not fit.
            Side("cpp", lambda n: compare.cpp("mproc_pool_bench", n, *extra),
                 max(100_000, int(args.session_seconds * 20e6)), 50_000_000),
            Side("py", lambda n: compare.py("pool_bench.py", n, *extra),
                 max(100_000, int(args.session_seconds * 4e6)), 2_000_000),
        ]
        per_round, counts = measure_point(row, sides, args, n_min=100_000)
        for key, values in per_round.items():
            for r, value in enumerate(values):
                rounds_out.append(dict(workers=workers, round=r, contender=key, items_per_s=f"{value:.6g}",
                                       iterations=counts[key][r]))
            lines.append(dict(workers=workers, contender=key, rounds=len(values),
                              median_items_per_s=statistics.median(values), min_items_per_s=min(values),
                              max_items_per_s=max(values)))
    write_csv(args.out_dir / "map-throughput-vs-workers-rounds.csv", rounds_out)
    write_csv(args.out_dir / "map-throughput-vs-workers.csv", lines)
    return lines


# ---- output ---------------------------------------------------------------------------------

def write_csv(path: Path, lines: list[dict]) -> None:
    if not lines:
        return
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(lines[0]))
        out.writeheader()
        for line in lines:
            out.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in line.items()})


def datablock(name: str, rows: list[tuple]) -> str:
    return f"${name} << EOD\n" + "\n".join(" ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in r)
                                            for r in rows) + "\nEOD\n"


def plot_script(queue_lines: list[dict], map_lines: list[dict], args) -> str:
    """The gnuplot script of both PNGs (a curve that was not run is left out)."""
    style = ("set terminal pngcairo noenhanced size 1100,700 font 'DejaVu Sans,11'\n"
             "set key top left Left reverse box opaque\nset grid xtics ytics mxtics mytics lc rgb '#dddddd'\n"
             "set datafile separator whitespace\n")
    note = f"{machine()}; medians of {args.rounds} interleaved rounds, bars min–max"
    parts = [style]
    if queue_lines:
        keys = list(dict.fromkeys(line["contender"] for line in queue_lines))
        for i, key in enumerate(keys):
            parts.append(datablock(f"q{i}", [(line["bytes"], line["median_bytes_per_s"], line["min_bytes_per_s"],
                                              line["max_bytes_per_s"])
                                             for line in queue_lines if line["contender"] == key]))
        tics = ", ".join(f"'{size_label(s)}' {s}" for s in sorted({line["bytes"] for line in queue_lines}))
        plots = ", ".join(f"$q{i} using 1:2:3:4 with yerrorlines lw 2 pt 7 title '{LABELS[k]}'"
                          for i, k in enumerate(keys))
        parts.append(
            f"set output '{args.out_dir / 'queue-throughput-vs-size.png'}'\n"
            "set title \"Queue throughput vs message size: 1 producer process → 1 consumer process\\n"
            f"{note}; queues bounded to ~{size_label(args.in_flight_bytes)} in flight\" noenhanced\n"
            "set logscale xy\nset xlabel 'message size'\nset ylabel 'payload bytes/s'\n"
            f"set xtics ({tics}) rotate by -30\nset format y '%.0s %cB/s'\nset autoscale\n"
            f"set xrange [{min(line['bytes'] for line in queue_lines) / 1.5}:"
            f"{max(line['bytes'] for line in queue_lines) * 1.5}]\n"
            f"plot {plots}\n"
            "unset logscale\nunset xtics\nset xtics autofreq norotate\nunset format\n")
    if map_lines:
        keys = list(dict.fromkeys(line["contender"] for line in map_lines))
        for i, key in enumerate(keys):
            parts.append(datablock(f"m{i}", [(line["workers"], line["median_items_per_s"], line["min_items_per_s"],
                                              line["max_items_per_s"])
                                             for line in map_lines if line["contender"] == key]))
        plots = ", ".join(f"$m{i} using 1:2:3:4 with yerrorlines lw 2 pt 7 title '{MAP_LABELS[k]}'"
                          for i, k in enumerate(keys))
        workers = sorted({line["workers"] for line in map_lines})
        parts.append(
            f"set output '{args.out_dir / 'map-throughput-vs-workers.png'}'\n"
            "set title \"Pool map throughput vs workers: map of x*x over ints\\n"
            f"{note}; {os.cpu_count()} CPUs (dashed)\" noenhanced\n"
            "set logscale y\nset xlabel 'workers'\nset ylabel 'items/s'\nset format y '%.0s%c'\n"
            f"set xrange [{workers[0] - 0.5}:{workers[-1] + 0.5}]\nset xtics 1\nset autoscale y\n"
            f"set arrow 1 from {os.cpu_count()}, graph 0 to {os.cpu_count()}, graph 1 nohead dt 2 lc rgb '#888888'\n"
            f"plot {plots}\n")
    return "".join(parts)


def fmt_rate(x: float, unit: str) -> str:
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def print_summary(queue_lines: list[dict], map_lines: list[dict], args) -> None:
    print(f"\n== curves: medians of {args.rounds} interleaved rounds ({machine()})")
    if queue_lines:
        keys = list(dict.fromkeys(line["contender"] for line in queue_lines))
        by = {(line["bytes"], line["contender"]): line for line in queue_lines}
        print("\nqueue throughput vs message size (1 → 1 process; bytes/s, msgs/s; "
              f"bounded to ~{size_label(args.in_flight_bytes)} in flight)\n")
        print("| size | maxsize | " + " | ".join(LABELS[k] for k in keys) + " |")
        print("|---|---|" + "---|" * len(keys))
        for size in sorted({line["bytes"] for line in queue_lines}):
            cells = []
            for k in keys:
                line = by.get((size, k))
                cells.append("–" if line is None else
                             f"{fmt_rate(line['median_bytes_per_s'], 'B/s')}, {fmt_rate(line['median_msgs_per_s'], 'msg/s')}")
            maxsize = next(line["maxsize"] for line in queue_lines if line["bytes"] == size)
            print(f"| {size_label(size)} | {maxsize} | " + " | ".join(cells) + " |")
    if map_lines:
        by = {(line["workers"], line["contender"]): line for line in map_lines}
        print("\npool map throughput vs workers (x*x over ints; items/s)\n")
        print(f"| workers | {MAP_LABELS['mproc']} | {MAP_LABELS['python_pool']} | mproc / Python |")
        print("|---|---|---|---|")
        for w in sorted({line["workers"] for line in map_lines}):
            m, p = by[(w, "mproc")]["median_items_per_s"], by[(w, "python_pool")]["median_items_per_s"]
            print(f"| {w} | {fmt_rate(m, 'items/s')} | {fmt_rate(p, 'items/s')} | {m / p:.1f}× |")


def int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, default=Path("build-release"),
                        help="where the benchmark programs were built (default: build-release)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where CSVs and PNGs go (default: the build dir)")
    parser.add_argument("--curves", default="queue,map", help="which curves (default: queue,map)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per point, at least 5 (default 5)")
    parser.add_argument("--sizes", type=int_list, default=DEFAULT_SIZES,
                        help="queue message sizes in bytes, multiples of 8 (default 8 B to 64 MiB, ×8 steps)")
    parser.add_argument("--workers", type=int_list, default=None,
                        help="map worker counts (default 1 to 2 × cpu_count())")
    parser.add_argument("--session-seconds", type=float, default=0.15,
                        help="the time each session aims for (default 0.15)")
    parser.add_argument("--in-flight-bytes", type=int, default=16 * MIB,
                        help="queues are bounded to this many bytes of messages (default 16 MiB)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the Python peers")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one program round may take")
    parser.add_argument("--publish", type=Path, default=None, help="copy the PNGs into this directory")
    args = parser.parse_args()
    curves = [c for c in args.curves.split(",") if c]
    if not curves or set(curves) - {"queue", "map"}:
        parser.error("--curves takes queue, map or both")
    if args.rounds < 5:
        parser.error("--rounds must be at least 5: each point is a median of several rounds")
    if any(s % 8 for s in args.sizes):
        parser.error("--sizes must be multiples of 8")
    if args.session_seconds <= 0 or args.in_flight_bytes < 8:
        parser.error("--session-seconds must be positive, --in-flight-bytes at least 8")
    args.workers = args.workers or list(range(1, 2 * (os.cpu_count() or 1) + 1))
    args.scale = 1.0  # compare.run_round's multiplier: the counts here are already adapted
    args.build_dir = args.build_dir.resolve()
    args.out_dir = (args.out_dir or args.build_dir).resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    become_subreaper()
    shm_before = dev_shm()
    t0 = time.monotonic()
    print(f"mproc curves: {machine()}, {platform.system()} {platform.release()}, Python "
          f"{platform.python_version()}", file=sys.stderr)
    queue_lines, map_lines = [], []
    status = 0
    try:
        if "queue" in curves:
            queue_lines = queue_curve(args)
        if "map" in curves:
            map_lines = map_curve(args)
    except compare.BenchError as e:
        print(f"curves.py: {e}", file=sys.stderr)
        status = 2
    print_summary(queue_lines, map_lines, args)
    pngs = [args.out_dir / f"{name}.png" for name, lines in
            (("queue-throughput-vs-size", queue_lines), ("map-throughput-vs-workers", map_lines)) if lines]
    if pngs and gnuplot(plot_script(queue_lines, map_lines, args), args.out_dir, "curves.gp"):
        print(f"\nwritten: {', '.join(str(p) for p in pngs)} (and their CSVs)")
        if args.publish is not None:
            args.publish.mkdir(parents=True, exist_ok=True)
            for png in pngs:
                shutil.copy2(png, args.publish / png.name)
            print(f"published into {args.publish}")
    if leftovers("curves.py", shm_before):
        status = 2
    print(f"curves: {time.monotonic() - t0:.0f} s in all", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
