//! Scale: with 200 live agents, a reference by agent id or spawn request id costs what one by
//! unit name costs, in the manager's work and in ours; a reference that names no agent reads one
//! property per agent, not the agents. Regression tests for lookups that read every agent (a
//! `show <agentId>` took 5.3 s among 1500 agents, stopping 2000 by agent id took 778 s) and for
//! one that asked the manager for every unit file (the 2000 transient ones too: a second of its
//! time for each reference that named nothing).
//!
//! Costs are counted as CPU time, not wall time, so that a loaded machine does not decide: the
//! manager's (its main thread serves D-Bus: `/proc/<pid>/schedstat`) and the CLI process's own
//! (`RUSAGE_CHILDREN`, the test holding the suite alone). Each is the median of several runs,
//! the kinds of reference taking turns.

use std::time::Instant;

use crate::util::*;
use serde_json::{json, Value};

const AGENTS: usize = 200;
const ROUNDS: usize = 7;

/// The manager's CPU time so far, ns (its main thread).
fn manager_ns(env: &Env) -> u64 {
    let pid = env.mgr().pid();
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("the manager's schedstat");
    text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat's first field")
}

/// CPU time of this process's reaped children so far, ns.
fn children_ns() -> u64 {
    let mut u: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    assert_eq!(unsafe { nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut u) }, 0);
    let ns = |t: nix::libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(u.ru_utime) + ns(u.ru_stime)
}

/// What one CLI run cost: wall time, the manager's CPU, the CLI's CPU (all ms); its stdout.
struct Cost {
    wall: f64,
    manager: f64,
    cli: f64,
}

fn run_costed(env: &Env, args: &[&str], want: Option<i32>) -> (Cost, Value) {
    let (m, c, t) = (manager_ns(env), children_ns(), Instant::now());
    let out = env.run(args, None);
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    let ms = |ns: u64| ns as f64 / 1e6;
    let cost = Cost { wall, manager: ms(manager_ns(env) - m), cli: ms(children_ns() - c) };
    assert_eq!(out.status.code(), want.or(Some(0)), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (cost, serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Medians of each figure over the runs of one kind.
#[derive(Debug)]
struct Medians {
    wall: f64,
    manager: f64,
    cli: f64,
}

fn medians(costs: &[&Cost]) -> Medians {
    Medians {
        wall: median(costs.iter().map(|c| c.wall).collect()),
        manager: median(costs.iter().map(|c| c.manager).collect()),
        cli: median(costs.iter().map(|c| c.cli).collect()),
    }
}

/// `by` costs at most twice what `base` costs, in the manager's CPU and the CLI's; wall time
/// gets 25 ms of slack for a loaded machine (reading 200 agents takes 100 ms and more).
fn assert_within_twice(what: &str, by: &Medians, base: &Medians) {
    let msg = format!("{what}: {by:?} against {base:?} (ms, medians of {ROUNDS})");
    assert!(by.manager <= 2.0 * base.manager, "the manager's work: {msg}");
    assert!(by.cli <= 2.0 * base.cli + 1.0, "the CLI's own work: {msg}");
    assert!(by.wall <= 2.0 * base.wall + 25.0, "wall time: {msg}");
}

#[test]
fn a_reference_by_agent_id_costs_what_one_by_unit_costs_among_200_agents() {
    let _serial = serial();
    let started = Instant::now();
    let env = Env::new();
    // As the orchestrator spawns: a spawn request id each (so the unit is named after it, not
    // after the agent id), some with an agent id of their own.
    let rids: Vec<String> = (0..AGENTS).map(|i| format!("scale-{i}")).collect();
    let spawned = parallel(&rids, 8, |rid| {
        let mut req = json!({"spawnRequestId": rid});
        if rid.ends_with('7') {
            req["agentId"] = json!(format!("org/{rid}"));
        }
        env.spawn(&env.request(req))["agent"].clone()
    });
    let spawn_s = started.elapsed().as_secs_f64();
    let field = |a: &Value, k: &str| a[k].as_str().unwrap().to_string();

    // show: by agent id, by unit, by spawn request id, taking turns.
    let kinds = ["agentId", "systemdUnit", "spawnRequestId"];
    let mut shows: Vec<(&str, Cost)> = Vec::new();
    for i in 0..ROUNDS {
        let a = &spawned[(i * 67 + 7) % AGENTS];
        for k in 0..kinds.len() {
            let key = kinds[(k + i) % kinds.len()];
            let (cost, v) = run_costed(&env, &["show", &field(a, key), "-o", "json"], None);
            assert_eq!(v["systemdUnit"], a["systemdUnit"], "show by {key}");
            shows.push((key, cost));
        }
    }
    let of = |key: &str| medians(&shows.iter().filter(|(k, _)| *k == key).map(|(_, c)| c).collect::<Vec<_>>());
    let (id, unit, rid) = (of("agentId"), of("systemdUnit"), of("spawnRequestId"));
    assert_within_twice("show <agentId> against show <unit>", &id, &unit);
    assert_within_twice("show <spawnRequestId> against show <unit>", &rid, &unit);

    // A reference that names no agent (and is no policy name): one read per agent, far below
    // what reading the agents costs (a list), and no scan of every unit file.
    let (list, _) = run_costed(&env, &["list", "-o", "json"], None);
    let (none, v) = run_costed(&env, &["show", "nobody-has-this-name", "-o", "json"], Some(3));
    assert_eq!(v["error"]["kind"], "not-found", "{v}");
    assert!(
        none.manager <= list.manager / 3.0,
        "show of an unknown reference took the manager {:.1} ms, a list of {AGENTS} {:.1} ms",
        none.manager,
        list.manager
    );

    // stop: by agent id and by unit, taking turns, each stopping a different agent.
    let (mut stop_id, mut stop_unit) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        for k in 0..2 {
            let a = &spawned[(i * 31 + k * 101 + 3) % AGENTS];
            let by_agent_id = (i + k) % 2 == 0;
            let reference = field(a, if by_agent_id { "agentId" } else { "systemdUnit" });
            let (cost, v) = run_costed(&env, &["stop", &reference, "-o", "json"], None);
            assert_eq!((&v["stopped"], &v["systemdUnit"]), (&json!(true), &a["systemdUnit"]), "stop {reference}");
            if by_agent_id {
                stop_id.push(cost);
            } else {
                stop_unit.push(cost);
            }
        }
    }
    let refs = |v: &[Cost]| medians(&v.iter().collect::<Vec<_>>());
    assert_within_twice("stop <agentId> against stop <unit>", &refs(&stop_id), &refs(&stop_unit));
    println!(
        "{AGENTS} agents spawned in {spawn_s:.1} s; show by id {id:?}, by unit {unit:?}, by request id {rid:?}; \
         unknown reference {:.1} ms of the manager (list {:.1} ms); total {:.1} s",
        none.manager,
        list.manager,
        started.elapsed().as_secs_f64()
    );
}
