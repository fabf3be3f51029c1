#!/usr/bin/env bash
# Regenerate the real Nix output under test/fixtures/logs/ that test/unit/explain.test.ts feeds to `explain`.
#
# Usage: test/support/capture-logs.sh            (all cases; run as root)
#        NIX_BUILDERS_CAPTURE_OUT=test/fixtures/logs-2.30 PATH=/opt/nix-current/bin:$PATH test/support/capture-logs.sh
#                                                 (the same cases with another Nix, into another folder)
#        test/support/capture-logs.sh NAME...     (only these cases)
#
# Needs: the installed Nix (Debian 12 nix-bin 2.8.0 when these fixtures were made), root (chroot stores,
# a private nix-daemon, `runuser -u nobody`), python3 (to leave a dead unix socket behind), OpenSSH's client.
# No network, no sshd and no lab are needed: SSH failures come from a fake `ssh` put first on PATH
# (semantics spec, Appendix A) or from the real ssh failing against a closed port or an unresolvable name.
#
# Everything runs in the fixed directory /tmp/nix-builders-capture (so paths in the logs are stable) with
# NIX_CONF_DIR / NIX_USER_CONF_FILES pointing into it: the machine's own Nix configuration is not read and
# nothing outside that directory is written. Each case writes NAME.log (stdout+stderr, verbatim) and NAME.cmd
# (what produced it, the Nix version and the exit status).
#
# The lab (test/lab) will add per-fault captures from real builders later; put them next to these, with a .cmd.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${NIX_BUILDERS_CAPTURE_OUT:-$PWD/test/fixtures/logs}
W=/tmp/nix-builders-capture
NIX_VERSION=$(nix-build --version 2>/dev/null | head -1)
ONLY=("$@")
TIMEOUT=$(command -v timeout)

rm -rf "$W"
mkdir -p "$W/conf" "$W/home" "$OUT"
chmod 0755 "$W" "$W/conf"
chmod 0777 "$W/home"
printf 'sandbox = false\nsubstituters =\n' >"$W/conf/nix.conf"
: >"$W/conf/user.conf"
export NIX_CONF_DIR=$W/conf NIX_USER_CONF_FILES=$W/conf/user.conf HOME=$W/home XDG_CACHE_HOME=$W/home/cache
unset NIX_REMOTE NIX_SSHOPTS NIX_PATH

# A derivation that can never build here (x86_64 host), with no inputs and no nixpkgs.
DRV='derivation { name = "x"; system = "aarch64-linux"; builder = "/bin/sh"; }'
# The same with kvm as a required feature.
DRV_KVM='derivation { name = "x"; system = "aarch64-linux"; builder = "/bin/sh"; requiredSystemFeatures = [ "kvm" ]; }'
STORE=$W/store

