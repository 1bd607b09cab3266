//! The writer of an agent's log (`log-tee`, an agent unit's `ExecStart=` in front of the runner;
//! and `run-agent`'s): it writes the run's marker line, starts a writer process (in the unit's
//! control group, not the runner's child), and replaces
//! itself with the runner (`execve`: the runner keeps the unit's main pid, cgroup, environment and
//! exit status), whose standard output and error are a pipe to that writer. The writer appends
//! what it reads to the log and, for each new moment, an entry to the log's times file
//! (see [`crate::model::logtimes`]), until every holder of the pipe has closed it.
//!
//! The writer never stops the runner: it ignores the signals a stop sends (the stop ends it by
//! ending the runner, whose output it drains first), keeps reading when the log cannot be
//! written, and runs without its times file when that cannot be opened (a link, not a file).
//! Only the runner's exec is fatal, with systemd's own status for it.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult};

use crate::io::host::now_ms;
use crate::model::logtimes;

/// What is read from the pipe at once.
const CHUNK: usize = 64 * 1024;

/// Replaces this process with `argv` (argv\[0\] the program, by absolute path), `env` added to the
/// environment, its output going through a writer of ours to `log` (and the times to `times`).
/// Returns only when the runner could not be executed, with why. Call it before any thread is
/// started (it forks).
pub fn exec_teed(log: OwnedFd, times: &Path, argv: &[OsString], env: &[(String, String)]) -> std::io::Error {
    let Some((program, args)) = argv.split_first() else {
        return std::io::Error::other("no command to run");
    };
    let mut writer = Writer::new(log, times);
    let now = now_ms();
    let invocation = std::env::var("INVOCATION_ID").ok();
    writer.append(logtimes::marker(now, std::process::id(), invocation.as_deref()).as_bytes(), now);
    // The unit is ready (`Type=notify`) once the runner's exec has succeeded: a failed one ends
    // this process with systemd's status for it before then, and the start job fails, as with
    // `Type=exec`. The runner gets no notify socket.
    let notify = std::env::var_os("NOTIFY_SOCKET");
    let mut runner = Command::new(program);
    runner.arg0(program).args(args).envs(env.iter().map(|(k, v)| (k, v))).env_remove("NOTIFY_SOCKET");
    let pipes = nix::unistd::pipe2(OFlag::O_CLOEXEC).and_then(|o| Ok((o, nix::unistd::pipe2(OFlag::O_CLOEXEC)?)));
    let Ok(((read_end, write_end), (status_read, status_write))) = pipes else {
        return exec_direct(runner, writer, notify.as_deref());
    };
    // The writer is forked twice, so that it is not the runner's child (a runner that waits for
    // all its children would wait for it): the user manager, a subreaper, adopts it.
    // SAFETY: this process has one thread (the verb runs before any runtime or thread starts),
    // so the children may run any code; they only fork, read, write, send and exit.
    let started = match unsafe { fork() } {
        Ok(ForkResult::Child) => match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop((write_end, status_write));
                if exec_succeeded(status_read) {
                    notify_ready(notify.as_deref());
                }
                writer.drain(read_end);
                std::process::exit(0);
            }
            Ok(ForkResult::Parent { .. }) => std::process::exit(0),
            Err(_) => std::process::exit(1),
        },
        Ok(ForkResult::Parent { child }) => {
            matches!(nix::sys::wait::waitpid(child, None), Ok(nix::sys::wait::WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    };
    if !started {
        // No writer (no process to spare: a low TasksMax): the runner runs all the same.
        return exec_direct(runner, writer, notify.as_deref());
    }
    drop((read_end, status_read, writer));
    let err_end = match write_end.try_clone() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let e = runner.stdout(Stdio::from(write_end)).stderr(Stdio::from(err_end)).exec();
    let _ = nix::unistd::write(status_write.as_fd(), b"x");
    e
}

/// The runner with its output straight to the log, untimed (when no writer could be started),
/// ready as it is executed.
fn exec_direct(mut runner: Command, writer: Writer, notify: Option<&std::ffi::OsStr>) -> std::io::Error {
    let (out, err) = match (writer.log.try_clone(), writer.log.try_clone()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    drop(writer);
    notify_ready(notify);
    runner.stdout(Stdio::from(out)).stderr(Stdio::from(err)).exec()
}

/// Whether the runner's exec succeeded: the status pipe, close-on-exec, closed without a word.
fn exec_succeeded(status: OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(status.as_fd(), &mut byte) {
            Err(nix::errno::Errno::EINTR) => {}
            r => return r == Ok(0),
        }
    }
}

/// `READY=1` to the manager's notify socket (`$NOTIFY_SOCKET`: a path, or `@` and an abstract
/// name), when there is one.
fn notify_ready(socket: Option<&std::ffi::OsStr>) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(socket) = socket else { return };
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(Path::new(socket)),
    };
    if let (Ok(addr), Ok(sock)) = (addr, UnixDatagram::unbound()) {
        let _ = sock.send_to_addr(b"READY=1", &addr);
    }
}

/// The log and its times file, as the writer holds them.
struct Writer {
    log: OwnedFd,
    /// `None` when the log is not a regular file (no offsets) or the times file cannot be opened.
    times: Option<std::fs::File>,
    last_ms: Option<u64>,
}

impl Writer {
    fn new(log: OwnedFd, times_path: &Path) -> Writer {
        let log_is_file =
            nix::sys::stat::fstat(log.as_fd()).is_ok_and(|s| (s.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFREG);
        let times = if log_is_file { crate::io::nofollow::open_appending(times_path).ok() } else { None };
        Writer { log, times, last_ms: None }
    }

    /// Appends `bytes` to the log, and an entry for where they went when `now` is a new moment.
    fn append(&mut self, bytes: &[u8], now: u64) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match nix::unistd::write(self.log.as_fd(), rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                // A full disk or a cut file: this chunk is lost, the runner is not held up.
                Err(_) => return,
            }
        }
        let due = self.last_ms.is_none_or(|last| now >= last + logtimes::RESOLUTION_MS);
        let Some(times) = self.times.as_mut().filter(|_| due) else { return };
        let Ok(stat) = nix::sys::stat::fstat(self.log.as_fd()) else { return };
        let start = (stat.st_size.max(0) as u64).saturating_sub(bytes.len() as u64);
        if std::io::Write::write_all(times, logtimes::entry(start, now).as_bytes()).is_ok() {
            self.last_ms = Some(now);
        }
    }

    /// Copies the pipe to the log until every writer of it has closed it.
    fn drain(mut self, pipe: OwnedFd) {
        for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGPIPE, Signal::SIGQUIT] {
            // SAFETY: SIG_IGN installs no handler code.
            let _ = unsafe { signal(sig, SigHandler::SigIgn) };
        }
        let _ = nix::sys::prctl::set_name(c"agent-relay-log");
        let mut buf = vec![0u8; CHUNK];
        loop {
            match nix::unistd::read(pipe.as_fd(), &mut buf) {
                Ok(0) => return,
                Ok(n) => self.append(&buf[..n], now_ms()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}
