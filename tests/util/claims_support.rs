//! Helpers of the claim tests (tests/system/claims.rs, tests/offline/claims.rs): a command run
//! with a deadline, a child's output read line by line as it comes, the fake runner's fatal lines,
//! and a FUSE file system whose one file never answers (a process reading it sleeps
//! uninterruptibly and survives SIGKILL until the file system goes away).

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What [`fake-runner`](../../examples/fake-runner.rs) prints on stderr before it exits on
/// something unexpected.
pub const FAKE_RUNNER_FATAL: &str = "FAKE-RUNNER FATAL";
/// The exit status that goes with it.
pub const FAKE_RUNNER_FATAL_STATUS: i32 = 86;

/// Lines of the agents' logs below `home` in which the fake runner gave up (`FAKE-RUNNER FATAL`).
pub fn fake_runner_fatal_lines(home: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(home.join(".agent-relay/logs")) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        // Regular files only: a test may have put a FIFO in a log's place (opening it would wait
        // for a writer forever), and a link is not ours to follow.
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned();
        let name = e.file_name().to_string_lossy().into_owned();
        out.extend(text.lines().filter(|l| l.contains(FAKE_RUNNER_FATAL)).map(|l| format!("{name}: {l}")));
    }
    out
}

/// Runs `cmd` (stdout and stderr captured, `stdin` written and closed) for at most `limit`;
/// `None` when it had to be killed. Also returns how long it ran.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> (Option<Output>, Duration) {
    let started = Instant::now();
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        let _ = pipe.write_all(bytes);
    }
    drop(pipe);
    // Drain both pipes in threads: a full pipe must not look like a hang.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let Some(status) = status else { return (None, took) };
    let output = Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() };
    (Some(output), took)
}

/// A running child whose stdout is read line by line as it comes (killed when dropped).
pub struct Lines {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Lines {
    pub fn start(mut cmd: Command) -> Lines {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("spawn");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines { child, lines: rx }
    }

    /// Lines until one satisfies `pred` (returned with it last), or `Err` with what came.
    pub fn until(&self, limit: Duration, mut pred: impl FnMut(&str) -> bool) -> Result<Vec<String>, Vec<String>> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = pred(&l);
                    seen.push(l);
                    if done {
                        return Ok(seen);
                    }
                }
                Err(_) => break,
            }
        }
        Err(seen)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's state letter from `/proc/PID/stat` (`R`, `S`, `D`, `T`, `Z`, …).
pub fn proc_state(pid: u64) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next())
}

// FUSE, as far as this needs it (linux/fuse.h).
const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_STATFS: u32 = 17;
const FUSE_INIT: u32 = 26;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_BATCH_FORGET: u32 = 42;
const IN_HEADER: usize = 40;

/// A FUSE file system mounted at a directory, served by a thread of this process: the root is
/// an empty directory, except that a lookup of [`StuckFuse::STUCK`] is never answered. A process
/// that opens `<mountpoint>/stuck` waits for the answer; once it has a fatal signal it waits
/// uninterruptibly (`D`, as on a hung network file system) and SIGKILL cannot end it. Dropping
/// the value closes the FUSE device, which aborts the connection (the process then ends), and
/// unmounts. Needs root and /dev/fuse.
pub struct StuckFuse {
    pub mountpoint: PathBuf,
    stop: Arc<AtomicBool>,
    asked: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl StuckFuse {
    pub const STUCK: &'static str = "stuck";

    pub fn mount(mountpoint: &Path) -> StuckFuse {
        use nix::libc;
        std::fs::create_dir_all(mountpoint).unwrap();
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/fuse")
            .unwrap_or_else(|e| panic!("cannot open /dev/fuse ({e}): this test needs FUSE (root, the fuse module)"));
        let dev: OwnedFd = dev.into();
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let opts =
            std::ffi::CString::new(format!("fd={},rootmode=40000,user_id={uid},group_id={gid}", dev.as_raw_fd()))
                .unwrap();
        let target = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"agent-relay-stuck".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mounting FUSE at {}: {}", mountpoint.display(), std::io::Error::last_os_error());
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicBool::new(false));
        let server = {
            let (stop, asked) = (stop.clone(), asked.clone());
            std::thread::spawn(move || serve(dev, &stop, &asked))
        };
        StuckFuse { mountpoint: mountpoint.to_path_buf(), stop, asked, server: Some(server) }
    }

