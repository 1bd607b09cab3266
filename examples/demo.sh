#!/usr/bin/env bash
# The main job for real: a demo agent spawned, listed, shown as `systemctl --user status` shows
# it, and stopped, inside a private throwaway `systemd --user` (works where PID 1 is not systemd).
# Nothing outside a temporary HOME is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release --bin agent-relay-systemd --example fake-runner
bin="$PWD/target/release/agent-relay-systemd"
runner="$PWD/target/release/examples/fake-runner"
slice="$PWD/units/agent_relay.slice"

demo_home=$(mktemp -d /tmp/agent-relay-demo.XXXXXX)
trap 'rm -rf "$demo_home"' EXIT
mkdir -p "$demo_home/projects/demo"
cat >"$demo_home/orchestrator.json" <<JSON
{"baseDir": "$demo_home/projects", "token": "demo-secret-token", "runnerCommand": ["$runner"]}
JSON

HOME="$demo_home" BIN="$bin" CONFIG="$demo_home/orchestrator.json" SLICE="$slice" \
  "$bin" sandbox -- bash -euo pipefail -c '
  step() { printf "\n== %s ==\n" "$*"; }
  ars() { "$BIN" --config "$CONFIG" "$@"; }

  step "install units/agent_relay.slice into the private manager"
  mkdir -p "$XDG_CONFIG_HOME/systemd/user"
  cp "$SLICE" "$XDG_CONFIG_HOME/systemd/user/"
  systemctl --user daemon-reload
  systemctl --user show agent_relay.slice -p Description -p FragmentPath

  step "spawn a demo agent"
  echo "{\"provider\":\"claude\",\"cwd\":\"$HOME/projects/demo\",\"label\":\"demo\",\"spawnRequestId\":\"demo-1\",\"prompt\":\"say hello\"}" \
    | ars spawn

  step "list"
  ars list

  unit=$(ars show demo-1 -o json | python3 -c "import json,sys; print(json.load(sys.stdin)[\"systemdUnit\"])")
  step "systemctl --user status $unit"
  systemctl --user status "$unit" --no-pager --lines=0

  step "systemctl --user status agent_relay.slice"
  systemctl --user status agent_relay.slice --no-pager --lines=0

  step "the token is not in the unit (systemctl --user show)"
  if systemctl --user show "$unit" | grep -q demo-secret-token; then echo "token leaked"; exit 1; fi
  systemctl --user show "$unit" -p Type -p Slice -p Restart -p EnvironmentFiles
  echo "ok: no token in systemctl --user show"

  step "the runner got the token (EnvironmentFile=) and the prompt (a file): logs demo-1"
  for _ in $(seq 50); do ars logs demo-1 | grep -q PROMPT-BYTES && break; sleep 0.1; done
  ars logs demo-1 | grep -E "PROMPT-BYTES|ENV-KEYS" | sed -E "s/(ENV-KEYS ).*(AGENT_RELAY_TOKEN).*/\1… \2 …/"
  ars logs demo-1 | grep -q "ENV-KEYS.*AGENT_RELAY_TOKEN"

  step "show demo-1"
  ars show demo-1

  step "stop demo-1"
  ars stop demo-1

  step "list"
  ars list
'
