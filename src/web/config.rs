//! `[web]`: where the console listens and who may use it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[web]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The address the console and the API listen on. Default
    /// `127.0.0.1:8080`; any address other than loopback needs a token.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// An environment variable holding the access token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the access token (its first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The largest file an upload may send, in bytes. Default 1 GiB.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: default_listen(),
            token_env: None,
            token_file: None,
            max_upload_bytes: default_max_upload_bytes(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_upload_bytes() -> u64 {
    1 << 30
}

/// The secret a request must show when a token is configured. Never
/// printed: its `Debug` says only that it is there.
#[derive(Clone)]
pub struct AccessToken(String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

impl AccessToken {
    /// Whether `offered` is the token, compared in constant time.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// What the session cookie holds: derived from the token, so the cookie
    /// never carries the token itself.
    pub fn session_value(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("dropsync web session\0{}", self.0));
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl WebConfig {
    /// Checks what can be checked when the config is read: a console
    /// reachable from other machines must ask for a token.
    pub fn check(&self) -> Result<(), String> {
        if self.token_env.is_some() && self.token_file.is_some() {
            return Err("give token_env or token_file, not both".into());
        }
        if !self.listen.ip().is_loopback() && self.token_env.is_none() && self.token_file.is_none()
        {
            return Err(format!(
                "listen = \"{}\" is reachable from other machines; set token_env or token_file so that only holders of the token can use the console, or listen on 127.0.0.1",
                self.listen
            ));
        }
        if self.max_upload_bytes == 0 {
            return Err("max_upload_bytes must be more than 0".into());
        }
        Ok(())
    }

    /// Reads the configured token. The error names the variable or file,
    /// never the value.
    pub fn token(&self) -> Result<Option<AccessToken>, String> {
        use crate::secret::SecretError;
        let text = match crate::secret::read(self.token_env.as_deref(), self.token_file.as_deref())
        {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(None),
            Err(SecretError::Unset { var }) => {
                return Err(format!(
                    "[web] token_env: the environment variable {var} is not set"
                ));
            }
            Err(SecretError::Unreadable { path, source }) => {
                return Err(format!(
                    "[web] token_file: cannot read {}: {source}",
                    path.display()
                ));
            }
        };
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            let from = match (&self.token_env, &self.token_file) {
                (Some(var), _) => format!("the environment variable {var}"),
                (_, Some(file)) => file.display().to_string(),
                _ => unreachable!("one of them is set"),
            };
            return Err(format!("[web]: the token in {from} is empty"));
        }
        Ok(Some(AccessToken(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(text: &str) -> WebConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn loopback_needs_no_token() {
        assert!(web("").check().is_ok());
        assert!(web("listen = \"[::1]:9000\"").check().is_ok());
    }

    #[test]
    fn another_address_needs_a_token() {
        let err = web("listen = \"0.0.0.0:8080\"").check().unwrap_err();
        assert!(err.contains("token_env or token_file"), "{err}");
        assert!(
            web("listen = \"0.0.0.0:8080\"\ntoken_env = \"T\"")
                .check()
                .is_ok()
        );
    }

    #[test]
    fn a_malformed_address_is_refused() {
        assert!(toml::from_str::<WebConfig>("listen = \"localhost\"").is_err());
    }

    #[test]
    fn token_compares_exactly_and_never_prints() {
        let token = AccessToken("s3cret".into());
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3creT"));
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(!token.session_value().contains("s3cret"));
    }
}
