#!/usr/bin/env python3
"""Writes a test input to standard output: `large` (about 150 KiB, so more than one
128 KiB zstd block) or `small` (one line).

Lines are eight words drawn from sixteen; seven lines in eight repeat an earlier line, so
matches reach back across block boundaries. tests/c_frames.rs has the same generator
(`corpus`): keep the two in step."""
import sys

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
         "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa"]
MASK = (1 << 64) - 1


def corpus(lines):
    state = 42

    def next_value():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
        return state >> 33

    out = []
    for i in range(lines):
        if i > 0 and next_value() % 8 != 0:
            out.append(out[next_value() % i])
        else:
            words = [WORDS[next_value() % 16] for _ in range(8)]
            out.append(" ".join(words) + "\n")
    return "".join(out).encode()


if __name__ == "__main__":
    which = sys.argv[1]
    lines = {"large": 3000, "small": 1}[which]
    sys.stdout.buffer.write(corpus(lines))
