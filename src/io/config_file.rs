//! Reading the orchestrator's config file: the one read, then the model's pure `resolve`.

use std::path::Path;

use crate::model::config::{config_path, resolve, Config, ConfigError, ConfigInputs};

/// Reads and resolves the config. A missing default file means defaults; a missing file that
/// was named explicitly is an error.
pub fn load(flag: Option<&Path>, inputs: &ConfigInputs<'_>) -> Result<Config, ConfigError> {
    let (path, explicit) = config_path(flag, inputs);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    resolve(text.as_deref(), &path, inputs)
}
