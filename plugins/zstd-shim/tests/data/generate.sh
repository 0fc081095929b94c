#!/bin/sh
# Regenerates the reference frames in this directory with the C zstd command-line tool
# (Debian: `apt-get install zstd`; these were made with v1.5.4). The inputs are not kept:
# `corpus.py` writes them, and tests/c_frames.rs rebuilds the same bytes to compare with.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 corpus.py large > "$tmp/large"
python3 corpus.py small > "$tmp/small"
zstd --version
# From a file, so the frame header records the content size; with a checksum (the default).
for level in 1 3 19; do
    zstd -q -f "-$level" "$tmp/large" -o "large-level$level.zst"
done
# Through a pipe: no content size in the header, and no checksum.
python3 corpus.py large | zstd -q -3 --no-check -c > large-level3-stream-nocheck.zst
# A tiny input: a single-segment frame with a one-byte content size.
zstd -q -f -3 "$tmp/small" -o small-level3.zst
# A negative ("fast") level.
zstd -q -f --fast=5 "$tmp/large" -o large-fast5.zst
ls -l ./*.zst
