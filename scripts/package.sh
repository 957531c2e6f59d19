#!/usr/bin/env bash
# Builds the static (musl) release binary and assembles the Azure Functions publish folder:
#   publish/host.json, publish/<function>/function.json, publish/suroga, publish/local.settings.json
# Publish from that folder: `cd publish && func azure functionapp publish <APP> --custom`.
# Usage: scripts/package.sh [out-dir]   (default: publish)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-publish}"
target=x86_64-unknown-linux-musl

if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
# C dependencies (SQLite, ring, aws-lc) need a musl C compiler: Debian's musl-tools gives musl-gcc.
if [[ -z "${CC_x86_64_unknown_linux_musl:-}" ]]; then
  command -v musl-gcc >/dev/null || { echo "musl-gcc not found: apt-get install musl-tools" >&2; exit 1; }
  export CC_x86_64_unknown_linux_musl=musl-gcc
fi

cargo build --release --locked --target "$target"
bin="target/$target/release/suroga"
# The binary packages itself: it checks it is static (or needs glibc <= 2.31) before copying.
"$bin" functions package --out "$out" --binary "$bin"
