//! `exec`: the launcher of the command lines a systemd older than 254 cannot keep in a transient
//! unit (see [`crate::model::exec`]). It decodes the words and replaces this process with the
//! program (`execve`: the same pid, cgroup, environment, working directory and file descriptors),
//! so the runner's `/proc/PID/cmdline` is exactly the planned argv.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;

use crate::model::exec;

/// Replaces this process with the decoded command line (`words`: the program, then argv with
/// argv\[0\] first). Returns only when that failed, with why. std's `exec` puts the signal
/// dispositions Rust changed (SIGPIPE) and the signal mask back as systemd had them.
pub fn exec_encoded(words: &[String]) -> String {
    let decoded: Result<Vec<OsString>, String> =
        words.iter().map(|w| exec::decode(w).map(OsString::from_vec)).collect();
    let words = match decoded {
        Ok(w) if w.len() >= 2 => w,
        Ok(_) => return "needs the program and argv[0]".into(),
        Err(e) => return e,
    };
    let err = std::process::Command::new(&words[0]).arg0(&words[1]).args(&words[2..]).exec();
    format!("cannot execute {}: {err}", words[0].to_string_lossy())
}
