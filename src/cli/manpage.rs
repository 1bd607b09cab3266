//! The man page: clap_mangen's sections for what clap knows (synopsis, options), ours for the rest.
//! Verbs are listed as `agent-relay-systemd VERB` (no per-verb pages are shipped; each verb's
//! `--help` is its page), and ENVIRONMENT, FILES and EXIT STATUS say what the README says.

use std::io::Write;

use clap::CommandFactory;

use super::args::{Cli, EXAMPLES, EXIT_CODES};

const ENVIRONMENT: &[(&str, &str)] = &[
    ("AGENT_RELAY_SYSTEMD_TIMEOUT", "The bound on every call to the systemd user manager, in seconds (--timeout; default 10)."),
    ("AGENT_RELAY_ORCHESTRATOR_CONFIG", "The orchestrator config file when --config is not given."),
    ("AGENT_RELAY_LOG", "What is logged to stderr: error, warn, info, debug, trace."),
    (
        "AGENT_RELAY_ORCHESTRATOR_ID, AGENT_RELAY_ORCHESTRATOR_HOSTNAME, AGENT_RELAY_URL, AGENT_RELAY_TOKEN, AGENT_RELAY_ORCHESTRATOR_BASE_DIR, AGENT_RELAY_ORCHESTRATOR_API_PORT",
        "Defaults for the config file's settings (a value in the file wins).",
    ),
    (
        "AGENT_RELAY_RUNNER_COMMAND, AGENT_RELAY_INHERIT_ENV",
        "Override the config file's runnerCommand and inheritEnvironment.",
    ),
    (
        "AGENT_RELAY_MAX_CONCURRENT_SPAWNS, AGENT_RELAY_SPAWN_MIN_FREE_MEM_MB, AGENT_RELAY_SPAWN_MAX_LOAD_PER_CPU, AGENT_RELAY_SPAWN_MAX_MEMORY_PRESSURE, AGENT_RELAY_SPAWN_ADMISSION_MAX_WAIT_MS, AGENT_RELAY_SPAWN_ADMISSION_POLL_MS, AGENT_RELAY_SPAWN_ADMISSION_DISABLED",
        "Override the spawn admission gate's settings (maxConcurrentSpawns 2, spawnMinFreeMemMb 512, spawnMaxLoadPerCpu 4, spawnMaxMemoryPressure 10, spawnAdmissionMaxWaitMs 60000, spawnAdmissionPollMs 2000, spawnAdmissionDisabled false); a spawn not admitted in time exits 9.",
    ),
    (
        "XDG_RUNTIME_DIR",
        "The user manager's private socket ($XDG_RUNTIME_DIR/systemd/private) and the session bus are found here; so are the per-request locks.",
    ),
    ("XDG_CONFIG_HOME", "Durable agents' unit files go to $XDG_CONFIG_HOME/systemd/user (default ~/.config)."),
    ("XDG_STATE_HOME", "Durable agents' secret directories and exit records (default ~/.local/state)."),
    (
        "TMUX_TMPDIR",
        "Where tmux sockets are (default /tmp): guests' servers, and the only directory where an agent's own terminal is looked for.",
    ),
];

const FILES: &[(&str, &str)] = &[
    ("~/.agent-relay/orchestrator.json", "The orchestrator config file (missing: defaults)."),
    ("~/.agent-relay/logs/SESSION.log", "An agent's output (0600); logs reads it."),
    (
        "~/.agent-relay/runners/SESSION.json",
        "What the runner says about itself (its info file): its control URL, and its own tmux session and socket (tmuxSession, tmuxSocket), which terminal capture|send|resize use once checked.",
    ),
    ("$TMUX_TMPDIR/tmux-UID/", "tmux sockets: each guest's server, and the servers agents' runners name."),
    (
        "$XDG_RUNTIME_DIR/agent-relay-systemd/",
        "Secret and payload files of transient agents (request.json: the spawn request restart starts the successor from), request locks, admission slots and queue tickets.",
    ),
    ("$XDG_CONFIG_HOME/systemd/user/", "Unit files of durable agents (spawn --persist)."),
    ("$XDG_STATE_HOME/agent-relay-systemd/", "Durable agents' secret files and the exit records diagnose reads."),
];

/// Escapes text for roff: backslashes, hyphens (as minus signs, so they copy), and a leading `.` or `'`.
fn escape(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn tagged(out: &mut String, tag: &str, body: &str) {
    out.push_str(".TP\n");
    out.push_str(&format!(".B {}\n", escape(tag)));
    for line in body.lines() {
        out.push_str(&escape(line));
        out.push('\n');
    }
}

/// Writes the whole page to `w`.
pub(super) fn render(w: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Cli::command().after_long_help(EXAMPLES).after_help(EXAMPLES);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    // Each `render_*` writes roff's preamble first; keep the first one only.
    let mut first = Vec::new();
    man.render_title(&mut first)?;
    let first = String::from_utf8_lossy(&first).into_owned();
    let preamble = &first[..first.find(".TH").unwrap_or(0)];
    let piece = |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| -> std::io::Result<String> {
        let mut buf = Vec::new();
        f(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(text.strip_prefix(preamble).unwrap_or(&text).to_string())
    };
    let mut page = first.clone();
    page += &piece(&|b| man.render_name_section(b))?;
    page += &piece(&|b| man.render_synopsis_section(b))?;
    page += &piece(&|b| man.render_description_section(b))?;
    page += &piece(&|b| man.render_options_section(b))?;

    page += ".SH COMMANDS\n";
    page += &escape("Each command's --help says more, with an example.");
    page.push('\n');
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help") {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        tagged(&mut page, &format!("agent-relay-systemd {}", sub.get_name()), &about);
    }
    page += &piece(&|b| man.render_extra_section(b))?.replacen(".SH EXTRA", ".SH EXAMPLES", 1);

    page += ".SH ENVIRONMENT\n";
    for (name, what) in ENVIRONMENT {
        tagged(&mut page, name, what);
    }
    page += ".SH FILES\n";
    for (name, what) in FILES {
        tagged(&mut page, name, what);
    }
    page += ".SH \"EXIT STATUS\"\n";
    for line in EXIT_CODES.lines().skip(1) {
        let line = line.trim_start();
        match line.split_once("  ") {
            Some((code, what)) if code.chars().all(|c| c.is_ascii_digit()) => tagged(&mut page, code, what),
            // A continuation line of the code above.
            _ => {
                page += &escape(line);
                page.push('\n');
            }
        }
    }
    page += &piece(&|b| man.render_version_section(b))?;
    w.write_all(page.as_bytes())
}
