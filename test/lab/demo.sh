#!/usr/bin/env bash
# The README demo: bring a lab up, run nix-builders on its agent machine the way a user would,
# bring the lab down (also when something fails or the demo is interrupted).  `npm run demo`; needs root.
# Installs what it needs first (scripts/provision). Every step is checked: its exit code and, where it
# matters, what it prints. The demo exits 1 when any step did not do what it should.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAB=test/lab/lab
[ "$(id -u)" = 0 ] || { echo "demo: needs root (the lab makes namespaces, users and daemons)" >&2; exit 1; }
bash scripts/provision
trap '"$LAB" down >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM

"$LAB" up --builders "${DEMO_BUILDERS:-2}" "$@"
"$LAB" status

failed=()
out=$(mktemp -d)
# step WANT_EXIT [PATTERN] -- ARGS...: run nix-builders ARGS on the agent machine (as root there, keeping
# the cwd), show its output, and check its exit code and that its output matches the extended regex PATTERN.
step() {
  local want=$1 pattern="" rc=0; shift
  if [ "$1" != -- ]; then pattern=$1; shift; fi
  shift
  echo; echo "\$ nix-builders $*"
  "$LAB" exec -- node "$PWD/dist/cli.js" "$@" >"$out/last" 2>&1 || rc=$?
  cat "$out/last"
  local why=""
  [ "$rc" = "$want" ] || why="exit $rc, expected $want"
  if [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$out/last"; then why="${why:+$why; }output does not match /$pattern/"; fi
  if [ -n "$why" ]; then
    echo "demo: STEP FAILED: nix-builders $*: $why" >&2
    failed+=("nix-builders $*: $why")
  else
    echo "(exit $rc, as expected)"
  fi
}
addr() { "$LAB" status --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).builders['"$1"'].address))'; }
b1=$(addr 0)
b2=$(addr 1)

echo; echo "== 1. What does the hercules-ci-agent's Nix really use? (the agent user is trusted)"
step 0 "ssh://nix-builder@$b1" -- show --agent
step 0 -- lint
step 0 "remote" -- route --user hercules-ci-agent --system aarch64-linux

echo; echo "== 2. Every link from the agent to each builder, tested as Nix connects (root, Nix's ssh argv, handshake)"
step 0 -- doctor --agent --timeout 5

echo; echo "== 3. The guide, automated: give the agent its own builder, prove it builds there, put everything back"
step 0 -- use "$b2" --agent
step 0 "^OK: .* was built on ssh://nix-builder@$b2 " -- verify --agent
step 0 -- reset --agent

echo; echo "== 4. A broken builder: wrong pinned host key on b1"
"$LAB" fault b1 wrong-host-key
step 2 "host-key" -- doctor --agent --timeout 5 --builder "$b1"
step 2 "FAILED \(host-key" -- verify --agent --builder "$b1"
"$LAB" heal b1

echo; echo "== 5. The agent user is no longer trusted: its own builders are silently dropped by the daemon"
"$LAB" agent-conf --trusted no --system-builders no
"$LAB" exec -- sh -c 'mkdir -p /var/lib/hercules-ci-agent/.config/nix && echo "builders = @/etc/nix/machines" > /var/lib/hercules-ci-agent/.config/nix/nix.conf'
step 0 "Ignored by the daemon for hercules-ci-agent:" -- show --agent

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "== demo FAILED: ${#failed[@]} step(s) did not do what they should:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "== done: every step did what it should"
