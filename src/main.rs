//! The `dropsync` binary: parse the command line, run it, print the whole
//! cause chain of a failure once, and map the outcome to the exit code.

use clap::Parser;
use dropsync::cli::{self, Cli, Outcome};
use tracing_subscriber::util::SubscriberInitExt;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                Outcome::Usage.code()
            } else {
                0
            });
        }
    };
    // The daemon reports what it does; one-off commands only what goes wrong.
    let daemon = matches!(cli.command, cli::Command::Daemon | cli::Command::Web);
    let ansi = cli
        .color
        .enabled(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    init_logging(&cli.log_format, cli.verbose + u8::from(daemon), ansi);
    let code = match cli::execute(cli) {
        Ok(outcome) => outcome,
        // The reader went away (`dropsync history | head`): nothing is
        // wrong, and nobody is left to tell.
        Err(e) if is_broken_pipe(&e.error) => Outcome::Success,
        Err(e) => {
            eprintln!("dropsync: {}", cause_chain(&e.error));
            e.outcome
        }
    };
    std::process::exit(code.code());
}

/// The error and its causes, each said once. Most of dropsync's errors
/// already name their cause in their own text; a cause is added only when
/// it says something new, and DuckDB's bare result codes ("Error code 1:
/// Unknown error code") never do.
fn cause_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        if cause.is::<duckdb::ffi::Error>() {
            continue;
        }
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(format: &str, verbose: u8, ansi: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROPSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        without_secrets(builder.json().finish()).init();
    } else {
        without_secrets(builder.finish()).init();
    }
}

/// Library log lines that could carry a secret (an FTP password) are never
/// written, whatever `DROPSYNC_LOG` asks for.
fn without_secrets(
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
) -> impl tracing::Subscriber + Send + Sync + 'static {
    use tracing_subscriber::layer::SubscriberExt;
    subscriber.with(tracing_subscriber::filter::filter_fn(
        dropsync::source::log_line_allowed,
    ))
}