want() {
  [ "${#ONLY[@]}" -eq 0 ] && return 0
  local n
  for n in "${ONLY[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

# capture NAME "what it shows" [VAR=value...] -- command...
capture() {
  local name=$1 what=$2
  shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  want "$name" || return 0
  local rc
  env "${envs[@]}" "$TIMEOUT" 20 "$@" </dev/null >"$OUT/$name.log" 2>&1
  rc=$?
  {
    echo "# $what"
    echo "# produced by test/support/capture-logs.sh with: $NIX_VERSION"
    echo "# exit status: $rc"
    echo "# environment: NIX_CONF_DIR=$NIX_CONF_DIR (nix.conf: sandbox = false, substituters =)${envs[*]:+ }${envs[*]:-}"
    printf '%q ' "$@"
    echo
  } >"$OUT/$name.cmd"
  echo "captured $name (exit $rc, $(wc -l <"$OUT/$name.log") lines)"
}

# fake_ssh NAME 'body': a directory with an `ssh` script first on PATH.
fake_ssh() {
  mkdir -p "$W/fake-$1"
  printf '#!/bin/bash\n# fake ssh: %s\n%s\n' "$1" "$2" >"$W/fake-$1/ssh"
  chmod 0755 "$W/fake-$1/ssh"
  echo "$W/fake-$1:$PATH"
}

# --- machines specification errors (the hook dies at start) ------------------------------------------------
capture bad-machine-maxjobs "bad max-jobs column (#3) in --builders" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'nix@scratchy.labs.cs.uu.nl - - eight'
capture bad-machine-speed "bad speed-factor column (#4): 1.5 is not an unsigned int in 2.8" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://h aarch64-linux - 1 1.5'
capture bad-machine-hostkey "bad base64 host key column (#7)" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://h aarch64-linux - 1 1 - - not_base64!'
capture bad-machine-no-url "whitespace-only entry between ';' (2.8 does not trim)" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://a aarch64-linux; ;ssh://b aarch64-linux'

# --- configuration errors -----------------------------------------------------------------------------------
mkdir -p "$W/conf-illegal"
printf 'sandbox = false\nsubstituters =\nbuilders=ssh://h aarch64-linux\n' >"$W/conf-illegal/nix.conf"
capture illegal-config-line "nix.conf line without spaces around '='" NIX_CONF_DIR="$W/conf-illegal" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV"
mkdir -p "$W/conf-extra"
printf 'sandbox = false\nsubstituters =\nextra-builders = ssh://h aarch64-linux\n' >"$W/conf-extra/nix.conf"
capture unknown-extra-builders "extra-builders in nix.conf (not a Nix setting), then -j0" NIX_CONF_DIR="$W/conf-extra" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" -j0

# --- no machine / max-jobs = 0 ------------------------------------------------------------------------------
capture no-builders-j0 "-j0 and no builders at all" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" -j0 --builders ''
capture no-machine-system-j0 "-j0, the only builder is for another system" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" -j0 --builders 'ssh://h riscv64-linux'
capture no-machine-features-j0 "-j0, builder has the system but not the required feature kvm" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV_KVM" -j0 --builders 'ssh://h aarch64-linux - 2 1 big-parallel'
capture no-machine-mandatory "-j1, builder has mandatory feature kvm the drv does not ask for" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://h aarch64-linux - 1 1 kvm kvm'
capture no-machine-local-fallback "-j1, builder for another system: the hook declines, the local build is refused" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://h riscv64-linux'
capture waiting-for-machine "-j0, the only matching builder has max-jobs 0 (postponed forever; killed by timeout)" -- \
  timeout 8 nix-build --store "$STORE" --no-out-link -E "$DRV" -j0 --builders 'ssh://h aarch64-linux - 0 1'

# --- SSH failures (fake ssh first on PATH; -j1 so the local fallback message follows) ------------------------
P=$(fake_ssh hostkey 'echo "Host key verification failed." >&2; exit 255')
capture ssh-host-key "ssh prints 'Host key verification failed.' and exits 255" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@builder aarch64-linux'
capture ssh-host-key-internal-json "the ssh-host-key case with --log-format internal-json" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@builder aarch64-linux' --log-format internal-json
capture ssh-ng-host-key "same over ssh-ng://" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh-ng://nix@builder aarch64-linux'
P=$(fake_ssh publickey 'echo "nix@builder: Permission denied (publickey,keyboard-interactive)." >&2; exit 255')
capture ssh-publickey "ssh authentication fails" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@builder aarch64-linux'
P=$(fake_ssh banner 'echo "Welcome to builder! Unauthorised access prohibited."; exit 0')
capture ssh-banner "the remote shell prints a banner on stdout" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@builder aarch64-linux'
capture ssh-ng-banner "same over ssh-ng://" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh-ng://nix@builder aarch64-linux'
P=$(fake_ssh nologin 'echo "This account is currently not available."; exit 1')
capture ssh-nologin "the build user's shell is nologin" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@builder aarch64-linux'
P=$(fake_ssh nixstore-missing 'echo "bash: line 1: nix-store: command not found" >&2; exit 127')
capture remote-nix-store-missing "nix-store is not on the remote PATH" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@builder aarch64-linux'
P=$(fake_ssh nixdaemon-missing 'echo "zsh:1: command not found: nix-daemon" >&2; exit 127')
capture remote-nix-daemon-missing "nix-daemon is not on the remote PATH (ssh-ng)" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh-ng://nix@builder aarch64-linux'
mkdir -p "$W/nossh"
ln -sf "$(command -v nix-build)" "$W/nossh/nix-build"
capture ssh-missing "no ssh on PATH" PATH="$W/nossh" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@builder aarch64-linux'
capture ssh-unresolvable "real ssh, host name that cannot resolve" NIX_SSHOPTS="-oBatchMode=yes -oConnectTimeout=3" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@nonexistent.invalid aarch64-linux'
capture ssh-refused "real ssh, nothing listens on 127.0.0.1:22" NIX_SSHOPTS="-oBatchMode=yes -oConnectTimeout=3" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://nix@127.0.0.1 aarch64-linux'
capture ssh-invalid-host "a host name starting with '-'" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" --builders 'ssh://-oProxyCommand=x aarch64-linux'

# --- the local daemon socket ----------------------------------------------------------------------------------
# These assume no nix-daemon serves /nix/var/nix/daemon-socket/socket in this mount namespace (true on the
# Debian dev box; the lab's daemons live in their own namespaces).
# as_nobody CMD...: run as the unprivileged user with the capture configuration.
printf '#!/bin/sh\nexec runuser -u nobody -- env NIX_CONF_DIR="%s" NIX_USER_CONF_FILES="%s" HOME="%s" XDG_CACHE_HOME="%s" PATH="$PATH" "$@"\n' \
  "$NIX_CONF_DIR" "$NIX_USER_CONF_FILES" "$W/home" "$W/home/cache" >"$W/as_nobody"
chmod 0755 "$W/as_nobody"
as_nobody=$W/as_nobody
capture daemon-socket-missing "--store daemon with no nix-daemon running (root)" -- \
  nix-build --store daemon --no-out-link -E "$DRV"
if want daemon-socket-denied; then
  capture daemon-socket-denied "--store daemon as 'nobody' (socket directory is root:nix-users 0770)" -- \
    "$W/as_nobody" nix-build --store daemon --no-out-link -E "$DRV"
fi
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$W/dead.sock"
capture daemon-socket-refused "a socket file nobody listens on" -- \
  nix-build --store "unix://$W/dead.sock" --no-out-link -E "$DRV"

# --- a private nix-daemon, an untrusted client (nobody) -----------------------------------------------------
DSTORE=$W/dstore
mkdir -p "$W/dconf"
printf 'sandbox = false\nsubstituters =\nstore = %s\ntrusted-users = root\nbuild-users-group =\n' "$DSTORE" >"$W/dconf/nix.conf"
NIX_CONF_DIR=$W/dconf NIX_DAEMON_SOCKET_PATH=$W/daemon.sock nix-daemon >"$W/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 50); do [ -S "$W/daemon.sock" ] && break; sleep 0.1; done
chmod 0777 "$W/daemon.sock" 2>/dev/null
if want untrusted-builders; then
  capture untrusted-builders "untrusted client sends --builders to the daemon (2.8 says so only at -vvvv)" -- \
    "$as_nobody" nix-build --store "unix://$W/daemon.sock" --no-out-link -E "$DRV" -j0 \
    --builders 'ssh://nix@builder aarch64-linux' -vvvv
fi
if want untrusted-substituter; then
  capture untrusted-substituter "untrusted client asks the daemon for an extra substituter" -- \
    "$as_nobody" nix-build --store "unix://$W/daemon.sock" --no-out-link -E "$DRV" -j0 \
    --option substituters "file://$W/cache"
fi
# An ssh-ng builder whose remote user is not trusted: the fake ssh runs the remote command as nobody
# against the private daemon (nix-daemon --stdio proxies to it).
P=$(fake_ssh as-nobody 'cmd="${!#}"; exec runuser -u nobody -- env NIX_CONF_DIR='"$W/dconf"' HOME='"$W/home"' XDG_CACHE_HOME='"$W/home/cache"' PATH=/usr/bin:/bin bash -c "$cmd"')
capture remote-untrusted-build "ssh-ng builder, remote user not in trusted-users" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -E "$DRV" -j0 \
  --builders "ssh-ng://nobody@builder?remote-store=unix://$W/daemon.sock aarch64-linux"
# The input is the output of a local builtin:buildenv build: input-addressed and unsigned.
capture remote-untrusted-signature "ssh-ng builder, remote user untrusted, an unsigned built input to upload" PATH="$P" -- \
  nix-build --store "$STORE" --no-out-link -j1 \
  -E 'let d = derivation { name = "d"; system = "builtin"; builder = "builtin:buildenv"; derivations = ""; manifest = "/dev/null"; preferLocalBuild = true; }; in derivation { name = "y"; system = "aarch64-linux"; builder = "/bin/sh"; args = [ d ]; }' \
  --builders "ssh-ng://nobody@builder?remote-store=unix://$W/daemon.sock aarch64-linux"
kill "$DAEMON" 2>/dev/null
wait "$DAEMON" 2>/dev/null

rm -rf "$W"
echo "fixtures in $OUT"
