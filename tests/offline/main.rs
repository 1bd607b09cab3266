//! Integration tests that need no root and no systemd manager: the command line, the generated
//! assets, the pure planner and unit generator. `cargo test --test offline`; rewrite the golden
//! files under tests/data/ after an intended change with `UPDATE_GOLDEN=1 cargo test --test offline`.

#[path = "../util/mod.rs"]
mod util;

// `completions` and `manpage`: the shell completions and the man page the packages ship.
mod assets;
// Claims that need no manager: a missing --config file, every config variable, a strict fake runner.
mod claims;
// Commands with no manager to reach: one line that says what to check.
mod bad_input;
// Every visible command's `--help` ends with an example an operator can copy.
mod help;
// The log sanitiser line for line against a transcription of the seed's regexes, on generated input.
mod logtext;
// The JSON contract: schema/ is what the types generate; outputs with no manager validate.
mod schema;
// Property tests of the parsers, naming and the unit generator: no panic, one-line refusals.
mod properties;
// The unit-file generator against the golden files in tests/data/.
mod unitfile;
