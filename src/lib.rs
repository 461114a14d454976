//! dropsync: receives the files partner and SaaS systems drop (CSV exports
//! on FTP/SFTP servers or in folders), validates each against its dataset's
//! schema, diffs it against the last accepted snapshot and applies the
//! changes in one atomic batch, with a history of every run.
//!
//! The modules follow the data flow: `source` (list, fetch, stage) ->
//! `schema` (parse, validate) -> `store` (diff, apply, history), tied
//! together per file by `pipeline` and per invocation by `sync`.

pub mod activity;
pub mod cli;
pub mod config;
pub mod feed;
pub mod freshness;
pub mod memory;
pub mod notify;
pub mod pipeline;
pub mod progress;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod source;
pub mod status;
pub mod store;
pub mod sync;
pub mod web;

/// "1 row", "3 rows".
pub(crate) fn rows(n: u64) -> String {
    if n == 1 {
        "1 row".to_string()
    } else {
        format!("{n} rows")
    }
}
