#!/usr/bin/env bash
# Build the plugin into a WebAssembly component.
#
#   ./build.sh                 # -> {{name}}.wasm next to this script
#   ./build.sh -o OUT.wasm
#
# Needs node (20.6+) and npm. Uses componentize-js from $ENGINE_JS_TOOLCHAIN
# (a node_modules/.bin directory that has it) when set, else from this
# project's node_modules, installed from package-lock.json (`npm ci`) the
# first time. The contract (WIT) is in wit/.
#
# Every feature is disabled (-d stdio random clocks http fetch-event): the
# engine refuses a plugin that imports WASI beyond a few cli/io stubs, and
# so the component imports only engine:plugin/host. console.log goes
# nowhere inside it: log with the host's `log` instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/{{name}}.wasm"

while [ $# -gt 0 ]; do
  case "$1" in
    -o) [ $# -ge 2 ] || { echo "build.sh: -o needs a file" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (usage: build.sh [-o OUT.wasm])" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
[ -d "$here/wit" ] || { echo "build.sh: $here/wit (the plugin contract) not found" >&2; exit 1; }

cd "$here"
if [ -n "${ENGINE_JS_TOOLCHAIN:-}" ]; then
  cjs="$ENGINE_JS_TOOLCHAIN/componentize-js"
else
  cjs="$here/node_modules/.bin/componentize-js"
  if [ ! -x "$cjs" ]; then
    npm ci --no-audit --no-fund >&2
  fi
fi
[ -x "$cjs" ] || { echo "build.sh: $cjs not found" >&2; exit 1; }
"$cjs" --wit "$here/wit" --world-name plugin -d stdio random clocks http fetch-event -o "$out" app.js
echo "built $out ($(wc -c <"$out") bytes)"
