//! Secrets (passwords, passphrases, tokens, webhook URLs) come from an
//! environment variable or a file named in the config, never from the
//! config text. This is the one place that reads them; each caller words
//! its own error, naming where the secret was looked for, never its value.

use std::path::{Path, PathBuf};

/// Why a configured secret could not be read.
#[derive(Debug)]
pub enum SecretError {
    /// The named environment variable is not set (or not Unicode).
    Unset { var: String },
    /// The named file could not be read.
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The secret from `env` (its whole value) or else from `file` (its first
/// line, without the line end); `None` when neither is configured.
pub fn read(env: Option<&str>, file: Option<&Path>) -> Result<Option<String>, SecretError> {
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| SecretError::Unset {
                var: var.to_string(),
            });
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    Ok(None)
}
