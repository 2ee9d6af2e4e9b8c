#!/usr/bin/env bash
# Build the JavaScript example plugin into a WebAssembly component.
#
#   ./build.sh                 # -> deactivate-then-delete-js.wasm next to this script
#   ./build.sh -o OUT.wasm
#
# Needs node (20+) and npm; installs the pinned toolchain from
# package-lock.json (`npm ci`) the first time.
#
# componentize-js is called directly (`jco componentize` fails in a fresh
# install: its nested preview2-shim 0.26 cannot see the filesystem). Every
# feature is disabled (-d stdio random clocks http fetch-event): the engine
# refuses a plugin that imports WASI beyond a few cli/io stubs, and so the
# component imports only engine:plugin/host. console.log goes nowhere inside
# it: log with the host's `log` instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/deactivate-then-delete-js.wasm"

while [ $# -gt 0 ]; do
  case "$1" in
    -o) [ $# -ge 2 ] || { echo "build.sh: -o needs a file" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (usage: build.sh [-o OUT.wasm])" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

# The contract: the repository's WIT.
wit="$(cd "$here/../../plugins/sdk/wit/v0.2.0" && pwd)"

cd "$here"
cjs="$here/node_modules/.bin/componentize-js"
if [ ! -x "$cjs" ]; then
  npm ci --no-audit --no-fund >&2
fi
"$cjs" --wit "$wit" --world-name plugin -d stdio random clocks http fetch-event -o "$out" app.js
echo "built $out ($(wc -c <"$out") bytes)"
