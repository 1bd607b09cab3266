#!/usr/bin/env bash
# The packaged path on a real systemd host: bootstraps Debian 12 with debootstrap, boots it with
# systemd-nspawn (PID 1 is systemd, logind starts user@UID.service, linger works), installs the
# .deb with apt, and checks as unprivileged users with linger what an operator relies on: doctor,
# spawn/list/show/logs/stop with the fake runner, the token in no unit property and no command
# line, the reaper timer enabled by the package, a second user kept apart, a durable agent back
# after a reboot of the container, reap, and a purge that leaves users' files alone. Then it tears
# the container down and checks that nothing of it is left running.
#
# Run as root on Debian 12 (PID 1 need not be systemd); installs debootstrap and systemd-container
# when missing, builds the .deb (packaging/build-assets.sh, cargo deb --no-build) and the fake
# runner:
#   sudo bash packaging/host-check.sh
# Environment:
#   HOST_CHECK_DEB=FILE     install this .deb instead of building one
#   HOST_CHECK_CACHE=DIR    keep a tarball of the bootstrapped tree in DIR and reuse it next time
#   HOST_CHECK_MIRROR=URL   the Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   HOST_CHECK_KEEP=1       keep the work directory (the tree, the console log) on failure
# Every step that fails ends the script with one line: `host check FAILED at <step>: <why>`.
# The single-quoted $… below are for a shell in the container (or dpkg-query's ${Status}):
# shellcheck disable=SC2016
set -Eeuo pipefail
cd "$(dirname "$0")/.."
# The report goes to the script's own stderr (fd 3) even when a trap runs inside a redirection.
exec 3>&2

