#!/usr/bin/env bash
# Build the Python example plugin into a WebAssembly component.
#
#   ./build.sh                 # -> deactivate-then-delete-py.wasm next to this script
#   ./build.sh -o OUT.wasm
#
# Needs componentize-py (pinned in tests/plugin-toolchains/requirements.txt;
# scripts/plugin-toolchains installs it into .venv): taken from
# $ENGINE_PY_TOOLCHAIN (a venv's bin directory) when set, else from PATH.
#
# --stub-wasi: the engine refuses a plugin that imports WASI beyond a few
# cli/io stubs; this replaces every WASI import of CPython with a trap, so
# the component imports only engine:plugin/host (print() and time.time()
# trap inside it: log with the host's log instead).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/deactivate-then-delete-py.wasm"

while [ $# -gt 0 ]; do
  case "$1" in
    -o) [ $# -ge 2 ] || { echo "build.sh: -o needs a file" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (usage: build.sh [-o OUT.wasm])" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

if [ -n "${ENGINE_PY_TOOLCHAIN:-}" ]; then
  cpy="$ENGINE_PY_TOOLCHAIN/componentize-py"
else
  cpy="$(command -v componentize-py || true)"
fi
if [ -z "$cpy" ] || [ ! -x "$cpy" ]; then
  echo "build.sh: componentize-py not found (set ENGINE_PY_TOOLCHAIN to a venv's bin dir, or run scripts/plugin-toolchains)" >&2
  exit 1
fi

# The contract: the repository's WIT.
wit="$(cd "$here/../../plugins/sdk/wit/v0.2.0" && pwd)"

# Build from a staging copy of the sources: componentize-py writes __pycache__
# next to the app, and would import a stale generated wit_world/ found there.
# Every top-level .py but the tests is copied (packages: copy them too).
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
for f in "$here"/*.py; do
  case "$(basename "$f")" in test_*) ;; *) cp "$f" "$stage/" ;; esac
done
cd "$stage"
"$cpy" -d "$wit" -w plugin componentize app --stub-wasi -o "$out"
echo "built $out ($(wc -c <"$out") bytes)"
