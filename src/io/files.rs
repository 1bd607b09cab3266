//! Our files and directories: 0700 directories, 0600 files created anew (never following or
//! reusing what is there), the files of a spawn (removed again unless kept), and lock files.
//! Our directories are writable by the agents (same user), so nothing in them is trusted: no
//! link is followed to read, chmod or delete, and only regular files are read, bounded in size.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::error::Error;
pub use crate::io::nofollow::{empty_regular, is_real_dir, open_regular, read_regular, remove_entry, remove_idle_lock};
use crate::model::plan::SpawnPlan;

/// How long a run waits for another holding the same lock (a reap, a durable spawn or remove).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes an exclusive `flock` on `path` (created 0600), retrying for up to `wait`; `what` names
/// the holder a time-out blames.
pub async fn lock_file(
    path: &Path,
    wait: std::time::Duration,
    what: &str,
) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(Error::io("opening", path))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let f = file.try_clone().map_err(Error::io("dup", path))?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(g) => return Ok(g),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(_) => return Err(Error::Timeout { what: what.to_string(), after: wait }),
        }
    }
}

/// Creates `dir` and missing parents with mode 0700, and tightens `dir` itself to 0700. `dir`
/// must be a real directory of this user: a symlink planted at its name is refused, never
/// followed (it is opened with `O_NOFOLLOW | O_DIRECTORY`, checked and chmodded through that
/// descriptor). Its parents are the user's own business (a symlinked `~/.local` is fine).
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(Error::io("creating directory", parent))?;
    }
    // mkdir never follows a symlink at the last component: it fails with EEXIST instead.
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Io { op: "creating directory", path: dir.to_path_buf(), source: e })
        }
        _ => {}
    }
    let refuse = |why: String| Error::Io {
        op: "refusing directory",
        path: dir.to_path_buf(),
        source: std::io::Error::other(format!("{why}; remove it and retry")),
    };
    let meta = std::fs::symlink_metadata(dir).map_err(Error::io("inspecting", dir))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symlink, not our directory".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    let opened =
        std::fs::OpenOptions::new().read(true).custom_flags((OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY).bits()).open(dir);
    let handle = match opened {
        Ok(h) => h,
        // Replaced by a symlink since the look above.
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ELOOP) | Some(nix::libc::ENOTDIR)) => {
            return Err(refuse("it is a symlink, not our directory".into()))
        }
        Err(e) => return Err(Error::Io { op: "opening directory", path: dir.to_path_buf(), source: e }),
    };
    let meta = handle.metadata().map_err(Error::io("inspecting", dir))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!("it is owned by uid {}, not by this user (uid {me})", meta.uid())));
    }
    handle.set_permissions(std::fs::Permissions::from_mode(0o700)).map_err(Error::io("setting mode of", dir))
}

/// The log holds a previous run's lines (a regular file with something in it).
fn previous_log(plan: &SpawnPlan) -> bool {
    std::fs::symlink_metadata(&plan.log_file).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// Whether a previous run of this session name left its runner info or log lines.
pub fn previous_run_left(plan: &SpawnPlan) -> bool {
    std::fs::symlink_metadata(&plan.runner_info_file).is_ok() || previous_log(plan)
}

/// Makes a new run of a reused session name start clean (the seed deletes the runner info and
/// truncates the log): the previous runner info goes (a link is removed, not followed), and the
/// previous log is kept readable as `<log>.1` (replacing an older one; its times file goes) while
/// the new run gets an empty 0600 log. Called only once no live agent has the name.
pub fn fresh_run(plan: &SpawnPlan) -> Result<(), Error> {
    remove_entry(&plan.runner_info_file)
        .map_err(Error::io("removing the previous runner info", &plan.runner_info_file))?;
    // The previous run's times go: they time the kept log, which `logs` does not read.
    let times = crate::model::logtimes::times_file(&plan.log_file);
    remove_entry(&times).map_err(Error::io("removing the previous log times", &times))?;
    if previous_log(plan) {
        let mut kept = plan.log_file.clone().into_os_string();
        kept.push(".1");
        std::fs::rename(&plan.log_file, &kept).map_err(Error::io("keeping the previous log", &plan.log_file))?;
        create_log(&plan.log_file)?;
    }
    Ok(())
}

/// Writes a new 0600 file (never following or reusing an existing one).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("creating", path))?;
    // No fsync: these live in the runtime dir (tmpfs), gone at reboot by design.
    f.write_all(contents).map_err(Error::io("writing", path))
}

