#!/bin/sh
# `npm test`'s last step: the compiled tests (dist/test) against the real binary, inside
# `agent-relay-systemd sandbox` (a private, throwaway `systemd --user`), with the fake runner as
# the config's runnerCommand and a temporary HOME, as examples/demo.sh does. Needs the binary and
# the fake runner built: `cargo build --locked --bin agent-relay-systemd --example fake-runner`
# (or point AGENT_RELAY_SYSTEMD_BIN and AGENT_RELAY_FAKE_RUNNER at others).
set -eu
cd "$(dirname "$0")/.."
root=$(cd ../.. && pwd)
bin=${AGENT_RELAY_SYSTEMD_BIN:-$root/target/debug/agent-relay-systemd}
runner=${AGENT_RELAY_FAKE_RUNNER:-$root/target/debug/examples/fake-runner}
for f in "$bin" "$runner"; do
  if [ ! -x "$f" ]; then
    echo "$f is missing: run \`cargo build --locked --bin agent-relay-systemd --example fake-runner\` first" >&2
    exit 1
  fi
done
home=$(mktemp -d /tmp/agent-relay-ts-client.XXXXXX)
trap 'rm -rf "$home"' EXIT
mkdir -p "$home/projects/app"
cat >"$home/orchestrator.json" <<JSON
{"baseDir": "$home/projects", "token": "ts-client-secret-token", "runnerCommand": ["$runner"]}
JSON
HOME="$home" AGENT_RELAY_SYSTEMD_BIN="$bin" AGENT_RELAY_ORCHESTRATOR_CONFIG="$home/orchestrator.json" \
  "$bin" sandbox -- node --test dist/test/
