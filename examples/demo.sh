#!/usr/bin/env bash
# The main job for real: a demo agent spawned, listed, shown as `systemctl --user status` shows
# it, and stopped, inside a private throwaway `systemd --user` (works where PID 1 is not systemd).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release --bin agent-relay-systemd --example fake-runner
bin="$PWD/target/release/agent-relay-systemd"
runner="$PWD/target/release/examples/fake-runner"

demo_home=$(mktemp -d /tmp/agent-relay-demo.XXXXXX)
trap 'rm -rf "$demo_home"' EXIT
mkdir -p "$demo_home/projects/demo"
cat >"$demo_home/orchestrator.json" <<JSON
{"baseDir": "$demo_home/projects", "token": "demo-secret-token", "runnerCommand": ["$runner"]}
JSON

export HOME="$demo_home" AGENT_RELAY_ORCHESTRATOR_CONFIG="$demo_home/orchestrator.json" BIN="$bin"
"$bin" sandbox -- bash -euo pipefail -c '
  step() { printf "\n== %s ==\n" "$*"; }
  step "spawn a demo agent"
  echo "{\"provider\":\"claude\",\"cwd\":\"$HOME/projects/demo\",\"label\":\"demo\",\"spawnRequestId\":\"demo-1\",\"prompt\":\"say hello\"}" \
    | "$BIN" spawn
  step "list"
  "$BIN" list
  unit=$("$BIN" show demo-1 -o json | python3 -c "import json,sys; print(json.load(sys.stdin)[\"systemdUnit\"])")
  step "systemctl --user status $unit"
  systemctl --user status "$unit" --no-pager --lines=3 || true
  step "systemctl --user status agent_relay.slice"
  systemctl --user status agent_relay.slice --no-pager --lines=0 || true
  step "the token is not in the unit (systemctl --user show)"
  if systemctl --user show "$unit" | grep -q demo-secret-token; then echo "token leaked"; exit 1; fi
  echo "ok: no token in systemctl --user show"
  step "show demo-1"
  "$BIN" show demo-1
  step "stop demo-1"
  "$BIN" stop demo-1
  step "list"
  "$BIN" list
'