/// Removes the per-attempt directories `<session>.<attempt>` in `agents_dir`, but `keep`.
pub fn remove_session_dirs(agents_dir: &Path, session: &str, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(agents_dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.rsplit_once('.').map(|(s, _)| s) == Some(session) && Some(e.path().as_path()) != keep {
            // A link planted under our name goes, never what it points to.
            let _ = remove_entry(&e.path());
        }
    }
}

/// Files a spawn made; removed again unless [`SpawnFiles::keep`] is called.
pub struct SpawnFiles {
    dir: Option<PathBuf>,
}

impl SpawnFiles {
    pub fn keep(mut self) {
        self.dir = None;
    }
}

impl Drop for SpawnFiles {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = remove_entry(&dir);
        }
    }
}

/// Writes the env file and payloads of a plan into its fresh agent directory, and makes sure the
/// log and runner-info directories exist (0700) and the log file is 0600.
pub fn write_spawn_files(plan: &SpawnPlan) -> Result<SpawnFiles, Error> {
    if let Some(parent) = plan.agent_dir.parent() {
        private_dir(parent)?;
        if let Some(root) = parent.parent() {
            private_dir(root)?;
        }
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&plan.agent_dir)
        .map_err(Error::io("creating directory", &plan.agent_dir))?;
    let guard = SpawnFiles { dir: Some(plan.agent_dir.clone()) };
    write_private_file(&plan.env_file, crate::model::plan::render_env_file(&plan.secret_env).as_bytes())?;
    for p in &plan.payloads {
        write_private_file(&p.path, p.contents.as_bytes())?;
    }
    for dir in [plan.log_file.parent(), plan.runner_info_file.parent()].into_iter().flatten() {
        private_dir(dir)?;
    }
    create_log(&plan.log_file)?;
    Ok(guard)
}

/// The agent's log file, 0600, opened for appending and never through a link at its name.
pub fn create_log(path: &Path) -> Result<(), Error> {
    crate::io::nofollow::open_appending(path)
        .map(drop)
        .map_err(Error::io("creating log file (not through a symlink)", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_regular_files_are_read_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        assert!(read_regular(&file, 4).unwrap_err().to_string().contains("larger than 4 bytes"));
        let link = d.path().join("zero");
        symlink("/dev/zero", &link).unwrap();
        assert!(read_regular(&link, 1 << 20).unwrap_err().to_string().contains("symbolic link"));
        assert!(read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err().to_string().contains("a device"));
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        assert!(read_regular(&fifo, 10).unwrap_err().to_string().contains("a FIFO"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(read_regular(d.path(), 10).unwrap_err().to_string().contains("a directory"));
    }

    #[test]
    fn links_in_our_directories_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(outside.join("2024-budget.xlsx"), "precious").unwrap();
        // chmod: a link where our directory should be is refused, its target untouched.
        let ours = d.path().join("ours");
        symlink(&outside, &ours).unwrap();
        let err = private_dir(&ours).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777, 0o755);
        // delete: a link named like a session's directory goes, not what it points to.
        let agents = d.path().join("agents");
        std::fs::create_dir(&agents).unwrap();
        symlink(&outside, agents.join("ar-claude-s-1.0badc0de")).unwrap();
        std::fs::create_dir(agents.join("ar-claude-s-1.1badc0de")).unwrap();
        remove_session_dirs(&agents, "ar-claude-s-1", None);
        assert_eq!(std::fs::read_dir(&agents).unwrap().count(), 0);
        assert!(outside.join("2024-budget.xlsx").exists());
        remove_entry(&ours).unwrap();
        assert!(outside.join("2024-budget.xlsx").exists() && !ours.exists());
        // lock files are not opened through a link.
        let lock = d.path().join("reap.lock");
        symlink(outside.join("2024-budget.xlsx"), &lock).unwrap();
        assert!(tokio_test_block_on(lock_file(&lock, std::time::Duration::ZERO, "x")).is_err());
        assert_eq!(std::fs::read_to_string(outside.join("2024-budget.xlsx")).unwrap(), "precious");
    }

    fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }
}
