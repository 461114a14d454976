//! The daemon's local API: while `dropsync daemon` holds the store (DuckDB
//! allows one writing process per file), the command line's `status`,
//! `history`, `show`, `run` and `ingest` go through it, over a Unix socket
//! that only the daemon's own user can open (mode 0600), and the daemon
//! checks each caller's uid as well (SO_PEERCRED). One JSON request line,
//! one JSON response line; an `ingest` request is followed by the file's
//! bytes, read by the command line with its own rights.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::schema::RowError;
use crate::status::Card;
use crate::store::RunRecord;
use crate::sync::FileOutcome;

/// What the command line asks of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
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
    /// A file to sync; its `size` bytes follow the request line. The client
    /// opened the file, so the daemon never opens a path a client names
    /// (it would with its own rights, which may be root's).
    Ingest {
        integration: String,
        /// The file's name, without its directory: matched against the
        /// integration's pattern for the business date.
        name: String,
        size: u64,
        /// Its modification time (UTC), the business date when the name has none.
        modified: Option<NaiveDateTime>,
        force: bool,
        dry_run: bool,
    },
}

impl Request {
    /// Whether the answer comes only once a batch has run (`run`,
    /// `ingest`): those wait their turn behind the batch in flight, as long
    /// as it takes. Questions about the store are answered at once.
    pub fn waits_for_a_batch(&self) -> bool {
        matches!(self, Request::Run { .. } | Request::Ingest { .. })
    }
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

/// Sends `request` (and, for `ingest`, the file's `content`) to the daemon
/// listening on `socket`, and waits up to `answer_timeout` for the answer
/// to a question about the store; a request that runs a batch waits for it.
/// `None` when no daemon listens there (no socket, or a stale one).
pub fn call(
    socket: &Path,
    request: &Request,
    content: Option<&mut dyn Read>,
    answer_timeout: Duration,
) -> Option<Result<Response, String>> {
    let stream = match UnixStream::connect(socket) {
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
    Some(talk(&stream, request, content, answer_timeout))
}

fn talk(
    mut stream: &UnixStream,
    request: &Request,
    content: Option<&mut dyn Read>,
    answer_timeout: Duration,
) -> Result<Response, String> {
    let timeout = (!request.waits_for_a_batch()).then_some(answer_timeout);
    stream
        .set_read_timeout(timeout)
        .map_err(|e| format!("cannot talk to the daemon: {e}"))?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    let sent = stream
        .write_all(line.as_bytes())
        .and_then(|()| match content {
            Some(content) => std::io::copy(content, &mut stream).map(drop),
            None => Ok(()),
        });
    // A daemon that refuses the request closes the connection early; its
    // answer (why) is still there to read.
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    match (read, sent) {
        (Err(e), _)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(format!(
                "the daemon did not answer within {} s (a stuck daemon? `[daemon] answer_timeout_secs` sets how long to wait)",
                answer_timeout.as_secs()
            ));
        }
        (Err(e), _) => return Err(format!("no answer from the daemon: {e}")),
        (Ok(_), Err(e)) if answer.is_empty() => {
            return Err(format!("cannot talk to the daemon: {e}"));
        }
        (Ok(_), _) => {}
    }
    if answer.is_empty() {
        return Err("the daemon closed the connection (is it stopping?)".into());
    }
    serde_json::from_str(&answer)
        .map_err(|e| format!("an answer from the daemon that cannot be read: {e}"))
}
