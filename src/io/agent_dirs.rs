//! Declared agents' files: the `.agent` files of the user's and the system's directories (the
//! user's first: a name there hides the system's), each read as a regular file of bounded size
//! and never through a link (an empty file or a link to `/dev/null` masks, as for unit files);
//! the generator's output (unit files, alias and `.wants/` links); and a declared agent's secret
//! and payload files, written anew at each of its starts. Decides nothing about their contents.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::io::files;
use crate::io::host::HostEnv;
use crate::io::nofollow;
use crate::model::agentfile::{self, MAX_FILE_BYTES};
use crate::model::plan::{SpawnPlan, PROMPT_FILE_NAME};

/// Where an administrator ships declarations for every user.
pub const SYSTEM_DIR: &str = "/etc/agent-relay/agents";
/// `.agent` files read at most (the rest is reported, not read).
pub const MAX_FILES: usize = 4096;

/// `$XDG_CONFIG_HOME/agent-relay/agents` (`~/.config/agent-relay/agents`).
pub fn user_dir(host: &HostEnv) -> PathBuf {
    host.config_home.join("agent-relay").join("agents")
}

/// The directories searched, the user's first.
pub fn dirs(host: &HostEnv) -> Vec<PathBuf> {
    vec![user_dir(host), PathBuf::from(SYSTEM_DIR)]
}

/// What a declaration file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// An empty file or a link to `/dev/null`: no agent of this name, here or further down.
    Masked,
    /// Why it could not be read (a link, not a regular file, too large, not UTF-8, a bad name).
    Unreadable(String),
}

/// One `.agent` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The name (the file name without `.agent`), as found, valid or not.
    pub name: String,
    pub path: PathBuf,
    /// In the user's own directory (the first searched).
    pub user: bool,
    pub content: Content,
}

/// Every declaration in `dirs`, the first directory's winning for a name, sorted by name within
/// each directory; and problems with a directory itself (unreadable, too many files).
pub fn find(dirs: &[PathBuf]) -> (Vec<Found>, Vec<(PathBuf, String)>) {
    let mut out: Vec<Found> = Vec::new();
    let mut problems = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push((dir.clone(), format!("cannot be read: {e}")));
                continue;
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| agentfile::name_of_file(n).is_some())
            .collect();
        names.sort();
        for file in names {
            let name = agentfile::name_of_file(&file).unwrap_or_default().to_string();
            if out.iter().any(|f| f.name == name) {
                continue;
            }
            if out.len() >= MAX_FILES {
                problems
                    .push((dir.clone(), format!("holds more than {MAX_FILES} .agent files; the rest are not read")));
                break;
            }
            let path = dir.join(&file);
            let content = match agentfile::check_name(&name) {
                Ok(()) => read(&path),
                Err(e) => Content::Unreadable(e),
            };
            out.push(Found { name, path, user: i == 0, content });
        }
    }
    (out, problems)
}

/// A declaration's text, as [`Content`] says.
fn read(path: &Path) -> Content {
    if let Ok(target) = std::fs::read_link(path) {
        return match target == Path::new("/dev/null") {
            true => Content::Masked,
            false => Content::Unreadable(format!(
                "is a symbolic link (to {}), not followed: put the file itself in this directory",
                target.display()
            )),
        };
    }
    match nofollow::read_regular(path, MAX_FILE_BYTES) {
        Ok(bytes) if bytes.is_empty() => Content::Masked,
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Content::Text(text),
            Err(_) => Content::Unreadable("is not UTF-8 text".into()),
        },
        Err(e) => Content::Unreadable(format!("cannot be read: {e}")),
    }
}

/// A file a declaration names (`PromptFile=`): a regular file of at most `max` bytes, UTF-8,
/// never through a link at its name.
pub fn read_named_file(path: &Path, max: u64) -> Result<String, String> {
    let bytes = nofollow::read_regular(path, max).map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

/// Writes a unit file (0644: it holds no secret) into the generator's directory; a file of that
/// name already there (another generator's) is an error, not replaced.
pub fn write_unit(dir: &Path, unit: &str, text: &str) -> std::io::Result<()> {
    let path = dir.join(unit);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path)?;
    // The umask may have taken bits the manager needs: the unit is readable by what reads units.
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.write_all(text.as_bytes())
}