name=agent-relay-systemd
suite=bookworm
mirror=${HOST_CHECK_MIRROR:-http://deb.debian.org/debian}
# systemd as PID 1 and logind; dbus-user-session: each user's session bus; tmux: the package's
# dependency (guest terminals). The package's own Depends must then be satisfied with no network.
include=systemd,systemd-sysv,libpam-systemd,dbus,dbus-user-session,tmux
machine=arsd-host-check
T=60 # bound in seconds on every command run in the container
started=$SECONDS

step_name="start"
failure=""
work=""
nspawn_pid=""
pid1=""

step() {
  step_name=$*
  echo "-- $step_name ($((SECONDS - started)) s)"
}
fail() { # the failure line names the step; a long or multi-line detail goes in full above it
  local why=$*
  if [[ $why == *$'\n'* ]] || [ ${#why} -gt 300 ]; then
    printf '%s\n' "$why" >&3
    why="$(printf '%s' "$why" | tr -s '\n' ' ' | cut -c1-300)… (in full above)"
  fi
  failure="host check FAILED at $step_name: $why"
  exit 1
}
on_err() {
  local rc=$? n=$((${#BASH_LINENO[@]} - 2)) line
  # Only the outermost shell reports: a command substitution that failed is named by its caller.
  if [ "$BASH_SUBSHELL" -eq 0 ] && [ -z "$failure" ]; then
    # The script's own line that failed (when the failure was inside a helper, the line calling it).
    line=${BASH_LINENO[$n]}
    failure="host check FAILED at $step_name: line $line \`$(sed -n "${line}s/^ *//p" "$0")\` exited $rc"
  fi
}
trap on_err ERR

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# container_pid1 NSPAWN-PID: the child of systemd-nspawn that runs systemd (the container's PID 1).
container_pid1() {
  # Bash's own reads, no process per entry: a host running thousands of processes is scanned in
  # well under a second.
  local p stat comm
  for p in /proc/[0-9]*; do
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split on purpose: the fields after the command name
    set -- "$1" $stat # $3: the parent's pid
    [ "$3" = "$1" ] || continue
    { read -r comm <"$p/comm"; } 2>/dev/null || continue
    if [ "$comm" = systemd ]; then
      echo "${p#/proc/}"
      return 0
    fi
  done
  return 1
}

stop_container() { # bounded: SIGTERM to systemd-nspawn is a poweroff of the container
  alive "$nspawn_pid" || return 0
  kill -TERM "$nspawn_pid" 2>/dev/null || true
  for _ in $(seq 60); do alive "$nspawn_pid" || break; sleep 0.5; done
  if alive "$nspawn_pid"; then
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    # Killing PID 1 of the container's PID namespace ends every process in it.
    if alive "$pid1"; then kill -KILL "$pid1" 2>/dev/null || true; fi
  fi
  wait "$nspawn_pid" 2>/dev/null || true
  nspawn_pid=""
}

cleanup() {
  local rc=$?
  trap - ERR
  set +e
  if [ "$rc" -ne 0 ] && [ -n "$work" ] && [ -s "$work/console.log" ]; then
    # As it was when the step failed, before the shutdown below adds to it.
    echo "last lines of the container's console:" >&3
    # (no colour codes; awk ends the last line, a login prompt, with a newline)
    tail -n 15 "$work/console.log" | awk '{ gsub(/\033\[[0-9;]*m/, ""); print }' >&3
  fi
  stop_container
  if [ -n "$work" ] && [ -d "$work" ]; then
    # systemd-nspawn mounts in its own namespace; unmount anything that still shows up here.
    findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r m; do umount -l "$m"; done
    if [ "$rc" -ne 0 ] && [ "${HOST_CHECK_KEEP:-}" = 1 ]; then
      echo "kept $work" >&3
    else
      rm -rf --one-file-system "$work"
    fi
  fi
  if [ "$rc" -ne 0 ]; then
    echo "${failure:-host check FAILED at $step_name (exit $rc)}" >&3
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'failure="host check FAILED at $step_name: interrupted"; exit 130' INT TERM

[ "$(id -u)" = 0 ] || fail "run as root (sudo bash packaging/host-check.sh)"

# --- helpers for commands in the container ---------------------------------------------------

clean_path=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin
# in_root CMD...: CMD as root in the container, with a clean environment, bounded by $T.
in_root() {
  timeout -k 5 $((T + 15)) nsenter -t "$pid1" -a \
    env -i PATH="$clean_path" LANG=C.UTF-8 timeout -k 5 "$T" "$@"
}
# as USER CMD...: CMD in the container as USER, as that user's lingering manager sees it: no PAM
# session, the runtime directory and session bus of user@UID.service.
as() {
  local user=$1 uid
  shift
  uid=${uids[$user]}
  timeout -k 5 $((T + 15)) nsenter -t "$pid1" -a \
    setpriv --reuid="$uid" --regid="$uid" --init-groups \
    env -i PATH="$clean_path" LANG=C.UTF-8 HOME="/home/$user" USER="$user" LOGNAME="$user" \
    XDG_RUNTIME_DIR="/run/user/$uid" DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" \
    timeout -k 5 "$T" "$@"
}
declare -A uids=()
ars() { # ars USER ARGS...: the installed binary as USER
  local user=$1
  shift
  as "$user" /usr/bin/$name "$@"
}
# wait_for SECONDS WHAT CMD...: polls CMD (quietly) until it succeeds; fails naming WHAT.
wait_for() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      "$@" >&2 || true # what it says now, for the log
      fail "$what: not within $secs s"
    fi
    sleep 0.5
  done
}
# j EXPR: evaluates a Python expression over the JSON document on stdin (`d`); strings print
# as they are, everything else as JSON.
j() {
  python3 -c 'import json, sys
v = eval(sys.argv[1], {"d": json.load(sys.stdin)})
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}
# expect WHAT GOT WANT
expect() { [ "$2" = "$3" ] || fail "$1 is '$2', expected '$3'"; }

user_manager_up() { # USER: user@UID.service has started up, no unit failed, and its bus answers
  local state
  state=$(as "$1" systemctl --user is-system-running 2>&1) || true
  echo "$1's user manager: $state"
  [ "$state" = running ]
}

boot() {
  echo "=== boot $((++boots)) ===" >>"$work/console.log"
  SYSTEMD_COLORS=0 systemd-nspawn -D "$root" -b --register=no --keep-unit --private-network \
    --console=read-only -M "$machine" >>"$work/console.log" 2>&1 </dev/null &
  nspawn_pid=$!
  local deadline=$((SECONDS + 30))
  pid1=""
  until pid1=$(container_pid1 "$nspawn_pid"); do
    alive "$nspawn_pid" || fail "systemd-nspawn exited (see the console lines above)"
    [ "$SECONDS" -lt "$deadline" ] || fail "the container's PID 1 (systemd) did not appear within 30 s"
    sleep 0.2
  done
  # Wait (bounded) until the boot is done, with no failed unit.
  wait_for 30 "nsenter into the container" in_root true
  local state
  state=$(in_root systemctl is-system-running --wait 2>&1) || true
  if [ "$state" != running ]; then
    in_root systemctl --failed --no-pager >&2 || true
    fail "the container's system state after boot is '$state', not running"
  fi
  pidns=$(readlink "/proc/$pid1/ns/pid")
}
boots=0

# --- host tools --------------------------------------------------------------------------------

step "tools"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for c in debootstrap systemd-nspawn nsenter findmnt timeout python3; do
  command -v "$c" >/dev/null || fail "$c is missing"
done

work=$(mktemp -d /var/tmp/host-check.XXXXXX)
chmod 755 "$work"
root=$work/root

step "the .deb and the fake runner"
if [ -n "${HOST_CHECK_DEB:-}" ]; then
  deb=$HOST_CHECK_DEB
  [ -f "$deb" ] || fail "HOST_CHECK_DEB=$deb is no file"
else
  if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
    cargo install --locked --quiet cargo-deb --version 3.8.0
  fi
  # After packaging/check.sh (as in .ci/run) the release build is already there: cargo does nothing.
  bash packaging/build-assets.sh >/dev/null
  deb=$work/$name.deb
  cargo deb --no-build --output "$deb" >/dev/null
fi
cargo build --locked --quiet --example fake-runner
runner=target/debug/examples/fake-runner
[ -x "$runner" ] || fail "$runner was not built"

# --- the tree ----------------------------------------------------------------------------------

step "bootstrap Debian 12 ($suite: $include)"
tarball=""
if [ -n "${HOST_CHECK_CACHE:-}" ]; then
  mkdir -p "$HOST_CHECK_CACHE"
  key=$(printf '%s %s %s' "$suite" "$include" "$(dpkg --print-architecture)" | sha256sum | cut -c1-12)
  tarball=$HOST_CHECK_CACHE/debian12-$key.tar
fi
if [ -n "$tarball" ] && [ -f "$tarball" ]; then
  echo "from $tarball"
  mkdir "$root"
  tar --numeric-owner -xpf "$tarball" -C "$root"
else
  timeout 900 debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    fail "debootstrap $suite from $mirror"
  }
  rm -rf "$root"/var/cache/apt/archives/*.deb
  if [ -n "$tarball" ]; then
    tar --numeric-owner -cpf "$tarball.new" -C "$root" .
    mv "$tarball.new" "$tarball"
    echo "cached as $tarball"
  fi
fi
# A machine id of its own, kept across the reboot below.
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
echo >>"$root/etc/machine-id"
install -m 0755 "$runner" "$root/usr/local/bin/fake-runner"
mkdir -p "$root/var/lib/host-check"
chmod 0755 "$root/var/lib/host-check"
install -m 0644 "$deb" "$root/var/lib/host-check/$name.deb"

step "boot the container (systemd-nspawn -b)"
boot
expect "the container's PID 1" "$(in_root cat /proc/1/comm)" systemd

step "a user with linger whose manager runs before the package is installed (alice)"
in_root useradd --create-home --shell /bin/bash alice
uids[alice]=$(in_root id -u alice)
in_root loginctl enable-linger alice
wait_for 30 "alice's user manager (user@${uids[alice]}.service) to start for linger" user_manager_up alice
expect "alice's linger" "$(in_root loginctl show-user alice -p Linger --value)" yes

step "install the .deb with apt (its dependencies already in the tree, no network)"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  "/var/lib/host-check/$name.deb" >"$work/apt.log" 2>&1 || {
  tail -n 20 "$work/apt.log" >&2
  fail "apt-get install ./$name.deb"
}
expect "dpkg status" "$(in_root dpkg-query -W -f '${Status}' $name)" "install ok installed"
expect "the installed binary's --version" "$(in_root /usr/bin/$name --version)" \
  "$name $(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"

step "the reaper timer: enabled for every user by the package, runs after a daemon-reload"
expect "the global enablement link" \
  "$(in_root readlink /etc/systemd/user/timers.target.wants/agent-relay-reap.timer)" \
  /usr/lib/systemd/user/agent-relay-reap.timer
# alice's manager was running before the install: README's `daemon-reload`, then start.
as alice systemctl --user daemon-reload
expect "alice's timer after daemon-reload (is-enabled)" \
  "$(as alice systemctl --user is-enabled agent-relay-reap.timer)" enabled
as alice systemctl --user start agent-relay-reap.timer
expect "alice's timer (is-active)" "$(as alice systemctl --user is-active agent-relay-reap.timer)" active
# The reaper itself runs as the timer would start it (a oneshot: start waits for it to end).
as alice systemctl --user start agent-relay-reap.service
expect "agent-relay-reap.service's result" \
  "$(as alice systemctl --user show agent-relay-reap.service -p Result --value)" success
expect "agent-relay-reap.service's exit status" \
  "$(as alice systemctl --user show agent-relay-reap.service -p ExecMainStatus --value)" 0

step "a second user created after the install (bob): the timer starts with the manager"
in_root useradd --create-home --shell /bin/bash bob
uids[bob]=$(in_root id -u bob)
in_root loginctl enable-linger bob
wait_for 30 "bob's user manager to start for linger" user_manager_up bob
expect "bob's timer (is-active, no one started it)" \
  "$(as bob systemctl --user is-active agent-relay-reap.timer)" active

step "configure both users: orchestrator.json with a token and the fake runner"
for u in alice bob; do
  token=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  token="host-check-$u-$token"
  as "$u" sh -c 'umask 077 && mkdir -p "$HOME/.agent-relay" "$HOME/projects/demo" &&
    cat >"$HOME/.agent-relay/orchestrator.json"' <<JSON
{"baseDir": "/home/$u/projects", "token": "$token", "runnerCommand": ["/usr/local/bin/fake-runner"]}
JSON
  # The token, for the greps below (never on a command line).
  printf '%s\n' "$token" >>"$root/var/lib/host-check/tokens"
done
chmod 0600 "$root/var/lib/host-check/tokens"

step "doctor exits 0 (alice)"
doctor=$(ars alice doctor -o json) || {
  ars alice doctor >&2 || true
  fail "doctor exited non-zero"
}
expect "doctor's ok" "$(j 'd["ok"]' <<<"$doctor")" true
# On a real host the checks that a sandbox cannot pass must pass too.
for c in manager pid1 linger session-bus private-socket reaper-timer slice runner config; do
  got=$(j "[f['status'] for f in d['findings'] if f['check'] == '$c']" <<<"$doctor")
  [ "$got" = '["ok"]' ] || {
    ars alice doctor >&2 || true
    fail "doctor's finding '$c' is $got, expected [\"ok\"]"
  }
done

step "spawn (alice)"
request() { # SPAWN-REQUEST-ID LABEL USER
  printf '{"provider":"claude","cwd":"/home/%s/projects/demo","label":"%s","spawnRequestId":"%s","prompt":"say hello"}' \
    "$3" "$2" "$1"
}
spawned=$(request hc-one one alice | ars alice spawn -o json)
expect "spawn's created" "$(j 'd["created"]' <<<"$spawned")" true
unit_one=$(j 'd["agent"]["systemdUnit"]' <<<"$spawned")
session_one=$(j 'd["agent"]["sessionName"]' <<<"$spawned")
[[ $unit_one == agent-relay-managed-*.service ]] || fail "spawned unit is '$unit_one'"

step "list and show (alice)"
listed=$(ars alice list -o json)
expect "list's units" "$(j '[a["systemdUnit"] for a in d]' <<<"$listed")" "[\"$unit_one\"]"
shown=$(ars alice show hc-one -o json)
expect "show's state" "$(j 'd["state"]' <<<"$shown")" alive
expect "show's activeState" "$(j 'd["activeState"]' <<<"$shown")" active
pid_one=$(j 'd["pid"]' <<<"$shown")
[ "$pid_one" -gt 1 ] || fail "show's pid is '$pid_one'"
expect "the agent's process" "$(in_root cat /proc/"$pid_one"/comm)" fake-runner
expect "the agent's user" "$(in_root stat -c %U /proc/"$pid_one")" alice

step "systemctl --user status agent_relay.slice (alice)"
status=$(as alice systemctl --user status agent_relay.slice --no-pager --lines=0)
grep -q "Agent Relay agents" <<<"$status" || fail "the slice's status lacks the packaged Description: $status"
grep -qF "$unit_one" <<<"$status" || fail "the slice's status does not show $unit_one: $status"
grep -q "fake-runner" <<<"$status" || fail "the slice's status does not show the runner's process"
cgroup=$(in_root cat /proc/"$pid_one"/cgroup)
grep -qF "/user.slice/user-${uids[alice]}.slice/user@${uids[alice]}.service/agent_relay.slice/$unit_one" <<<"$cgroup" ||
  fail "the agent is not in alice's user@.service/agent_relay.slice: $cgroup"

step "logs (alice): the runner got the prompt and the token (EnvironmentFile=)"
prompt_logged() { ars alice logs hc-one | grep -q PROMPT-BYTES; }
wait_for 20 "the runner's log to show PROMPT-BYTES" prompt_logged
logs=$(ars alice logs hc-one)
grep -q "ENV-KEYS.*AGENT_RELAY_TOKEN" <<<"$logs" || fail "the runner did not get AGENT_RELAY_TOKEN: $logs"

step "the token is in no unit property and no /proc/*/cmdline"
leaks() { # prints what holds a token: the manager's and every unit's properties, every command line
  for u in alice bob; do
    as "$u" sh -c 'systemctl --user show; systemctl --user list-units --all --plain --no-legend "agent-relay-*" agent_relay.slice |
      while read -r unit _; do systemctl --user show "$unit"; systemctl --user cat "$unit" 2>/dev/null; done' |
      grep -F -f "$root/var/lib/host-check/tokens" | sed "s/^/$u's units: /" || true
  done
  # grep reads the tokens from a file, so its own command line holds none.
  in_root sh -c 'grep -l -a -s -F -f /var/lib/host-check/tokens /proc/[0-9]*/cmdline' | sed 's/^/command line: /' || true
}
leaked=$(leaks)
[ -z "$leaked" ] || fail "a token leaked: $leaked"

step "a second user (bob) sees none of alice's agents and cannot stop them"
request hc-bob mine bob | ars bob spawn -o json >/dev/null
expect "bob's list" "$(ars bob list -o json | j '[a["spawnRequestId"] for a in d]')" '["hc-bob"]'
for ref in "$unit_one" "$session_one" hc-one; do
  rc=0
  ars bob show "$ref" -o json >/dev/null 2>&1 || rc=$?
  expect "bob's show $ref exit code" "$rc" 3
  rc=0
  ars bob stop "$ref" -o json >/dev/null 2>&1 || rc=$?
  expect "bob's stop $ref exit code" "$rc" 3
done
# Pointed at alice's runtime directory, bob reaches no manager at all (exit 5).
rc=0
as bob env XDG_RUNTIME_DIR="/run/user/${uids[alice]}" \
  DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/${uids[alice]}/bus" \
  /usr/bin/$name stop "$unit_one" >/dev/null 2>&1 || rc=$?
expect "bob's stop through alice's runtime directory exit code" "$rc" 5
expect "alice's agent after bob's attempts" "$(ars alice show hc-one -o json | j 'd["pid"]')" "$pid_one"
leaked=$(leaks)
[ -z "$leaked" ] || fail "a token leaked: $leaked"

step "stop (alice)"
stopped=$(ars alice stop hc-one -o json)
expect "stop's stopped" "$(j 'd["stopped"]' <<<"$stopped")" true
expect "stop's wasRunning" "$(j 'd["wasRunning"]' <<<"$stopped")" true
in_root test ! -e /proc/"$pid_one" || fail "the runner (pid $pid_one) still runs after stop"

step "spawn --persist (durable) and a transient agent, then reboot the container"
durable=$(request hc-durable durable alice | ars alice spawn --persist -o json)
expect "the durable agent's durable" "$(j 'd["agent"]["durable"]' <<<"$durable")" true
unit_durable=$(j 'd["agent"]["systemdUnit"]' <<<"$durable")
session_durable=$(j 'd["agent"]["sessionName"]' <<<"$durable")
pid_durable=$(ars alice show hc-durable -o json | j 'd["pid"]')
transient=$(request hc-transient transient alice | ars alice spawn -o json)
unit_transient=$(j 'd["agent"]["systemdUnit"]' <<<"$transient")
session_transient=$(j 'd["agent"]["sessionName"]' <<<"$transient")
expect "the transient agent's state" "$(ars alice show hc-transient -o json | j 'd["state"]')" alive
expect "the durable unit is enabled" "$(as alice systemctl --user is-enabled "$unit_durable")" enabled
# The runners have written their info (the durable agent's, for reap to keep below).
wait_for 20 "the durable runner's info file" in_root test -f "/home/alice/.agent-relay/runners/$session_durable.json"
old_pidns=$pidns
in_root systemctl --no-block reboot
deadline=$((SECONDS + 90))
while alive "$nspawn_pid"; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the container did not shut down for the reboot within 90 s"
  sleep 0.5
done
rc=0
wait "$nspawn_pid" || rc=$?
nspawn_pid=""
# systemd-nspawn exits 133 when the container asked for a reboot.
expect "systemd-nspawn's exit status after systemctl reboot" "$rc" 133
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/ns/pid" 2>/dev/null)" != "$old_pidns" ] || fail "process ${p#/proc/} outlived the container"
done

step "boot the same tree again: the durable agent is back with a new pid"
boot
wait_for 30 "alice's user manager to start again for linger" user_manager_up alice
durable_alive() { [ "$(ars alice show hc-durable -o json | j 'd["state"]')" = alive ]; }
wait_for 30 "the durable agent to be alive after the reboot" durable_alive
back=$(ars alice show hc-durable -o json)
expect "the durable agent's unit after the reboot" "$(j 'd["systemdUnit"]' <<<"$back")" "$unit_durable"
pid_back=$(j 'd["pid"]' <<<"$back")
{ [ "$pid_back" -gt 1 ] && [ "$pid_back" != "$pid_durable" ]; } ||
  fail "the durable agent's pid after the reboot is '$pid_back' (before: $pid_durable)"
expect "the durable agent's process" "$(in_root cat /proc/"$pid_back"/comm)" fake-runner
expect "alice's timer after the reboot" "$(as alice systemctl --user is-active agent-relay-reap.timer)" active
# The durable agent's unit now comes from its unit file: still no token in it, nor on a command line.
leaked=$(leaks)
[ -z "$leaked" ] || fail "a token leaked: $leaked"

step "the transient agent is gone and diagnose tells how it ended"
rc=0
ars alice show hc-transient -o json >/dev/null 2>&1 || rc=$?
expect "show of the transient agent after the reboot (exit code)" "$rc" 3
listed=$(ars alice list -o json)
expect "alice's list after the reboot" "$(j '[a["systemdUnit"] for a in d]' <<<"$listed")" "[\"$unit_durable\"]"
diagnosis=$(ars alice diagnose "$unit_transient" -o json)
expect "diagnose's unitLoaded" "$(j 'd["unitLoaded"]' <<<"$diagnosis")" false
# The reboot stopped it: SIGTERM from the user manager, a clean exit, written down by the
# package's recorder (ExecStopPost=) while the manager shut down.
expect "diagnose's exit" "$(j '[d["exit"][k] for k in ("kind", "exitCode", "result", "source")]' <<<"$diagnosis")" \
  '["exited", 0, "success", "record"]'
[ "$(j 'd["exitedAt"] is not None and d["startedAt"] is not None' <<<"$diagnosis")" = true ] ||
  fail "diagnose has no startedAt or exitedAt: $diagnosis"
[ "$(j '"FAKE-RUNNER TERM" in d["lastLogLines"]' <<<"$diagnosis")" = true ] ||
  fail "diagnose's last log lines do not show the SIGTERM of the reboot: $diagnosis"
echo "diagnose: $(j 'd["lastError"]' <<<"$diagnosis")"

step "reap leaves the durable agent's files"
durable_files() { # the durable agent's unit file, secret directory, log and runner info
  in_root sh -c "ls -d /home/alice/.config/systemd/user/$unit_durable \
    /home/alice/.local/state/agent-relay-systemd/durable/agents/$session_durable.* \
    /home/alice/.agent-relay/logs/$session_durable.log /home/alice/.agent-relay/runners/$session_durable.json"
}
before=$(durable_files) || fail "the durable agent's files are not all there before reap: $before"
# Files younger than 60 s are never reaped: age everything of alice's, as if the reboot were old.
in_root find /home/alice/.agent-relay /home/alice/.local/state/agent-relay-systemd -exec touch -h -d "-2 hours" {} +
reaped=$(ars alice reap -o json)
expect "reap's failed" "$(j 'd["failed"]' <<<"$reaped")" "[]"
echo "reap: $(j '[a["action"] + " " + a["target"] for a in d["actions"]]' <<<"$reaped")"
# It did reap: the transient agent's leftover runner info (its unit is gone) ...
[ "$(j "{'action': 'remove-runner-info', 'target': '/home/alice/.agent-relay/runners/$session_transient.json'} in d['actions']" <<<"$reaped")" = true ] ||
  fail "reap did not remove the transient agent's runner info: $reaped"
# ... and kept every file of the durable one.
after=$(durable_files) || fail "reap removed some of the durable agent's files: $after"
expect "the durable agent's files after reap" "$after" "$before"
expect "the durable agent after reap" "$(ars alice show hc-durable -o json | j 'd["pid"]')" "$pid_back"

step "purge the package: the timer and units are gone, users' agent files untouched"
home_files() { # every file of both users' agents: path, type, mode, owner; content hashes (logs aside)
  in_root sh -c 'cd /home && set -- alice/.agent-relay alice/.config/systemd/user alice/.local/state/agent-relay-systemd \
    bob/.agent-relay bob/.config/systemd/user bob/.local/state/agent-relay-systemd &&
    find "$@" -printf "%p %y %m %U\n" 2>/dev/null | sort && find "$@" -type f ! -name "*.log" -exec sha256sum {} + 2>/dev/null | sort'
}
before=$(home_files)
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y $name >"$work/apt.log" 2>&1 || {
  tail -n 20 "$work/apt.log" >&2
  fail "apt-get purge $name"
}
status=$(in_root dpkg-query -W -f '${Status}' $name 2>/dev/null || true)
case $status in "" | "unknown ok not-installed") ;; *) fail "dpkg status after purge is '$status'" ;; esac
for f in /usr/bin/$name /usr/lib/systemd/user/agent-relay-reap.timer /usr/lib/systemd/user/agent-relay-reap.service \
  /usr/lib/systemd/user/agent_relay.slice /etc/systemd/user/timers.target.wants/agent-relay-reap.timer \
  /var/lib/systemd/deb-systemd-user-helper-enabled/agent-relay-reap.timer.dsh-also; do
  in_root test ! -e "$f" -a ! -L "$f" || fail "$f is still there after purge"
done
for u in alice bob; do
  as "$u" systemctl --user daemon-reload
  for unit in agent-relay-reap.timer agent-relay-reap.service agent_relay.slice; do
    state=$(as "$u" systemctl --user show "$unit" -p LoadState -p ActiveState --value | paste -sd ' ')
    case $unit in
    # The slice still holds the durable agent (alice): loaded as long as it has units, never a file.
    agent_relay.slice) [ "$(as "$u" systemctl --user show "$unit" -p FragmentPath --value)" = "" ] ||
      fail "$u's $unit still has a unit file after purge" ;;
    *) [ "$state" = "not-found inactive" ] || fail "$u's $unit after purge is '$state', expected 'not-found inactive'" ;;
    esac
  done
done
after=$(home_files)
[ "$before" = "$after" ] || fail "users' agent files changed in the purge: $(diff <(echo "$before") <(echo "$after") | head -n 20)"
in_root test -f "/home/alice/.agent-relay/logs/$session_durable.log" || fail "the durable agent's log is gone after purge"

step "tear down: power off, nothing left running"
in_root systemctl --no-block poweroff
deadline=$((SECONDS + 90))
while alive "$nspawn_pid"; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the container did not power off within 90 s"
  sleep 0.5
done
rc=0
wait "$nspawn_pid" || rc=$?
nspawn_pid=""
expect "systemd-nspawn's exit status after poweroff" "$rc" 0
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/ns/pid" 2>/dev/null)" != "$pidns" ] || fail "process ${p#/proc/} ($(cat "$p/comm" 2>/dev/null)) outlived the container"
done
left=$(findmnt -rn -o TARGET | grep -F "$work/" || true)
[ -z "$left" ] || fail "mounts left: $left"

echo "host check: Debian 12 with systemd as PID 1, the .deb, two lingering users, a reboot, a purge: ok in $((SECONDS - started)) s"
