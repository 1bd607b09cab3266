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
    (
        "XDG_CONFIG_HOME",
        "Durable agents' unit files go to $XDG_CONFIG_HOME/systemd/user, declared agents are read from $XDG_CONFIG_HOME/agent-relay/agents (default ~/.config).",
    ),
    ("XDG_STATE_HOME", "Durable agents' secret directories and exit records (default ~/.local/state)."),
    (
        "TMUX_TMPDIR",
        "Where tmux sockets are (default /tmp): guests' servers, and the only directory where an agent's own terminal is looked for.",
    ),
];

const FILES: &[(&str, &str)] = &[
    ("~/.agent-relay/orchestrator.json", "The orchestrator config file (missing: defaults)."),
    ("~/.agent-relay/logs/SESSION.log", "An agent's output (0600), written by our log writer, a marker line at each run's start; logs reads it."),
    ("~/.agent-relay/logs/SESSION.times", "When each part of that log was written (offset and ms per line, 0600); logs --since and --timestamps read it."),
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
    (
        "$XDG_STATE_HOME/agent-relay-systemd/",
        "Durable and declared agents' secret files and the exit records diagnose reads.",
    ),
    (
        "$XDG_CONFIG_HOME/agent-relay/agents/NAME.agent",
        "A declared agent (see DECLARED AGENTS); an empty file or a link to /dev/null masks NAME.",
    ),
    ("/etc/agent-relay/agents/NAME.agent", "A declared agent an administrator ships to every user."),
    (
        "/usr/lib/systemd/user-generators/agent-relay-generator",
        "The user generator: .agent files to units at each daemon-reload, in $XDG_RUNTIME_DIR/systemd/generator.",
    ),
];

/// The `[Agent]` keys of `.agent` files (README "Declared agents" has them as a table).
const AGENT_KEYS: &[(&str, &str)] = &[
    ("Provider=", "Required: the spawn request's provider (claude, codex, ...)."),
    ("Cwd=", "Required: the working directory, absolute or ~/..., inside the config's baseDir."),
    ("Label=", "The label (default: NAME)."),
    ("AgentId=", "The agent id (default: HOST-PROVIDER-LABEL-8 hex digits of NAME)."),
    ("TaskId=", "A number or text; the session is named task-N..."),
    ("ApprovalMode=", "The approval mode (default guarded)."),
    ("Rig=", "The runner's --rig."),
    ("Model=", "The runner's --model."),
    ("Effort=", "The runner's --effort."),
    ("Profile=", "The runner's --profile."),
    ("Prompt=", "The prompt, one line."),
    ("PromptFile=", "The prompt from a regular file (absolute or ~/..., not a link, at most 8 MiB)."),
    ("SystemPromptAppend=", "The system prompt append, one line."),
    ("SystemPromptAppendFile=", "The system prompt append from a file, as PromptFile=."),
    ("Tags=", "Tags, words; repeatable, empty clears."),
    ("Capabilities=", "Capabilities, words; repeatable, empty clears."),
    ("ProviderArgs=", "The runner's arguments after --, words; repeatable, empty clears."),
    ("Environment=", "KEY=VALUE words for the runner, written to a 0600 file, never the unit; repeatable."),
    ("AgentProfile=", "The agent profile, a JSON object on one line."),
    ("Workspace=", "The workspace, a JSON object on one line."),
    ("RelayInjectionEvents=", "Events to inject, a JSON array on one line."),
    ("PolicyName=", "The policy name."),
    ("SpawnRequestId=", "The spawn request id; names the unit as for a spawn."),
    ("Lifecycle=", "persistent (default: restarted on failure) or ephemeral."),
    ("WorkspaceMode=", "The workspace mode (default inherit)."),
    ("AutomationId=", "The automation id."),
    ("AutomationRunId=", "The automation run id."),
    ("RequestedVia=", "mcp tags the agent agent-spawned."),
    ("ReplayPromptOnRestart=", "A boolean: every start reads the prompt again."),
    ("MemoryMax=", "A byte size (512M, 2G)."),
    ("MemoryHigh=", "A byte size."),
    ("TasksMax=", "A number of tasks."),
    ("CPUQuota=", "Percent of one CPU (150%)."),
];

const DECLARED: &str = "\
An agent can be declared in NAME.agent in $XDG_CONFIG_HOME/agent-relay/agents or /etc/agent-relay/agents \
(the user's hides the same name in /etc). The user generator agent-relay-generator makes one unit per valid \
file at each daemon-reload: agent-relay-managed-SESSION.service, also named NAME.agent.service \
(systemctl --user start NAME.agent). A file that is not valid is skipped with one line on the generator's \
stderr (the journal); generate --dry-run shows what the generator writes and why it skips a file. \
No secret is written into the unit: its ExecStartPre= (prepare-agent) writes the token and variables to \
0600 files at each start, refusing a file changed since the last daemon-reload.
The syntax is a unit file's. [Agent] holds the spawn request's fields, as data: no % specifier or $ \
variable is expanded. List keys take words quoted as systemd quotes them. [Unit] and [Service] lines are \
copied into the unit (except the keys the agent's unit sets); [Install] WantedBy=, RequiredBy=, UpheldBy= \
and Alias= become links. An unknown section or key, or a key given twice, is an error.
The [Agent] keys:";

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

    page += ".SH \"DECLARED AGENTS\"\n";
    for para in DECLARED.lines() {
        page += ".PP\n";
        page += &escape(para);
        page.push('\n');
    }
    for (key, what) in AGENT_KEYS {
        tagged(&mut page, key, what);
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_agent_key_is_documented_here_and_in_the_readme() {
        let readme = include_str!("../../README.md");
        for key in crate::model::agentfile::AGENT_KEYS {
            let spelled = format!("{key}=");
            assert!(super::AGENT_KEYS.iter().any(|(k, _)| *k == spelled), "{spelled} is not in the man page");
            assert!(readme.contains(&format!("| `{spelled}` |")), "{spelled} is not in README's key table");
        }
        assert_eq!(super::AGENT_KEYS.len(), crate::model::agentfile::AGENT_KEYS.len());
    }
}