/// Makes the link `dir/path` → `target` (`default.target.wants/X` → `../X`), creating the
/// `.wants/` directory, which other generators may have made already.
pub fn write_link(dir: &Path, path: &str, target: &str) -> std::io::Result<()> {
    let at = dir.join(path);
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(target, at)
}

/// Writes a declared agent's files for a start: its 0700 directory (a real directory of this
/// user), the secret env file and the payloads (0600, each replaced atomically, so a start
/// never reads half a file); the prompt only when its file is not there, since the exit
/// recorder empties it after each run and a restart must not do the task again (unless
/// `replay`); the other directories of its session go. Then the log and runner-info
/// directories and the log file, as a spawn makes them.
pub fn write_start_files(plan: &SpawnPlan, env_text: &str, replay: bool) -> Result<(), Error> {
    if let Some(agents) = plan.agent_dir.parent() {
        if let Some(root) = agents.parent() {
            files::private_dir(root)?;
        }
        files::private_dir(agents)?;
    }
    files::private_dir(&plan.agent_dir)?;
    replace(&plan.env_file, env_text.as_bytes())?;
    for p in &plan.payloads {
        let once = p.path.file_name().is_some_and(|n| n == PROMPT_FILE_NAME) && !replay;
        if once && std::fs::symlink_metadata(&p.path).is_ok() {
            continue;
        }
        replace(&p.path, p.contents.as_bytes())?;
    }
    if let Some(agents) = plan.agent_dir.parent() {
        files::remove_session_dirs(agents, &plan.meta.session, Some(&plan.agent_dir));
    }
    for dir in [plan.log_file.parent(), plan.runner_info_file.parent()].into_iter().flatten() {
        files::private_dir(dir)?;
    }
    files::create_log(&plan.log_file)
}

/// A new 0600 file at `path`, by a temporary file renamed over it (a link at `path` is
/// replaced itself, never followed).
fn replace(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    nofollow::remove_entry(&tmp).map_err(Error::io("removing", &tmp))?;
    files::write_private_file(&tmp, contents)?;
    std::fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))
}

