#!/usr/bin/env bash
# The README demo: bring a lab up, run nix-builders on its agent machine the way a user would,
# bring the lab down (also when something fails or the demo is interrupted).  `npm run demo`; needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAB=test/lab/lab
[ "$(id -u)" = 0 ] || { echo "demo: needs root (the lab makes namespaces, users and daemons)" >&2; exit 1; }
trap '"$LAB" down >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM

npm run --silent build
"$LAB" up --builders "${DEMO_BUILDERS:-2}" "$@"
"$LAB" status

# Run nix-builders on the agent machine (as root there), keeping the cwd.
nb() { echo; echo "\$ nix-builders $*"; "$LAB" exec -- node "$PWD/dist/cli.js" "$@" || echo "(exit $?)"; }
addr() { "$LAB" status --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).builders['"$1"'].address))'; }
b1=$(addr 0)
b2=$(addr 1)

echo; echo "== 1. What does the hercules-ci-agent's Nix really use? (the agent user is trusted)"
nb show --agent
nb lint
nb route --user hercules-ci-agent --system aarch64-linux

echo; echo "== 2. Every link from the agent to each builder, tested as Nix connects (root, Nix's ssh argv, handshake)"
nb doctor --agent --timeout 5

echo; echo "== 3. The guide, automated: give the agent its own builder, prove it builds there, put everything back"
nb use "$b2" --agent
nb verify --agent
nb reset --agent

echo; echo "== 4. A broken builder: wrong pinned host key on b1"
"$LAB" fault b1 wrong-host-key
nb doctor --agent --timeout 5 --builder "$b1"
nb verify --agent --builder "$b1"
"$LAB" heal b1

echo; echo "== 5. The agent user is no longer trusted: its own builders are silently dropped by the daemon"
"$LAB" agent-conf --trusted no --system-builders no
"$LAB" exec -- sh -c 'mkdir -p /var/lib/hercules-ci-agent/.config/nix && echo "builders = @/etc/nix/machines" > /var/lib/hercules-ci-agent/.config/nix/nix.conf'
nb show --agent
echo; echo "== done"
