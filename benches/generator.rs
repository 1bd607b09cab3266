//! What declared agents cost a daemon-reload: a private `systemd --user` started with
//! `SYSTEMD_GENERATOR_PATH` holding our generator alone, reloaded (`systemctl --user
//! daemon-reload`, as an operator runs it) with no agents; with 200 `.agent` files, each
//! `WantedBy=default.target` (so the manager also loads 200 units) or without `[Install]`; and
//! with the very units the generator writes installed as unit files instead (what 200 durable
//! agents cost, generator or not); the variants take turns, each timed on its second reload (the
//! first after a switch also loads or drops the previous set's units). And the generator run by
//! itself on the 200 files and on none.
//!
//!     TMPDIR=/dev/shm cargo bench --bench generator      # BENCH_ROUNDS=5 for a quick run
//!
//! `TMPDIR` on a tmpfs puts the private manager's runtime directory (and so the generator's
//! output) on a tmpfs, as `/run/user/UID` is on a real host.

#[allow(dead_code)] // the clean environment alone
#[path = "common/commands.rs"]
mod commands;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_relay_systemd::io::sandbox::PrivateManager;

const AGENTS: usize = 200;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p90 of the samples, in ms.
fn summary(mut s: Vec<Duration>) -> (f64, f64) {
    s.sort();
    let at = |p: f64| ms(s[((s.len() as f64 - 1.0) * p).round() as usize]);
    (at(0.5), at(0.9))
}

fn timed(c: &mut Command) -> Duration {
    let t = Instant::now();
    let out = c.stdin(Stdio::null()).output().expect("run");
    let took = t.elapsed();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let generator = PathBuf::from(env!("CARGO_BIN_EXE_agent-relay-generator"));
    let mgr = PrivateManager::start_with_env(|root| {
        let dir = root.join("generators");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&generator, dir.join("agent-relay-generator")).unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(home.join("projects/app")).unwrap();
        let config = home.join("orchestrator.json");
        let cfg = serde_json::json!({"baseDir": home.join("projects"), "token": "bench-token", "runnerCommand": ["/bin/true"]});
        std::fs::write(&config, cfg.to_string()).unwrap();
        vec![
            ("SYSTEMD_GENERATOR_PATH".into(), dir.display().to_string()),
            ("HOME".into(), home.display().to_string()),
            ("AGENT_RELAY_ORCHESTRATOR_CONFIG".into(), config.display().to_string()),
        ]
    })
    .expect("a private systemd --user (root, systemd 252+)");
    let root = mgr.root().to_path_buf();
    // Each set lives under its own name and is moved into place for its reloads.
    let agents = root.join("config/agent-relay/agents");
    let units = root.join("config/systemd/user");
    let (wanted, plain, unit_files) = (root.join("set-wanted"), root.join("set-plain"), root.join("set-units"));
    for dir in [&wanted, &plain] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(agents.parent().unwrap()).unwrap();
    std::fs::create_dir_all(units.parent().unwrap()).unwrap();
    for i in 0..AGENTS {
        let text = format!(
            "[Agent]\nProvider=claude\nCwd=~/projects/app\nLabel=bench {i}\nModel=opus\nEnvironment=KEY_{i}=value-{i}\n\
             Prompt=review the open pull requests, number {i}\n[Service]\nNice=5\n"
        );
        std::fs::write(plain.join(format!("agent-{i:03}.agent")), &text).unwrap();
        let text = format!("{text}[Install]\nWantedBy=default.target\n");
        std::fs::write(wanted.join(format!("agent-{i:03}.agent")), text).unwrap();
    }
    let with_env = |program: &Path| {
        let mut c = Command::new(program);
        commands::env(&mut c, &root.join("home"), &mgr);
        c.env("AGENT_RELAY_ORCHESTRATOR_CONFIG", root.join("home/orchestrator.json"));
        c
    };
    let reload = || timed(with_env(Path::new("systemctl")).args(["--user", "daemon-reload"]));
    let count_units = || {
        let out = with_env(Path::new("systemctl"))
            .args(["--user", "list-units", "--all", "--plain", "--no-legend", "agent-relay-managed-*"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let scratch = root.join("scratch");
    let run_generator = || {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir(&scratch).unwrap();
        timed(with_env(&generator).arg(&scratch).arg(&scratch).arg(&scratch))
    };
    let mv = |from: &Path, to: &Path| std::fs::rename(from, to).unwrap();

    // The same 200 agents as plain unit files, as `spawn --persist` would install them: what
    // the generator writes, copied to the user's unit directory with their .wants/ links.
    mv(&wanted, &agents);
    reload();
    assert_eq!(count_units(), AGENTS, "the generator did not make {AGENTS} loaded agent units");
    run_generator();
    mv(&agents, &wanted);
    std::fs::create_dir_all(unit_files.join("default.target.wants")).unwrap();
    for e in std::fs::read_dir(&scratch).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.starts_with("agent-relay-managed-") {
            std::fs::copy(e.path(), unit_files.join(&name)).unwrap();
            let link = unit_files.join("default.target.wants").join(&name);
            std::os::unix::fs::symlink(format!("../{name}"), link).unwrap();
        }
    }
    reload();

    // A reload on a host that has these agents: the first reload after a switch (which also
    // loads or drops the previous set's units) is not timed, the second is.
    let steady = || {
        reload();
        reload()
    };
    let mut samples: [Vec<Duration>; 6] = Default::default();
    for _ in 0..rounds {
        samples[0].push(steady());
        samples[4].push(run_generator());
        mv(&wanted, &agents);
        samples[1].push(steady());
        samples[5].push(run_generator());
        mv(&agents, &wanted);
        mv(&plain, &agents);
        samples[2].push(steady());
        mv(&agents, &plain);
        mv(&unit_files, &units);
        samples[3].push(steady());
        mv(&units, &unit_files);
    }
    let names = [
        "daemon-reload, no agents",
        "daemon-reload, 200 .agent files with WantedBy=default.target (200 units loaded)",
        "daemon-reload, 200 .agent files without [Install] (units generated, not loaded)",
        "daemon-reload, the same 200 units as unit files in ~/.config/systemd/user, no generator work (as spawn --persist installs them)",
        "agent-relay-generator alone, no .agent files",
        "agent-relay-generator alone, 200 .agent files (401 files and links written)",
    ];
    println!("| measurement | n | median ms | p90 ms |\n|---|---:|---:|---:|");
    let mut medians = Vec::new();
    for (name, s) in names.iter().zip(samples) {
        let n = s.len();
        let (median, p90) = summary(s);
        medians.push(median);
        println!("| {name} | {n} | {median:.1} | {p90:.1} |");
    }
    println!(
        "\n200 declared agents add {:.1} ms to a reload (median); the same 200 units as unit files add {:.1} ms; \
         the generator itself takes {:.1} ms more with them than with none",
        medians[1] - medians[0],
        medians[3] - medians[0],
        medians[5] - medians[4]
    );
    mgr.stop();
}
