//! The command line: clap definitions (`args`, kept in the library so the man page and
//! completions come from the same definition) and the human renderings of answers (`render`).

pub mod args;
pub mod render;
