//! Dynamic completion: the names of this user's agents and guests, offered by the bash
//! completion where a verb takes one. The script asks `agent-relay-systemd complete-names KIND`
//! (the command as typed, with the `--config` typed), which answers within 2 s or not at all.

use std::time::Duration;

use crate::cli::args::NameKind;
use crate::error::Error;
use crate::io::host::HostEnv;
use crate::model::config::Config;
use crate::ops::Supervisor;

/// The whole answer is bounded by this (the manager, the unit listing, the guests).
const NAMES_BOUND: Duration = Duration::from_secs(2);

/// Session names and spawn request ids of agents, guest names, or both; sorted, unique. `cfg`
/// and `host` are what every verb starts from; the bound is ours.
pub async fn names(cfg: Config, host: HostEnv, kind: NameKind) -> Result<Vec<String>, Error> {
    let work = async {
        let sup = Supervisor::connect(cfg, host, NAMES_BOUND).await?;
        let mut out = Vec::new();
        if matches!(kind, NameKind::Agents | NameKind::Terminals) {
            for a in sup.list().await? {
                out.push(a.session_name);
                out.extend(a.spawn_request_id);
            }
        }
        if matches!(kind, NameKind::Guests | NameKind::Terminals) {
            out.extend(sup.guest_list().await?.into_iter().map(|g| g.guest));
        }
        Ok::<_, Error>(out)
    };
    let mut out = tokio::time::timeout(NAMES_BOUND, work)
        .await
        .map_err(|_| Error::Timeout { what: "listing names to complete".into(), after: NAMES_BOUND })??;
    // Only words a shell can offer as they are.
    out.retain(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && !"'\"\\$`;&|<>(){}*?[]~#".contains(c)));
    out.sort();
    out.dedup();
    Ok(out)
}

/// Bash code appended to clap's script: a wrapper around clap's completion function that offers
/// agent or guest names at the verbs' first positional word (clap offers only `<AGENT>`).
/// The flags that take a value are read from the command definition, so their values are not
/// taken for positional words.
pub fn bash_dynamic(cmd: &clap::Command, clap_script: &[u8]) -> String {
    // The name clap gave its function: what its own `complete -F` registers.
    let script = String::from_utf8_lossy(clap_script);
    let clap_fn = script
        .split("complete -F ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("_agent__relay__systemd")
        .to_string();
    let mut valued: Vec<String> = Vec::new();
    let mut collect = |c: &clap::Command| {
        for a in c.get_arguments().filter(|a| a.get_action().takes_values() && !a.is_positional()) {
            valued.extend(a.get_long().map(|l| format!("--{l}")));
            valued.extend(a.get_short().map(|s| format!("-{s}")));
        }
    };
    collect(cmd);
    for sub in cmd.get_subcommands() {
        collect(sub);
        for subsub in sub.get_subcommands() {
            collect(subsub);
        }
    }
    valued.sort();
    valued.dedup();
    let valued = valued.join("|");
    format!(
        r#"
# Agent and guest names, from the user manager (`agent-relay-systemd complete-names`).
_agent_relay_systemd_names() {{
    local clap_fn="$1"; shift
    "$clap_fn" "$@"
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
    [[ "$cur" == -* ]] && return 0
    local -a pos=() cfg=()
    local i w prev=""
    for ((i=1; i<COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        if [[ "$prev" == --config ]]; then cfg=(--config "$w"); fi
        case "$prev" in {valued}) prev="$w"; continue ;; esac
        prev="$w"
        [[ "$w" == -* ]] || pos+=("$w")
    done
    case "$prev" in {valued}) return 0 ;; esac
    local kind=""
    case "${{pos[0]-}}" in
        show|stop|kill|diagnose|logs|wait|start|remove|restart) [[ ${{#pos[@]}} -eq 1 ]] && kind=agents ;;
        guest) [[ ${{#pos[@]}} -eq 2 && "${{pos[1]}}" == create ]] && kind=agents
               [[ ${{#pos[@]}} -eq 2 && "${{pos[1]}}" == stop ]] && kind=guests ;;
        terminal) [[ ${{#pos[@]}} -eq 2 ]] && kind=terminals ;;
    esac
    [[ -n "$kind" ]] || return 0
    local names
    names=$("${{COMP_WORDS[0]}}" "${{cfg[@]}}" complete-names "$kind" 2>/dev/null) || return 0
    COMPREPLY=($(compgen -W "$names" -- "$cur"))
}}
_agent_relay_systemd_with_names() {{ _agent_relay_systemd_names {clap_fn} "$@"; }}
if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F _agent_relay_systemd_with_names -o nosort -o bashdefault -o default agent-relay-systemd
else
    complete -F _agent_relay_systemd_with_names -o bashdefault -o default agent-relay-systemd
fi
"#
    )
}
