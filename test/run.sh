#!/usr/bin/env bash
# The project's test command: `npm test` (all), `npm test -- unit`, `npm test -- e2e`.
# First installs what is missing (scripts/provision: Debian packages as root, npm ci, the build); a second run
# installs nothing. Unit tests need Node and, for the differential tests, Debian's nix-bin.
# End-to-end tests need root (the lab makes namespaces, users and daemons); without root they are skipped.
# Order: the unit files two at a time, with the end-to-end files that need no lab beside them (root only),
# then the lab's files one at a time.
# Prints node's TAP summary per phase and a final "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
phase="${1:-all}"
# With the build: the hook tests run dist/hook-recorder.js and the completions come from dist/cli.js.
bash scripts/provision || { echo "test: provisioning failed (see above)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0

run_phase() {
  local name="$1" concurrency="$2"; shift 2
  local files=("$@")
  [ "${#files[@]}" -gt 0 ] || return 0
  echo "== $name tests (${#files[@]} files)"
  node --import tsx --test --test-reporter=tap --test-concurrency="$concurrency" "${files[@]}" 2>&1 | tee "$out/$name.tap"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
}

shopt -s nullglob
is_root() { [ "$(id -u)" -eq 0 ]; }
# The end-to-end files that do not use the lab (they make their own users, daemons, stores and mount
# namespaces): they run beside the unit files, not in the lab's queue.
local_e2e=()
lab_e2e=()
for f in test/e2e/*.test.ts; do
  if grep -q "support/lab" "$f"; then lab_e2e+=("$f"); else local_e2e+=("$f"); fi
done
# The lab-free end-to-end files, in the background, quietly (their TAP is printed when they end).
local_pid=""
if { [ "$phase" = all ] || [ "$phase" = e2e ]; } && is_root; then
  ( node --import tsx --test --test-reporter=tap --test-concurrency=1 "${local_e2e[@]}" >"$out/e2e-local.tap" 2>&1
    echo $? >"$out/e2e-local.rc" ) &
  local_pid=$!
  echo "== e2e tests without the lab (${#local_e2e[@]} files), in the background"
fi
if [ "$phase" = all ] || [ "$phase" = unit ]; then
  # Two files at a time: each makes its own temp dirs, users, stores and daemons, and many wait on
  # subprocesses (about 4 minutes instead of 6 on 2 CPUs).
  run_phase unit 2 test/unit/*.test.ts
fi
if [ -n "$local_pid" ]; then
  wait "$local_pid"
  echo "== e2e tests without the lab (${#local_e2e[@]} files)"
  cat "$out/e2e-local.tap"
  [ "$(cat "$out/e2e-local.rc" 2>/dev/null)" = 0 ] || status=1
fi
if [ "$phase" = all ] || [ "$phase" = e2e ]; then
  if ! is_root; then
    echo "== e2e tests skipped: they need root (the lab makes namespaces, users and daemons)"
  else
    # One at a time: these files share one lab.
    run_phase e2e 1 "${lab_e2e[@]}"
    # Whatever happened, leave no lab behind.
    test/lab/lab down >/dev/null 2>&1 || true
  fi
fi

pass=0; fail=0; skip=0
for f in "$out"/*.tap; do
  p=$(grep -aE '^# pass [0-9]+' "$f" | tail -1 | awk '{print $3}')
  x=$(grep -aE '^# fail [0-9]+' "$f" | tail -1 | awk '{print $3}')
  s=$(grep -aE '^# skipped [0-9]+' "$f" | tail -1 | awk '{print $3}')
  # A test cancelled by its parent (e.g. a promise that never settles) did not pass: count it failed.
  c=$(grep -aE '^# cancelled [0-9]+' "$f" | tail -1 | awk '{print $3}')
  pass=$((pass + ${p:-0})); fail=$((fail + ${x:-0} + ${c:-0})); skip=$((skip + ${s:-0}))
done
echo "${pass} passed, ${fail} failed, ${skip} skipped"
if [ "$fail" -ne 0 ]; then status=1; fi
exit "$status"
