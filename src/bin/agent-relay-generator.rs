//! `agent-relay-generator`: the systemd user generator (systemd.generator(7)) of declared agents,
//! installed in `/usr/lib/systemd/user-generators/`. The user manager runs it at start and at
//! every daemon-reload with its output directories; it writes one unit per valid `.agent` file
//! (see `agent_relay_systemd::ops::generate`). A binary of its own: a generator runs for every
//! user at every reload, so it starts without the CLI's parser or async runtime.

fn main() -> std::process::ExitCode {
    agent_relay_systemd::ops::generate::generator_main(std::env::args_os().collect())
}
