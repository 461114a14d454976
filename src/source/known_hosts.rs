//! OpenSSH known_hosts files, read the way OpenSSH reads them. libssh2's own
//! check compares the server's key with every key recorded for the host,
//! whatever its type, and also with entries for port 22 when the server is
//! on another port, so an RSA-only entry made a server that offers ed25519
//! look changed. Here a key is compared only with keys of its own type for
//! exactly this host and port, and the recorded types tell the handshake
//! which host-key algorithms to ask for.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The keys a known_hosts file records for one host and port.
#[derive(Debug, Default)]
pub struct KnownHostKeys {
    keys: Vec<RecordedKey>,
}

#[derive(Debug)]
struct RecordedKey {
    /// The key's type as known_hosts names it: `ssh-ed25519`, `ssh-rsa`,
    /// `ecdsa-sha2-nistp256`, ...
    key_type: String,
    /// The public key blob (SSH wire format).
    blob: Vec<u8>,
    /// An `@revoked` line: this key must never be accepted.
    revoked: bool,
}

/// What known_hosts says about the key a server presented.
#[derive(Debug, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// Recorded for this host and port.
    Known,
    /// Marked `@revoked`.
    Revoked,
    /// Another key of the same type is recorded: the server's key changed,
    /// or someone is posing as it.
    Changed,
    /// No key of this type is recorded for this host and port; `other_types`
    /// are the types that are.
    Unknown { other_types: Vec<String> },
}

impl KnownHostKeys {
    /// The keys `path` records for `host` on `port`; none if the file does
    /// not exist.
    pub fn read(path: &Path, host: &str, port: u16) -> std::io::Result<KnownHostKeys> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(KnownHostKeys::parse(&text, host, port)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHostKeys::default()),
            Err(e) => Err(e),
        }
    }

    /// The keys `text` (a known_hosts file) records for `host` on `port`.
    /// Lines that cannot be read are passed over, as OpenSSH does.
    pub fn parse(text: &str, host: &str, port: u16) -> KnownHostKeys {
        // OpenSSH looks a host up as `host` on port 22, else `[host]:port`:
        // an entry for port 22 says nothing about a server on another port.
        let lookup = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        let mut keys = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(mut first) = fields.next() else {
                continue;
            };
            if first.starts_with('#') {
                continue;
            }
            let mut revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                match marker {
                    "revoked" => revoked = true,
                    // Certificate authorities: host certificates are not
                    // supported, so such a line vouches for nothing here.
                    _ => continue,
                }
                let Some(next) = fields.next() else { continue };
                first = next;
            }
            let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else {
                continue;
            };
            if !hosts_match(first, &lookup) {
                continue;
            }
            let Ok(blob) = BASE64.decode(key) else {
                continue;
            };
            keys.push(RecordedKey {
                key_type: key_type.to_string(),
                blob,
                revoked,
            });
        }
        KnownHostKeys { keys }
    }

    /// The host-key algorithms to ask the server for, most wanted first:
    /// those of the key types recorded, in the file's order, then the rest
    /// of `supported` in its own order. Only names in `supported` are kept.
    pub fn algorithm_preference(&self, supported: &[&str]) -> Vec<String> {
        let mut wanted: Vec<String> = Vec::new();
        for key in self.keys.iter().filter(|k| !k.revoked) {
            for alg in algorithms_for(&key.key_type) {
                if supported.contains(&alg) && !wanted.iter().any(|w| w == alg) {
                    wanted.push(alg.to_string());
                }
            }
        }
        for alg in supported {
            if !wanted.iter().any(|w| w == alg) {
                wanted.push(alg.to_string());
            }
        }
        wanted
    }

    /// Checks the key blob the server presented.
    pub fn check(&self, blob: &[u8]) -> HostKeyVerdict {
        if self.keys.iter().any(|k| k.revoked && k.blob == blob) {
            return HostKeyVerdict::Revoked;
        }
        let key_type = blob_key_type(blob);
        let mut same_type = false;
        for key in self.keys.iter().filter(|k| !k.revoked) {
            if Some(key.key_type.as_str()) == key_type {
                if key.blob == blob {
                    return HostKeyVerdict::Known;
                }
                same_type = true;
            }
        }
        if same_type {
            return HostKeyVerdict::Changed;
        }
        let mut other_types: Vec<String> = Vec::new();
        for key in self.keys.iter().filter(|k| !k.revoked) {
            if !other_types.contains(&key.key_type) {
                other_types.push(key.key_type.clone());
            }
        }
        HostKeyVerdict::Unknown { other_types }
    }
}

/// The host-key algorithms that prove a key of `key_type`: an RSA key
/// signs with SHA-2 on current servers, SHA-1 (`ssh-rsa`) on old ones.
fn algorithms_for(key_type: &str) -> Vec<&str> {
    match key_type {
        "ssh-rsa" => vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        other => vec![other],
    }
}

/// The type name a key blob starts with (an SSH string: length, bytes).
pub fn blob_key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

