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
    init_logging(&cli.log_format, cli.verbose + u8::from(daemon));
    let code = match cli::execute(cli) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("dropsync: {:#}", e.error);
            e.outcome
        }
    };
    std::process::exit(code.code());
}

fn init_logging(format: &str, verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROPSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
