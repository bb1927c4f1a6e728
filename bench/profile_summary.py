"""Question: where does a process spend its CPU? Sums py-spy's collapsed stacks (`--format raw`).

Prints the functions with the most samples on top of the stack (self) and anywhere
in the stack (inclusive), as a share of all samples. Idle samples (the event loop
waiting in `select`/`epoll`) are left out of the total, so shares are of busy time.

Command: `.venv/bin/python bench/profile_summary.py FILE [--top 40] [--match SUBSTRING]`
(`--match` keeps only stacks through a frame containing SUBSTRING).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = ("select (selectors.py", "epoll", "_run_once (asyncio", "run_forever")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:]*)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`function (path/to/file.py:123)` → `function (file.py)`: lines merged, paths shortened."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['function']} ({Path(match['file']).name})"


def summarise(path: Path, match: str | None) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [frame_name(frame) for frame in stack.split(";")]
        if match and not any(match in frame for frame in frames):
            continue
        if any(idle in frames[-1] for idle in IDLE):
            continue
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return own, inclusive, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match")
    args = parser.parse_args()
    own, inclusive, total = summarise(args.file, args.match)
    print(f"busy samples: {total}")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"\n--- {title} ---")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / max(total, 1):6.1f}%  {name}")


if __name__ == "__main__":
    main()