/// Whether the host field of a known_hosts line (a hashed name, or
/// comma-separated patterns with `*`, `?` and `!` negation) matches `lookup`.
fn hosts_match(field: &str, lookup: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_name_matches(hashed, lookup);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if wildcard_match(&pattern.to_ascii_lowercase(), &lookup.to_ascii_lowercase()) {
            if negated {
                // A negated match rules the line out, whatever else matches.
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `|1|salt|hash` (the part after `|1|`): HMAC-SHA1 of the name, keyed
/// with the salt, as `HashKnownHosts yes` writes it.
fn hashed_name_matches(hashed: &str, lookup: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt), BASE64.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, lookup.as_bytes(), &hash).is_ok()
}

/// OpenSSH's pattern match: `*` any run of characters, `?` any one.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key blob of `key_type` with `body` after the type name.
    fn blob(key_type: &str, body: &[u8]) -> Vec<u8> {
        let mut b = (key_type.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(key_type.as_bytes());
        b.extend_from_slice(body);
        b
    }

    fn line(host: &str, key_type: &str, body: &[u8]) -> String {
        format!(
            "{host} {key_type} {} comment\n",
            BASE64.encode(blob(key_type, body))
        )
    }

    #[test]
    fn keys_are_compared_only_with_keys_of_their_type() {
        let text = line("example.org", "ssh-rsa", b"rsa key");
        let keys = KnownHostKeys::parse(&text, "example.org", 22);
        assert_eq!(
            keys.check(&blob("ssh-rsa", b"rsa key")),
            HostKeyVerdict::Known
        );
        assert_eq!(
            keys.check(&blob("ssh-rsa", b"another")),
            HostKeyVerdict::Changed
        );
        assert_eq!(
            keys.check(&blob("ssh-ed25519", b"ed")),
            HostKeyVerdict::Unknown {
                other_types: vec!["ssh-rsa".into()]
            }
        );
    }

    #[test]
    fn an_entry_for_port_22_says_nothing_about_another_port() {
        let text = line("example.org", "ssh-ed25519", b"port 22 key")
            + &line("[example.org]:2222", "ssh-ed25519", b"port 2222 key");
        let on_2222 = KnownHostKeys::parse(&text, "example.org", 2222);
        assert_eq!(
            on_2222.check(&blob("ssh-ed25519", b"port 2222 key")),
            HostKeyVerdict::Known
        );
        let on_2200 = KnownHostKeys::parse(&text, "example.org", 2200);
        assert_eq!(
            on_2200.check(&blob("ssh-ed25519", b"port 22 key")),
            HostKeyVerdict::Unknown {
                other_types: vec![]
            }
        );
    }

    #[test]
    fn host_patterns_hashed_names_markers_and_comments() {
        // `ssh-keygen -H` of "[127.0.0.1]:2222" with this salt.
        let salt = b"0123456789abcdefghij";
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
        let hash = ring::hmac::sign(&key, b"[127.0.0.1]:2222");
        let hashed = format!(
            "|1|{}|{}",
            BASE64.encode(salt),
            BASE64.encode(hash.as_ref())
        );
        let text = [
            "# a comment\n\n".to_string(),
            line(&hashed, "ssh-ed25519", b"hashed"),
            line("*.example.org,!bad.example.org", "ssh-ed25519", b"wild"),
            line("host?.example.net", "ecdsa-sha2-nistp256", b"ecdsa"),
            line("@revoked *", "ssh-ed25519", b"gone"),
            line("@cert-authority *.example.org", "ssh-ed25519", b"ca"),
        ]
        .concat();
        let found = |host: &str, port: u16, key_type: &str, body: &[u8]| {
            KnownHostKeys::parse(&text, host, port).check(&blob(key_type, body))
        };
        assert_eq!(
            found("127.0.0.1", 2222, "ssh-ed25519", b"hashed"),
            HostKeyVerdict::Known
        );
        assert_eq!(
            found("127.0.0.1", 2223, "ssh-ed25519", b"hashed"),
            HostKeyVerdict::Unknown {
                other_types: vec![]
            }
        );
        assert_eq!(
            found("sftp.EXAMPLE.org", 22, "ssh-ed25519", b"wild"),
            HostKeyVerdict::Known
        );
        assert_eq!(
            found("bad.example.org", 22, "ssh-ed25519", b"wild"),
            HostKeyVerdict::Unknown {
                other_types: vec![]
            }
        );
        assert_eq!(
            found("host1.example.net", 22, "ecdsa-sha2-nistp256", b"ecdsa"),
            HostKeyVerdict::Known
        );
        assert_eq!(
            found("host12.example.net", 22, "ecdsa-sha2-nistp256", b"ecdsa"),
            HostKeyVerdict::Unknown {
                other_types: vec![]
            }
        );
        // A certificate authority's key is not a host key.
        assert_eq!(
            found("sftp.example.org", 22, "ssh-ed25519", b"ca"),
            HostKeyVerdict::Changed
        );
        assert_eq!(
            found("anything", 22, "ssh-ed25519", b"gone"),
            HostKeyVerdict::Revoked
        );
    }

    #[test]
    fn recorded_types_come_first_in_the_algorithm_preference() {
        let supported = [
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "rsa-sha2-512",
            "rsa-sha2-256",
            "ssh-rsa",
        ];
        let rsa = KnownHostKeys::parse(&line("h", "ssh-rsa", b"k"), "h", 22);
        assert_eq!(
            rsa.algorithm_preference(&supported),
            [
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ssh-rsa",
                "ssh-ed25519",
                "ecdsa-sha2-nistp256"
            ]
        );
        let none = KnownHostKeys::parse("", "h", 22);
        assert_eq!(none.algorithm_preference(&supported), supported);
    }

    #[test]
    fn wildcards() {
        for (pattern, text, want) in [
            ("*", "[h]:2222", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("**", "", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(wildcard_match(pattern, text), want, "{pattern} {text}");
        }
    }
}
