#!/usr/bin/env bash
# The README demo: bring a lab up, run nix-builders on its agent machine, bring the lab down
# (also when something fails or the demo is interrupted).  `npm run demo`; needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAB=test/lab/lab
[ "$(id -u)" = 0 ] || { echo "demo: needs root (the lab makes namespaces, users and daemons)" >&2; exit 1; }
trap '"$LAB" down || true' EXIT
trap 'exit 130' INT TERM

[ -e dist/cli.js ] || npm run build
"$LAB" up --builders "${DEMO_BUILDERS:-2}" "$@"
"$LAB" status

# Run a command on the agent machine (as root, or as the agent user), keeping the cwd.
on_agent() { "$LAB" exec -- "$@"; }
as_agent_user() { "$LAB" exec --user hercules-ci-agent -- "$@"; }

echo "== nix-builders --help (on the agent machine)"
on_agent node "$PWD/dist/cli.js" --help
