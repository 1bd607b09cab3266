//! The `agent-relay-systemd` binary. Everything it does is the library's `cli` module: parse,
//! dispatch once, render, map failures to the documented exit codes.

fn main() -> std::process::ExitCode {
    agent_relay_systemd::cli::main()
}
