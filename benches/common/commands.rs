//! The CLI and `systemctl --user` as the benchmark programs run them against a private manager:
//! a clean environment (PATH, HOME and the manager's variables alone). `#[path]`-included.

use std::path::Path;
use std::process::Command;

use agent_relay_systemd::io::sandbox::PrivateManager;

/// `c` with a clean environment for `mgr` and `home`.
pub fn env(c: &mut Command, home: &Path, mgr: &PrivateManager) {
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", home);
    c.envs(mgr.env());
}

/// Our CLI (`bin`) with `--config config` and `args`.
pub fn cli(bin: &Path, config: &Path, home: &Path, mgr: &PrivateManager, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    env(&mut c, home, mgr);
    c.arg("--config").arg(config).args(args);
    c
}

/// `systemctl --user` with `args`.
pub fn systemctl(home: &Path, mgr: &PrivateManager, args: &[&str]) -> Command {
    let mut c = Command::new("systemctl");
    env(&mut c, home, mgr);
    c.arg("--user").args(args);
    c
}
