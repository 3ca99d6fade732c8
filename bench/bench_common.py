"""What the Python peers of bench/ share (the C++ programs share bench/bench_support.hpp):
their command line, the checksum their sessions fold results into, how a round splits into
sessions, how a failure ends the program, and the figure a row prints.

(Named bench_common, not common or queue: a script's folder comes first on sys.path, so a
name of the standard library here would shadow it for every script of bench/.)
"""

import argparse
import sys

MASK = (1 << 64) - 1


class Mismatch(Exception):
    """A result that is not the one expected; run() reports it and exits with 2."""


def checksum(values, h=0xCBF29CE484222325):
    """FNV-1a over 64-bit words (ints in [0, 2**64)), as in the C++ programs."""
    for v in values:
        h = ((h ^ v) * 0x100000001B3) & MASK
    return h


def fail(prog, message):
    """Reports a failure as the C++ programs do, "<prog>: <message>" on stderr, and exits 2."""
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(2)


def run(main, prog, failures=(Mismatch,)):
    """Runs main(); an exception of the kinds in `failures` ends the program through fail()."""
    try:
        main()
    except failures as e:
        fail(prog, e)


def parser(doc, iterations, rows=None):
    """A parser with the script's docstring as its help, and the flags every peer takes first:
    --row (one of `rows`, when given), --rounds (default 7) and --iterations (default
    `iterations`). The script adds its own after them."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if rows is not None:
        p.add_argument("--row", required=True, choices=sorted(rows))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iterations", type=int, default=iterations)
    return p


def fill_defaults(args, **defaults):
    """Gives each flag of `defaults` that the command line left out (None) its default."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def slice_size(total, slices, s):
    """How many of `total` iterations session `s` of `slices` runs, as the C++ programs split them."""
    return total // slices + (1 if s < total % slices else 0)


def figure(metric, seconds, units):
    """The row's figure: time per unit for per_op_us, otherwise units per second."""
    if metric == "per_op_us":
        return seconds * 1e6 / units
    return units / seconds  # msgs_per_s, tasks_per_s, items_per_s, or gb_per_s (units in GB)


def start_child(ctx, target, *args):
    """A daemon child of context `ctx` running target(*args), started."""
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p
