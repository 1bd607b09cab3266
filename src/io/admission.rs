//! The shell of spawn admission: the host's headroom from `/proc`, spawn slots as lock files
//! every CLI process of this user shares (no daemon: a slot is held while its process holds the
//! lock, and freed by the kernel when it dies), and the queue of waiting spawns as ticket files,
//! each locked by its waiter for as long as it waits (a ticket whose lock is free is a dead
//! waiter's and is removed by whoever finds it).
//!
//! `<runtime>/agent-relay-systemd/admission/{slots,queue}/`, 0700; files 0600, never opened
//! through a symlink.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::error::Error;
use crate::io::{files, nofollow};
use crate::model::admission::{self, Headroom, Ticket};

/// A ticket is a few hundred bytes; anything larger is not ours.
const MAX_TICKET_BYTES: u64 = 256 * 1024;

/// The host's headroom now. A `/proc` file that cannot be read leaves its gate open (as the
/// orchestrator's probe fails open): the gate is a guard against overload, not a new failure.
pub fn headroom() -> Headroom {
    let read = crate::io::host::read_proc;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    Headroom {
        usable_mem_mb: read("/proc/meminfo").as_deref().and_then(admission::parse_meminfo).unwrap_or(u64::MAX),
        load_per_cpu: read("/proc/loadavg").as_deref().and_then(admission::parse_loadavg).unwrap_or(0.0) / cpus,
        memory_pressure: read("/proc/pressure/memory").as_deref().and_then(admission::parse_memory_pressure),
    }
}

/// The admission directories below the runtime root.
#[derive(Debug, Clone)]
pub struct AdmissionDir {
    slots: PathBuf,
    queue: PathBuf,
}

/// A held spawn slot: free again when dropped (or when the process dies).
#[derive(Debug)]
pub struct Slot {
    _lock: Flock<File>,
}

/// This process's place in the queue: its ticket file, locked; removed when dropped.
#[derive(Debug)]
pub struct QueuePlace {
    path: PathBuf,
    lock: Flock<File>,
    pub name: String,
}

impl AdmissionDir {
    pub fn new(runtime_root: &Path) -> AdmissionDir {
        let root = runtime_root.join("admission");
        AdmissionDir { slots: root.join("slots"), queue: root.join("queue") }
    }

    /// Creates both directories (0700, never through a symlink).
    pub fn prepare(&self) -> Result<(), Error> {
        files::private_dir(&self.slots)?;
        files::private_dir(&self.queue)
    }

    /// One free slot of `count`, if any, without waiting.
    pub fn try_slot(&self, count: u32) -> Result<Option<Slot>, Error> {
        for index in 0..count {
            let path = self.slots.join(format!("slot-{index}.lock"));
            let file = open_private(&path, false)?;
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return Ok(Some(Slot { _lock: lock }));
            }
        }
        Ok(None)
    }

    /// Puts this spawn at the end of the queue. The ticket is written and locked under a
    /// temporary name, then renamed into the queue: a reader never sees it unlocked.
    pub fn enqueue(&self, ticket: &Ticket, now_ms: u64) -> Result<QueuePlace, Error> {
        let random = uuid::Uuid::new_v4().simple().to_string();
        let name = admission::ticket_name(now_ms, &random[..16]);
        let tmp = self.queue.join(format!(".{name}.tmp"));
        let file = open_private(&tmp, true)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::io("locking", &tmp)(std::io::Error::from(e)))?;
        let body = serde_json::to_vec(ticket).map_err(|e| Error::io("encoding", &tmp)(std::io::Error::other(e)))?;
        (&*lock).write_all(&body).map_err(Error::io("writing", &tmp))?;
        let path = self.queue.join(&name);
        std::fs::rename(&tmp, &path).map_err(Error::io("renaming", &tmp))?;
        Ok(QueuePlace { path, lock, name })
    }

    /// The live tickets' names, in queue order, each with its file open. A ticket whose lock is
    /// free belonged to a waiter that died: it is removed. Names that are not a ticket's, links
    /// and non-regular files are skipped.
    fn live(&self) -> Vec<(String, File)> {
        let Ok(entries) = std::fs::read_dir(&self.queue) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| admission::is_ticket_name(n))
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let path = self.queue.join(&name);
            let Ok(file) = nofollow::open_regular(&path) else { continue };
            match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Ok(_stale) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err((file, _)) => out.push((name, file)),
            }
        }
        out
    }

    /// The places in the queue: the live tickets' names, in order (no ticket is read, so one
    /// being rewritten keeps its place).
    pub fn waiting_names(&self) -> Vec<String> {
        self.live().into_iter().map(|(name, _)| name).collect()
    }

    /// The live tickets, in queue order, read (bounded); one that does not parse at this moment
    /// (its waiter is rewriting it) is left out of this answer.
    pub fn waiting(&self) -> Vec<(String, Ticket)> {
        let mut out = Vec::new();
        for (name, file) in self.live() {
            let mut body = Vec::new();
            if file.take(MAX_TICKET_BYTES).read_to_end(&mut body).is_err() {
                continue;
            }
            if let Ok(t) = serde_json::from_slice::<Ticket>(&body) {
                out.push((name, t));
            }
        }
        out
    }

    /// Whether any spawn is waiting (cheap: no ticket is read).
    pub fn anyone_waiting(&self) -> bool {
        std::fs::read_dir(&self.queue)
            .map(|mut d| {
                d.any(|e| {
                    e.ok().and_then(|e| e.file_name().into_string().ok()).is_some_and(|n| admission::is_ticket_name(&n))
                })
            })
            .unwrap_or(false)
    }
}

impl QueuePlace {
    /// Rewrites the ticket in place (its reason changed).
    pub fn update(&self, ticket: &Ticket) {
        if let Ok(body) = serde_json::to_vec(ticket) {
            let f: &File = &self.lock;
            let _ = f.set_len(0);
            let _ = f.write_all_at(&body, 0);
        }
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Marks a queued spawn's agent directory as in use (its time is now), so that `reap`, which
/// leaves alone what is younger than its grace period, does not take it while the spawn waits.
pub fn touch(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.set_modified(std::time::SystemTime::now());
    }
}

fn open_private(path: &Path, truncate: bool) -> Result<File, Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .read(true)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(Error::io("opening", path))
}
