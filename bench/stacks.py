"""Summarise py-spy collapsed stacks (``py-spy record --format raw``): where the time goes.

Prints the functions with the most samples on the stack (inclusive) and at the top
(exclusive), restricted to the worker's own modules with ``--ours``.

    .venv/bin/python bench/stacks.py worker.stacks [--top 40] [--ours]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--ours", action="store_true", help="only frames in worker/")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    total = 0
    for line in args.stacks.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            if not args.ours or "worker/" in frame:
                inclusive[frame] += count
        exclusive[frames[-1]] += count
    print(f"{total} samples")
    print("\ninclusive (on the stack):")
    for frame, count in inclusive.most_common(args.top):
        print(f"{count / total:6.1%}  {frame}")
    print("\nexclusive (on top):")
    for frame, count in exclusive.most_common(args.top):
        print(f"{count / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
