//! The pure model: requests, config resolution, names, plans, unit properties and unit-file
//! text, records, exits, events, log text, guest specs and the reaper's decisions. Plain
//! functions over plain data: no tokio, no zbus, no filesystem, no environment, no clock (the
//! callers in `ops` pass the time and the host facts in). `.ci/run` checks this with a grep.

pub mod admission;
pub mod agentfile;
pub mod config;
pub mod contract;
pub mod events;
pub mod exec;
pub mod exit;
pub mod filter;
pub mod guest;
pub mod limits;
pub mod logtext;
pub mod logtimes;
pub mod meta;
pub mod naming;
pub mod plan;
pub mod property;
pub mod reap;
pub mod record;
pub mod request;
pub mod resources;
pub mod restart;
pub mod state;
pub mod terminal;
pub mod unit;
pub mod unitfile;
