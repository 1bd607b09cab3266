//! Integration tests against private `systemd --user` managers, each test starting its own
//! (tests/util): they need root, systemd 252+ and dbus-user-session.
//! `cargo test --test system`.

#[path = "../util/mod.rs"]
mod util;

// Spawn admission: shared slots, the host-headroom gate, the visible queue, --no-wait, retries.
mod admission;
// spawn / list / show / stop as an operator checks them: systemctl, /proc, file modes.
mod agents;
// Bad spawn requests and arguments: one line, exit 2, no unit and no file left.
mod bad_input;
// Claims of the README and RELIABILITY.md with no other test: logs, kill, terminal, timeouts,
// exit 7, the stop cap, config variables, file modes, prefixes, watch's stream events.
mod claims;
// The JSON contract: every verb's `-o json` output valid against its schema in schema/.
mod contract;
// `doctor` on a fresh manager, with the units installed, with no manager and a hung one.
mod doctor;
// Durable agents (`spawn --persist`): unit files, restarts of the manager, `remove`.
mod durable;
// Declared agents (`.agent` files) through our systemd user generator: reloads, secrets, edits.
mod generator;
// Exit truth: every exit code and signal reported exactly by `diagnose`; crash loops.
mod exits;
// Guest terminals: a tmux server per guest in its own unit, bound to its agent, ended at its TTL.
mod guests;
// restart: a transactional swap of generations, transient and durable.
mod restart;
// One spawnRequestId is one agent, a reused name starts clean, a restart replays no prompt.
mod dropin;
// Hostile callers: metadata forged through LogExtraFields= across a reload; planted symlinks.
mod hostile_meta;
// Hostile words on the runner's argv: never expanded by systemd, exact after a reload and a restart.
mod hostile_exec;
// Hostile callers and runners: oversized requests, planted links, non-files, tmux formats.
mod hostile_input;
// A hung manager (SIGSTOP): every command fails within --timeout; `watch` rides it out.
mod hung;
// The CLI SIGKILLed mid-spawn and mid-stop: nothing half made after one `reap`.
mod killed;
// Hundreds of live agents in list/watch/stop; crash loops do not hold up other spawns.
mod load;
// Drop-in for the orchestrator: inherited env, its config loader, records, unforgeable exit records.
mod orchestrator;
// `reap`: leftovers of gone agents go; live agents, fresh files and durable secrets stay.
mod reap;
// Races settled by systemd, stop racing reap, secrets never where others look.
mod reliability;
// Among 200 agents a reference by agent id costs what one by unit costs (show, stop).
mod scale;
// The private manager itself and the `sandbox` verb: private, and nothing left behind.
mod sandbox;
// The orchestrator's seams: stop's window and `killed`, one unit per request, every id
// addressable and ambiguity refused, `watch` from a snapshot with numbered events.
mod seams;
// Terminals of an agent's own tmux session: capture, send, resize; input rules; hostile runners.
mod terminals;
// `watch`: deaths reported fast and exactly, nothing false across reloads and a reexec.
mod watch;
// The operator's toolkit: list filters and --no-headers, wait.
mod toolkit;
// The operator's toolkit, second part: start of a durable agent, spawn --wait-ready.
mod toolkit2;
// Resources per agent against /proc, list -o wide, top, status, list --all.
mod toolkit3;
// Logs over time: run markers, each line's time, --since, --follow with times, planted links.
mod logtimes;