    /// The path whose lookup never returns.
    pub fn stuck_path(&self) -> PathBuf {
        self.mountpoint.join(Self::STUCK)
    }

    /// Someone has asked for [`StuckFuse::STUCK`] (and waits).
    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }
}

impl Drop for StuckFuse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.server.take() {
            let _ = t.join(); // closes the device: the connection is aborted
        }
        let target = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { nix::libc::umount2(target.as_ptr(), nix::libc::MNT_DETACH) };
    }
}

/// Serves requests on the (non-blocking) FUSE device until `stop`; then closes it.
fn serve(dev: OwnedFd, stop: &AtomicBool, asked: &AtomicBool) {
    let file = std::fs::File::from(dev);
    let mut buf = vec![0u8; 1 << 20];
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |b: &[u8], i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap());
    let reply = |unique: u64, error: i32, body: &[u8]| {
        let mut out = Vec::with_capacity(16 + body.len());
        out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&error.to_ne_bytes());
        out.extend_from_slice(&unique.to_ne_bytes());
        out.extend_from_slice(body);
        // SAFETY: writing our buffer to our descriptor.
        unsafe { nix::libc::write(file.as_raw_fd(), out.as_ptr().cast(), out.len()) };
    };
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = nix::libc::pollfd { fd: file.as_raw_fd(), events: nix::libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { nix::libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        // SAFETY: reading into our buffer.
        let n = unsafe { nix::libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(nix::libc::EAGAIN) | Some(nix::libc::EINTR) | Some(nix::libc::ENOENT) => continue,
                _ => break, // ENODEV: unmounted
            }
        }
        let req = &buf[..n as usize];
        if req.len() < IN_HEADER {
            continue;
        }
        let (opcode, unique) = (u32_at(req, 4), u64_at(req, 8));
        let body = &req[IN_HEADER..];
        match opcode {
            FUSE_INIT => {
                let mut out = [0u8; 64];
                out[0..4].copy_from_slice(&7u32.to_ne_bytes()); // major
                out[4..8].copy_from_slice(&31u32.to_ne_bytes()); // minor
                out[8..12].copy_from_slice(&body[8..12]); // max_readahead, as asked
                out[20..24].copy_from_slice(&4096u32.to_ne_bytes()); // max_write
                out[24..28].copy_from_slice(&1u32.to_ne_bytes()); // time_gran
                reply(unique, 0, &out);
            }
            FUSE_LOOKUP => {
                let name = body.split(|b| *b == 0).next().unwrap_or_default();
                if name == StuckFuse::STUCK.as_bytes() {
                    asked.store(true, Ordering::SeqCst); // and never answered
                } else {
                    reply(unique, -nix::libc::ENOENT, &[]);
                }
            }
            FUSE_GETATTR => {
                // fuse_attr_out: valid 1 s, then fuse_attr of the root directory.
                let mut out = [0u8; 104];
                out[0..8].copy_from_slice(&1u64.to_ne_bytes());
                out[16..24].copy_from_slice(&1u64.to_ne_bytes()); // ino
                out[76..80].copy_from_slice(&(nix::libc::S_IFDIR | 0o755).to_ne_bytes()); // mode
                out[80..84].copy_from_slice(&2u32.to_ne_bytes()); // nlink
                reply(unique, 0, &out);
            }
            FUSE_STATFS => {
                let mut out = [0u8; 80];
                out[40..44].copy_from_slice(&4096u32.to_ne_bytes()); // bsize
                out[44..48].copy_from_slice(&255u32.to_ne_bytes()); // namelen
                reply(unique, 0, &out);
            }
            // No answer expected; the interrupted lookup stays unanswered on purpose.
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => {}
            _ => reply(unique, -nix::libc::ENOSYS, &[]),
        }
    }
    drop(file);
}
