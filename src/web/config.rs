//! `[web]`: where the console listens and who may use it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{Count, MaxUploadBytes};

/// `[web]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The address the console and the API listen on. Default
    /// `127.0.0.1:8080`; any address other than loopback needs a token.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// An environment variable holding the access token: it may see
    /// everything and start syncs, uploads and re-runs.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the access token (its first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding a read-only token: it may see
    /// everything the console shows, and change nothing.
    #[serde(default)]
    pub read_token_env: Option<String>,
    /// A file holding the read-only token (its first line).
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// The address people open the console at when a proxy serves it over
    /// HTTPS (`https://dropsync.example.com`): the sign-in cookie is then
    /// sent over HTTPS only (`Secure`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// The largest file an upload may send, in bytes: 1 byte to 1 TiB.
    /// Default 1 GiB.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: Count<MaxUploadBytes>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: default_listen(),
            token_env: None,
            token_file: None,
            read_token_env: None,
            read_token_file: None,
            public_url: None,
            max_upload_bytes: default_max_upload_bytes(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

pub(crate) fn default_max_upload_bytes() -> Count<MaxUploadBytes> {
    Count::known(1 << 30)
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// See everything; change nothing.
    Read,
    /// See everything and start syncs, uploads and re-runs.
    Operate,
}

/// The secret a request must show when a token is configured. Only its
/// SHA-256 digest is kept, so the comparison takes the same time whatever
/// the offered text and wherever it differs, and nothing can print it.
#[derive(Clone)]
pub struct AccessToken([u8; 32]);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

fn digest(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

impl AccessToken {
    pub fn new(token: &str) -> AccessToken {
        AccessToken(digest(token))
    }

    /// Whether `offered` is the token, compared in constant time.
    pub fn matches(&self, offered: &str) -> bool {
        let offered = digest(offered);
        self.0
            .iter()
            .zip(offered)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// The configured tokens; with none, the console is open (on loopback).
#[derive(Debug, Clone, Default)]
pub struct AccessTokens {
    pub operate: Option<AccessToken>,
    pub read: Option<AccessToken>,
}

impl AccessTokens {
    /// Whether any token is configured, so every request must show one.
    pub fn required(&self) -> bool {
        self.operate.is_some() || self.read.is_some()
    }

    /// What `offered` may do, if it is one of the tokens. Both are always
    /// compared, so the time taken does not say which one matched.
    pub fn role_of(&self, offered: &str) -> Option<Role> {
        let operate = self.operate.as_ref().is_some_and(|t| t.matches(offered));
        let read = self.read.as_ref().is_some_and(|t| t.matches(offered));
        if operate {
            Some(Role::Operate)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }
}

impl WebConfig {
    /// Checks what can be checked when the config is read: a console
    /// reachable from other machines must ask for a token.
    pub fn check(&self) -> Result<(), String> {
        if self.token_env.is_some() && self.token_file.is_some() {
            return Err("give token_env or token_file, not both".into());
        }
        if self.read_token_env.is_some() && self.read_token_file.is_some() {
            return Err("give read_token_env or read_token_file, not both".into());
        }
        let any_token = self.token_env.is_some()
            || self.token_file.is_some()
            || self.read_token_env.is_some()
            || self.read_token_file.is_some();
        if !self.listen.ip().is_loopback() && !any_token {
            return Err(format!(
                "listen = \"{}\" is reachable from other machines; set token_env or token_file so that only holders of the token can use the console, or listen on 127.0.0.1",
                self.listen
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "public_url = \"{url}\" is not a web address: give it as https://host (or http://host)"
            ));
        }
        Ok(())
    }

    /// Whether people reach the console over HTTPS, so its cookie may only
    /// travel that way.
    pub fn served_over_https(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"))
    }

    /// Reads the configured tokens. An error names the variable or file,
    /// never the value.
    pub fn tokens(&self) -> Result<AccessTokens, String> {
        let operate = read_token(
            "token_env",
            "token_file",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
        )?;
        let read = read_token(
            "read_token_env",
            "read_token_file",
            self.read_token_env.as_deref(),
            self.read_token_file.as_deref(),
        )?;
        if let (Some(operate), Some(read)) = (&operate, &read)
            && operate == read
        {
            return Err(
                "[web]: the read-only token is the same as the access token; give each its own"
                    .into(),
            );
        }
        Ok(AccessTokens {
            operate: operate.as_deref().map(AccessToken::new),
            read: read.as_deref().map(AccessToken::new),
        })
    }
}

/// One token's text, from its variable or file; `None` when not configured.
fn read_token(
    env_key: &str,
    file_key: &str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    use crate::secret::SecretError;
    let text = match crate::secret::read(env, file) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(SecretError::Unset { var }) => {
            return Err(format!(
                "[web] {env_key}: the environment variable {var} is not set"
            ));
        }
        Err(SecretError::Unreadable { path, source }) => {
            return Err(format!(
                "[web] {file_key}: cannot read {}: {source}",
                path.display()
            ));
        }
    };
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        let from = match (env, file) {
            (Some(var), _) => format!("the environment variable {var}"),
            (_, Some(file)) => file.display().to_string(),
            _ => unreachable!("one of them is set"),
        };
        return Err(format!("[web]: the token in {from} is empty"));
    }
    Ok(Some(token))
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
        let token = AccessToken::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3creT"));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn each_token_has_its_role() {
        let tokens = AccessTokens {
            operate: Some(AccessToken::new("op")),
            read: Some(AccessToken::new("ro")),
        };
        assert_eq!(tokens.role_of("op"), Some(Role::Operate));
        assert_eq!(tokens.role_of("ro"), Some(Role::Read));
        assert_eq!(tokens.role_of("other"), None);
        assert!(tokens.required());
        assert!(!AccessTokens::default().required());
    }

    #[test]
    fn a_read_only_token_alone_guards_another_address() {
        assert!(
            web("listen = \"0.0.0.0:8080\"\nread_token_env = \"R\"")
                .check()
                .is_ok()
        );
        let err = web("read_token_env = \"R\"\nread_token_file = \"f\"")
            .check()
            .unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn max_upload_bytes_is_bounded() {
        assert_eq!(web("").max_upload_bytes.get(), 1 << 30);
        for bad in ["0", "2199023255552", "-1"] {
            let err = toml::from_str::<WebConfig>(&format!("max_upload_bytes = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("`max_upload_bytes`"), "{bad}: {err}");
        }
    }

    #[test]
    fn public_url_says_whether_the_cookie_is_secure() {
        assert!(web("public_url = \"https://d.example\"").served_over_https());
        assert!(!web("public_url = \"http://d.example\"").served_over_https());
        assert!(!web("").served_over_https());
        assert!(web("public_url = \"d.example\"").check().is_err());
    }
}
