#!/usr/bin/env bash
# Runs the browser suite inside a network namespace of its own: loopback plus a veth pair on
# test-only addresses (198.18.7.1 and .2, RFC 2544 benchmarking space). Janus never offers
# loopback candidates, so browser <-> Janus media flows over the veth pair; there is no default
# route and no other interface, so no packet can leave the namespace. Needs root (unshare).
# Usage: web/tests/run.sh [node --test arguments, e.g. a file or --test-name-pattern=...]
set -euo pipefail
cd "$(dirname "$0")/.."
files=("$@")
if [ ${#files[@]} -eq 0 ]; then files=(tests/*.test.mjs); fi
exec unshare --net -- bash -c '
  set -euo pipefail
  ip link set lo up
  ip link add v0 type veth peer name v1
  ip addr add 198.18.7.1/24 dev v0
  ip addr add 198.18.7.2/24 dev v1
  ip link set v0 up
  ip link set v1 up
  export SUROGA_TEST_NETNS=1
  exec node --test --test-concurrency=1 --test-timeout=300000 "$@"
' run-browser-suite "${files[@]}"
