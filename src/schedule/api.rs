//! The daemon's local API: while `dropsync daemon` holds the store (DuckDB
//! allows one writing process per file), the command line's `status`,
//! `history`, `show`, `run` and `ingest` go through it, over a Unix socket
//! only this machine's users can reach. One JSON request line, one JSON
//! response line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::schema::RowError;
use crate::status::Card;
use crate::store::RunRecord;
use crate::sync::FileOutcome;

/// What the command line asks of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    History {
        integration: Option<String>,
        limit: usize,
    },
    Show {
        id: String,
        errors: usize,
    },
    Status,
    Run {
        integrations: Vec<String>,
        dates: Option<(NaiveDate, NaiveDate)>,
        force: bool,
        dry_run: bool,
    },
    Ingest {
        integration: String,
        file: PathBuf,
        force: bool,
        dry_run: bool,
    },
}

/// The daemon's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Response {
    Runs(Vec<RunRecord>),
    Run {
        run: Box<RunRecord>,
        errors: Vec<RowError>,
    },
    Status(Vec<Card>),
    Outcomes(Vec<FileOutcome>),
    /// The request could not be served; the message says why.
    Error(String),
}

/// Sends `request` to the daemon listening on `socket`. `None` when no
/// daemon listens there (no socket, or a stale one).
pub fn call(socket: &Path, request: &Request) -> Option<Result<Response, String>> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return None;
        }
        Err(e) => {
            return Some(Err(format!(
                "cannot reach the daemon at {}: {e}",
                socket.display()
            )));
        }
    };
    let mut talk = || -> Result<Response, String> {
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .map_err(|e| format!("cannot talk to the daemon: {e}"))?;
        let mut answer = String::new();
        BufReader::new(&stream)
            .read_line(&mut answer)
            .map_err(|e| format!("no answer from the daemon: {e}"))?;
        if answer.is_empty() {
            return Err("the daemon closed the connection (is it stopping?)".into());
        }
        serde_json::from_str(&answer)
            .map_err(|e| format!("an answer from the daemon that cannot be read: {e}"))
    };
    Some(talk())
}