/// The secret env file `prepare-agent` wrote, read back by `run-agent`: a regular file of
/// bounded size, never through a link.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    // The request's variables (256 KiB), the config's and the token: far below this.
    const MAX_ENV_FILE: u64 = 4 * 1024 * 1024;
    let text = read_named_file(path, MAX_ENV_FILE)?;
    agentfile::parse_env_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_users_directory_wins_and_links_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let (user, system) = (t.path().join("user"), t.path().join("system"));
        std::fs::create_dir_all(&user).unwrap();
        std::fs::create_dir_all(&system).unwrap();
        let agent = "[Agent]\nProvider=claude\nCwd=/p\n";
        std::fs::write(system.join("shared.agent"), agent).unwrap();
        std::fs::write(system.join("hidden.agent"), agent).unwrap();
        std::fs::write(system.join("masked.agent"), agent).unwrap();
        std::fs::write(user.join("hidden.agent"), "[Agent]\nProvider=codex\nCwd=/p\n").unwrap();
        std::fs::write(user.join("masked.agent"), "").unwrap();
        symlink("/dev/null", user.join("nulled.agent")).unwrap();
        std::fs::write(system.join("nulled.agent"), agent).unwrap();
        std::fs::write(t.path().join("elsewhere"), agent).unwrap();
        symlink(t.path().join("elsewhere"), user.join("linked.agent")).unwrap();
        symlink("/dev/zero", user.join("zero.agent")).unwrap();
        nix::unistd::mkfifo(&user.join("fifo.agent"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(user.join("dir.agent")).unwrap();
        std::fs::write(user.join("bad name.agent"), agent).unwrap();
        std::fs::write(user.join("big.agent"), "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        std::fs::write(user.join("latin1.agent"), b"[Agent]\nLabel=\xe9\n").unwrap();
        std::fs::write(user.join("notes.txt"), "x").unwrap();
        std::fs::write(user.join("backup.agent~"), "x").unwrap();

        let started = std::time::Instant::now();
        let (found, problems) = find(&[user.clone(), system.clone(), t.path().join("missing")]);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "a FIFO was waited on");
        assert!(problems.is_empty(), "{problems:?}");
        let by = |n: &str| found.iter().find(|f| f.name == n).unwrap_or_else(|| panic!("{n}: {found:?}"));
        assert_eq!(by("hidden").path, user.join("hidden.agent"));
        assert!(matches!(&by("hidden").content, Content::Text(t) if t.contains("codex")));
        assert!(by("hidden").user && !by("shared").user);
        assert_eq!(by("masked").content, Content::Masked);
        assert_eq!(by("nulled").content, Content::Masked);
        let unreadable = |n: &str| match &by(n).content {
            Content::Unreadable(why) => why.clone(),
            other => panic!("{n}: {other:?}"),
        };
        assert!(unreadable("linked").contains("symbolic link"), "{}", unreadable("linked"));
        assert!(unreadable("zero").contains("symbolic link"));
        assert!(unreadable("fifo").contains("a FIFO"), "{}", unreadable("fifo"));
        assert!(unreadable("dir").contains("a directory"));
        assert!(unreadable("bad name").contains("not a valid agent name"));
        assert!(unreadable("big").contains("larger than"));
        assert!(unreadable("latin1").contains("UTF-8"));
        assert_eq!(found.len(), 11, "{found:?}");
        assert_eq!(found.iter().filter(|f| f.name == "hidden").count(), 1);
    }

    #[test]
    fn start_files_replace_links_and_keep_an_emptied_prompt() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state/durable");
        let session = "ar-claude-x-0123456789ab";
        let dir = root.join("agents").join(format!("{session}.aaaa0000"));
        let outside = t.path().join("outside");
        std::fs::write(&outside, "precious").unwrap();
        let mut plan = SpawnPlan {
            meta: crate::model::meta::AgentMeta { session: session.into(), ..Default::default() },
            unit: String::new(),
            description: String::new(),
            cwd: "/".into(),
            argv: vec![],
            environment: vec![],
            secret_env: vec![],
            env_file: dir.join("env"),
            payloads: vec![crate::model::plan::PayloadFile { path: dir.join("prompt"), contents: "do it".into() }],
            agent_dir: dir.clone(),
            log_file: t.path().join("home/.agent-relay/logs/x.log"),
            runner_info_file: t.path().join("home/.agent-relay/runners/x.json"),
            lifecycle: Default::default(),
            limits: Default::default(),
            record_exit_argv: None,
            log_tee_argv: None,
            dropped_env: vec![],
        };
        std::fs::create_dir_all(root.join("agents").join(format!("{session}.bbbb0000"))).unwrap();
        write_start_files(&plan, "A=\"1\"\n", false).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("prompt")).unwrap(), "do it");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&dir.join("env")), mode(&dir.join("prompt"))), (0o700, 0o600, 0o600));
        assert!(!root.join("agents").join(format!("{session}.bbbb0000")).exists(), "the old attempt stays");
        // Emptied by the recorder: the next start leaves it empty; a link put at the env file's
        // name is replaced, its target untouched.
        std::fs::write(dir.join("prompt"), "").unwrap();
        std::fs::remove_file(dir.join("env")).unwrap();
        symlink(&outside, dir.join("env")).unwrap();
        write_start_files(&plan, "A=\"2\"\n", false).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("prompt")).unwrap(), "");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
        assert_eq!(read_env_file(&dir.join("env")), Ok(vec![("A".into(), "2".into())]));
        write_start_files(&plan, "", true).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("prompt")).unwrap(), "do it", "replayed");
        // A link in place of the agent's directory is refused, never followed.
        std::fs::remove_dir_all(&dir).unwrap();
        symlink(t.path(), &dir).unwrap();
        plan.payloads.clear();
        assert!(write_start_files(&plan, "", false).unwrap_err().to_string().contains("symlink"));
        assert!(read_env_file(&dir.join("env")).is_err());
    }
}
