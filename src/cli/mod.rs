//! The command line: clap's raw arguments become one validated `Command`
//! here, and each command is carried out against the library. What it prints
//! lives in `output`.

mod check;
mod generate;
mod output;
mod progress;

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, CsvDialect, Encoding};
use crate::pipeline::{self, Integration, RunOptions, Trigger};
use crate::schedule::api;
use crate::schema::{self, Dataset};
use crate::store::{FormulaCells, RunStatus, Store, UnsubscribeColumns, UnsubscribeFilter};
use crate::sync::{self, FileOutcome, Selection};

/// How a command ended, as the process exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for succeeded (or was already done).
    Success,
    /// At least one run failed, or the command could not do its work.
    Failed,
    /// The command line or the config is wrong.
    Usage,
    /// Everything was applied, but some rows were rejected.
    Partial,
    /// `dropsync check`'s verdict, in the Nagios plugin convention.
    Check(CheckState),
}

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::Failed => 1,
            Outcome::Usage => 2,
            Outcome::Partial => 3,
            Outcome::Check(state) => state.code(),
        }
    }
}

pub use check::CheckState;

/// `0.1.0 (DuckDB v1.5.6)`: the version, and the DuckDB library this binary
/// runs on (asked of the loaded library, so it is the one really in use).
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (DuckDB {})",
            env!("CARGO_PKG_VERSION"),
            crate::store::duckdb_version()
        )
    })
}

/// A command-line error: what went wrong, and which exit code it means.
#[derive(Debug)]
pub struct CliError {
    pub outcome: Outcome,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError {
            outcome: Outcome::Failed,
            error: e.into(),
        }
    }
}

fn usage(message: impl Into<String>) -> CliError {
    CliError {
        outcome: Outcome::Usage,
        error: anyhow::anyhow!(message.into()),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "dropsync",
    version = version(),
    about = "Validate, diff and apply the CSV files partner systems drop."
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "DROPSYNC_CONFIG",
        default_value = "dropsync.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr: `human` or `json` (one JSON object a line).
    #[arg(long, global = true, default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
    /// More detail in the log (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Color in what is printed and logged: `auto` (on a terminal, unless
    /// NO_COLOR is set), `always` or `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

/// `--color`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to color a stream that is (or is not) a terminal. `auto`
    /// honours NO_COLOR (no-color.org: set and not empty); `always` wins.
    pub fn enabled(self, terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync the new files of some integrations (all when none is named).
    Run(RunArgs),
    /// Sync one file given here, as if it had been dropped.
    Ingest(IngestArgs),
    /// Check a file against a dataset's schema; needs no store.
    Validate(ValidateArgs),
    /// List past runs, newest first.
    History(HistoryArgs),
    /// Show one run and its rejected rows.
    Show(ShowArgs),
    /// The changes runs applied to an integration's rows, oldest first:
    /// each changed key, its kind and its fields' old and new values.
    Changes(ChangesArgs),
    /// Export data back out: a table's rows, now or as of a past date
    /// (`export TABLE`), or unsubscribed records (`export unsubscribes`).
    Export(ExportArgs),
    /// Each integration: its source, schedule, next run, last run, and
    /// whether its file is fresh, due, overdue or failing.
    Status(StatusArgs),
    /// One line and an exit code for cron or a monitoring probe (Nagios
    /// convention): 0 OK, 1 WARNING (a file is overdue, or alerts fail to be
    /// delivered), 2 CRITICAL (a last run failed), 3 UNKNOWN (config or store
    /// unreadable).
    Check,
    /// Run the schedules, watch the folder sources, and serve the command
    /// line, until SIGTERM.
    Daemon,
    /// Serve the web console and the HTTP API (`[web]`, default
    /// 127.0.0.1:8080) and the command line, without running schedules or
    /// watching folders, until SIGTERM.
    Web,
    /// Alerts: `notify test [NAME]` sends a test event to every `[[notify]]`
    /// receiver (or the one named).
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Man pages and shell completions, for packaging.
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test event now, and say how each receiver took it.
    Test {
        /// Only this receiver.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write dropsync.1 and one page per command into DIR.
    Man { dir: PathBuf },
    /// Print the completion script for SHELL.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Integrations to sync.
    pub integrations: Vec<String>,
    /// Sync every integration.
    #[arg(long, conflicts_with = "integrations")]
    pub all: bool,
    /// Only the files of this business date (YYYY-MM-DD), even if seen
    /// before; replayed from its staged copy if the source no longer has it.
    #[arg(long, value_parser = pipeline::parse_date, conflicts_with_all = ["from", "to"])]
    pub date: Option<NaiveDate>,
    /// Backfill: the files of every business date from this one on, in date order.
    #[arg(long, value_parser = pipeline::parse_date)]
    pub from: Option<NaiveDate>,
    /// Backfill up to this business date (default: today).
    #[arg(long, value_parser = pipeline::parse_date)]
    pub to: Option<NaiveDate>,
    #[command(flatten)]
    pub sync: SyncFlags,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The integration the file belongs to.
    pub integration: String,
    /// The file, as its source system exported it.
    pub file: PathBuf,
    #[command(flatten)]
    pub sync: SyncFlags,
}

/// How files are synced, for `run` and `ingest` alike.
#[derive(Debug, Args)]
pub struct SyncFlags {
    /// Print what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even content already applied, an older snapshot, or mass deletes.
    #[arg(long)]
    pub force: bool,
    /// Print the runs as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress line. (It is only drawn when standard error is a
    /// terminal.)
    #[arg(long, short)]
    pub quiet: bool,
}

impl SyncFlags {
    fn options(&self, trigger: Trigger) -> RunOptions {
        RunOptions {
            force: self.force,
            dry_run: self.dry_run,
            trigger,
            explicit: trigger == Trigger::Ingest,
            folder_min_age: std::time::Duration::ZERO,
            execution_id: None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The dataset to check against.
    #[arg(long, required_unless_present = "integration")]
    pub dataset: Option<String>,
    /// Check as this integration reads files (dialect, column mapping,
    /// metrics), from the config.
    #[arg(long, conflicts_with = "dataset")]
    pub integration: Option<String>,
    /// A directory of extra schemas.
    #[arg(long)]
    pub schemas: Option<PathBuf>,
    /// Field delimiter.
    #[arg(long)]
    pub delimiter: Option<char>,
    /// The file's encoding: a WHATWG label (`utf-8`, `windows-1252`,
    /// `latin1`, `iso-8859-15`, `shift_jis`, ...).
    #[arg(long, value_parser = parse_encoding)]
    pub encoding: Option<Encoding>,
    /// The file has no header row.
    #[arg(long)]
    pub no_header: bool,
    /// How many row errors to print.
    #[arg(long, default_value_t = 20)]
    pub errors: usize,
    #[arg(long)]
    pub json: bool,
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub integration: Option<String>,
    /// How many runs to list.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's execution id, or a unique part of it.
    pub execution_id: String,
    /// How many rejected rows to list.
    #[arg(long, default_value_t = 20)]
    pub errors: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ChangesArgs {
    pub integration: String,
    /// Only changes of runs with this business date (YYYY-MM-DD) or later.
    #[arg(long, value_parser = pipeline::parse_date, conflicts_with = "run")]
    pub since: Option<NaiveDate>,
    /// Only changes of this run (its execution id, or a unique part of it).
    #[arg(long)]
    pub run: Option<String>,
    /// Only changes of this kind (repeatable).
    #[arg(long = "kind", value_enum)]
    pub kinds: Vec<crate::store::ChangeKind>,
    /// As JSON: an array of changes.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// As CSV, one change a line (key and fields as JSON).
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub command: Option<ExportCommand>,
    /// The table to export (`accounts`, or an integration's `table`).
    #[arg(required = true)]
    pub table: Option<String>,
    /// The rows as they stood after the last run with this business date
    /// (YYYY-MM-DD) or an earlier one, rebuilt from the change log.
    /// Default: as they stand now.
    #[arg(long, value_parser = pipeline::parse_date)]
    pub as_of: Option<NaiveDate>,
    /// Only the rows of this integration.
    #[arg(long)]
    pub integration: Option<String>,
    /// Write here instead of standard output (created for its owner only).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// `csv`, `parquet`, or `json` (one JSON object a line).
    #[arg(long, value_enum, default_value_t = crate::store::ExportFormat::Csv)]
    pub format: crate::store::ExportFormat,
    /// CSV: write text cells that start with `=`, `+`, `-`, `@`, a tab or a
    /// carriage return as they are. By default they get a leading `'`.
    #[arg(long)]
    pub allow_formulas: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Unsubscribed records, as CSV.
    Unsubscribes(UnsubscribesArgs),
}

#[derive(Debug, Args)]
pub struct UnsubscribesArgs {
    /// Only these lists.
    #[arg(long = "list")]
    pub lists: Vec<String>,
    /// Never these lists.
    #[arg(long = "exclude-list")]
    pub exclude_lists: Vec<String>,
    /// Unsubscribed on or after this date.
    #[arg(long, value_parser = pipeline::parse_date, conflicts_with = "previous_day")]
    pub since: Option<NaiveDate>,
    /// Unsubscribed on or before this date.
    #[arg(long, value_parser = pipeline::parse_date, conflicts_with = "previous_day")]
    pub until: Option<NaiveDate>,
    /// Only those who unsubscribed yesterday (UTC).
    #[arg(long)]
    pub previous_day: bool,
    /// Only these reasons.
    #[arg(long = "reason")]
    pub reasons: Vec<String>,
    /// Never these reasons.
    #[arg(long = "exclude-reason")]
    pub exclude_reasons: Vec<String>,
    /// The table holding subscribers. Default: `subscribers`.
    #[arg(long, default_value = "subscribers")]
    pub table: String,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Write cells that start with `=`, `+`, `-`, `@`, a tab or a carriage
    /// return as they are. By default they get a leading `'`, so a
    /// spreadsheet shows them as text instead of running them as formulas.
    #[arg(long)]
    pub allow_formulas: bool,
}

/// Carries out a parsed command line.
pub fn execute(cli: Cli) -> Result<Outcome, CliError> {
    let palette = output::Palette {
        color: cli
            .color
            .enabled(std::io::IsTerminal::is_terminal(&std::io::stdout())),
    };
    let out = &mut std::io::stdout().lock();
    match cli.command {
        Command::Run(args) => {
            let line = progress::ProgressLine::start(args.sync.quiet, cli.color);
            run(&cli.config, args, out, palette, line.as_ref())
        }
        Command::Ingest(args) => {
            let line = progress::ProgressLine::start(args.sync.quiet, cli.color);
            ingest(&cli.config, args, out, palette, line.as_ref())
        }
        Command::Validate(args) => validate(&cli.config, args, out),
        Command::History(args) => {
            let config = load_config(&cli.config)?;
            let request = api::Request::History {
                integration: args.integration.clone(),
                limit: args.limit,
            };
            let runs = match via_daemon(&config, &request)? {
                Some(api::Response::Runs(runs)) => runs,
                Some(other) => return Err(unexpected(other)),
                None => {
                    let store = Store::open_read_only_at(&config.store.location)?;
                    store.runs(args.integration.as_deref(), args.limit)?
                }
            };
            if args.json {
                output::json(out, &runs)?;
            } else {
                output::history(out, &runs, palette)?;
            }
            Ok(Outcome::Success)
        }
        Command::Show(args) => {
            let config = load_config(&cli.config)?;
            let request = api::Request::Show {
                id: args.execution_id.clone(),
                errors: args.errors,
            };
            let (run, errors) = match via_daemon(&config, &request)? {
                Some(api::Response::Run { run, errors }) => (*run, errors),
                Some(other) => return Err(unexpected(other)),
                None => {
                    let store = Store::open_read_only_at(&config.store.location)?;
                    let run = store.run(&args.execution_id)?;
                    let errors = store.row_errors(&run.execution_id, args.errors)?;
                    (run, errors)
                }
            };
            if args.json {
                output::json(out, &serde_json::json!({"run": run, "errors": errors}))?;
            } else {
                output::show(out, &run, &errors, palette)?;
            }
            Ok(Outcome::Success)
        }
        Command::Changes(args) => {
            let config = load_config(&cli.config)?;
            if !config.integrations.contains_key(&args.integration) {
                return Err(usage(format!(
                    "no integration named `{}` in {}",
                    args.integration,
                    config.path.display()
                )));
            }
            let store = Store::open_read_only_at(&config.store.location)?;
            let execution_id = match &args.run {
                Some(id) => Some(store.run(id)?.execution_id),
                None => None,
            };
            let filter = crate::store::ChangeFilter {
                integration: Some(args.integration.clone()),
                since: args.since,
                execution_id,
                kinds: args.kinds,
                ..Default::default()
            };
            // Printed as read: a log of millions of changes is never held.
            let each = |print: output::EachChange<'_, CliError>| {
                store.each_change(&filter, |change| print(&change))
            };
            if args.json {
                output::changes_json(out, each)?;
            } else if args.csv {
                output::changes_csv(out, each)?;
            } else {
                output::changes(out, each)?;
            }
            Ok(Outcome::Success)
        }
        Command::Status(args) => {
            let config = load_config(&cli.config)?;
            let cards = status_cards(&config)?;
            if args.json {
                output::json(out, &cards)?;
            } else {
                output::status(out, &cards)?;
            }
            Ok(Outcome::Success)
        }
        Command::Check => {
            let cards = load_config(&cli.config).and_then(|config| status_cards(&config));
            let state = match cards {
                Ok(cards) => check::report(out, &cards)?,
                Err(e) => check::unknown(out, &e.error)?,
            };
            Ok(Outcome::Check(state))
        }
        Command::Notify(NotifyCommand::Test { name }) => {
            let config = load_config(&cli.config)?;
            let receivers: Vec<_> = config
                .notify
                .iter()
                .filter(|n| name.as_ref().is_none_or(|want| &n.name == want))
                .collect();
            if receivers.is_empty() {
                return Err(usage(match &name {
                    Some(name) => {
                        format!("no [[notify]] named `{name}` in {}", config.path.display())
                    }
                    None => format!("no [[notify]] receivers in {}", config.path.display()),
                }));
            }
            let event = crate::notify::Event::new(
                crate::notify::EventKind::Test,
                "test",
                None,
                "a test alert from `dropsync notify test`".into(),
            );
            let mut outcome = Outcome::Success;
            for receiver in receivers {
                match receiver.send(&event) {
                    Ok(()) => writeln!(out, "{}: sent", receiver.name)?,
                    Err(e) => {
                        writeln!(out, "{}: failed: {e}", receiver.name)?;
                        outcome = Outcome::Failed;
                    }
                }
            }
            Ok(outcome)
        }
        Command::Generate(GenerateCommand::Man { dir }) => {
            for page in generate::man_pages(&dir)? {
                writeln!(out, "{}", page.display())?;
            }
            Ok(Outcome::Success)
        }
        Command::Generate(GenerateCommand::Completions { shell }) => {
            generate::completions(shell, out)?;
            Ok(Outcome::Success)
        }
        Command::Daemon => {
            let config = load_config(&cli.config)?;
            for name in config.integrations.keys() {
                Integration::resolve(&config, name).map_err(|e| usage(e.to_string()))?;
            }
            crate::schedule::daemon::run(config, crate::schedule::daemon::Mode::Full)?;
            Ok(Outcome::Success)
        }
        Command::Web => {
            let mut config = load_config(&cli.config)?;
            for name in config.integrations.keys() {
                Integration::resolve(&config, name).map_err(|e| usage(e.to_string()))?;
            }
            config.web.get_or_insert_with(Default::default);
            crate::schedule::daemon::run(config, crate::schedule::daemon::Mode::ServeOnly)?;
            Ok(Outcome::Success)
        }
        Command::Export(ExportArgs {
            command: None,
            table,
            as_of,
            integration,
            output,
            format,
            allow_formulas,
        }) => {
            let Some(table) = table else {
                return Err(usage("name the table to export, or `export unsubscribes`"));
            };
            let config = load_config(&cli.config)?;
            let key = table_key(&config, &table, integration.as_deref())?;
            let store = Store::open_read_only_at(&config.store.location)?;
            let export = crate::store::TableExport {
                table,
                key,
                as_of,
                integration,
                format,
                neutralise_formulas: !allow_formulas,
            };
            // DuckDB writes the file: into a private temporary file beside
            // the destination (partners' data is never world-readable, and a
            // reader sees the old file or the whole new one), renamed after.
            let dir = output
                .as_deref()
                .and_then(Path::parent)
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir);
            let tmp = tempfile::Builder::new()
                .prefix(".dropsync-export-")
                .tempfile_in(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create a file in {}: {e}", dir.display()))?;
            // DuckDB creates the file anew, with the process's umask.
            crate::store::keep_new_files_private();
            let n = store.export_table(&export, tmp.path())?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))?;
            }
            match &output {
                Some(path) => {
                    tmp.as_file().sync_all()?;
                    tmp.persist(path).map_err(|e| {
                        anyhow::anyhow!(
                            "cannot write the export to {}: {}",
                            path.display(),
                            e.error
                        )
                    })?;
                    if let Ok(d) = std::fs::File::open(&dir) {
                        let _ = d.sync_all();
                    }
                }
                None => {
                    let mut file = std::fs::File::open(tmp.path())?;
                    printed(std::io::copy(&mut file, out).map(drop))?;
                }
            }
            tracing::info!(rows = n, table = export.table, "table exported");
            Ok(Outcome::Success)
        }
        Command::Export(ExportArgs {
            command: Some(ExportCommand::Unsubscribes(args)),
            ..
        }) => {
            let config = load_config(&cli.config)?;
            let spec = unsubscribe_columns(&config, &args.table)?;
            let store = Store::open_read_only_at(&config.store.location)?;
            let (since, until) = if args.previous_day {
                let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
                (Some(yesterday), Some(yesterday))
            } else {
                (args.since, args.until)
            };
            let filter = UnsubscribeFilter {
                lists: args.lists,
                exclude_lists: args.exclude_lists,
                since,
                until,
                reasons: args.reasons,
                exclude_reasons: args.exclude_reasons,
            };
            let formulas = if args.allow_formulas {
                FormulaCells::Keep
            } else {
                FormulaCells::Neutralise
            };
            let n = match &args.output {
                Some(path) => {
                    let mut buf = Vec::new();
                    let n = store.export_unsubscribes(
                        &args.table,
                        &spec,
                        &filter,
                        formulas,
                        &mut buf,
                    )?;
                    write_atomic(path, &buf).map_err(|e| {
                        anyhow::anyhow!("cannot write the export to {}: {e}", path.display())
                    })?;
                    n
                }
                None => store.export_unsubscribes(&args.table, &spec, &filter, formulas, out)?,
            };
            tracing::info!(records = n, "unsubscribes exported");
            Ok(Outcome::Success)
        }
    }
}

/// Every integration's card, from the daemon when one holds the store.
fn status_cards(config: &Config) -> Result<Vec<crate::status::Card>, CliError> {
    match via_daemon(config, &api::Request::Status)? {
        Some(api::Response::Status(cards)) => Ok(cards),
        Some(other) => Err(unexpected(other)),
        None => {
            let store = match &config.store.location {
                crate::config::StoreLocation::DuckDb(path) if !path.exists() => None,
                location => Some(Store::open_read_only_at(location)?),
            };
            crate::status::cards(store.as_ref(), config, chrono::Utc::now())
                .map_err(|e| usage(e.to_string()))
        }
    }
}

/// The key of `table`, from the dataset of the integration(s) syncing into
/// it (`integration` when named).
fn table_key(
    config: &Config,
    table: &str,
    integration: Option<&str>,
) -> Result<Vec<String>, CliError> {
    if let Some(name) = integration {
        match config.integrations.get(name) {
            None => {
                return Err(usage(format!(
                    "no integration named `{name}` in {}",
                    config.path.display()
                )));
            }
            Some(i) if i.table_name() != table => {
                return Err(usage(format!(
                    "integration `{name}` syncs into table `{}`, not `{table}`",
                    i.table_name()
                )));
            }
            Some(_) => {}
        }
    }
    let Some((name, _)) = config.integrations.iter().find(|(n, i)| {
        i.table_name() == table && integration.is_none_or(|want| want == n.as_str())
    }) else {
        return Err(usage(format!(
            "no integration in {} syncs into a table `{table}`",
            config.path.display()
        )));
    };
    let resolved = Integration::resolve(config, name).map_err(|e| usage(e.to_string()))?;
    Ok(resolved.target.key.clone())
}

/// What an unsubscribe export of `table` reads: the status rule and fields
/// of the dataset its integrations sync into it (`subscribers` when none do).
fn unsubscribe_columns(config: &Config, table: &str) -> Result<UnsubscribeColumns, CliError> {
    let dataset = match config
        .integrations
        .iter()
        .find(|(_, i)| i.table_name() == table)
    {
        Some((name, _)) => {
            Integration::resolve(config, name)
                .map_err(|e| usage(e.to_string()))?
                .dataset
        }
        None => Dataset::load("subscribers", config.store.schemas.as_deref())
            .map_err(|e| usage(e.to_string()))?,
    };
    UnsubscribeColumns::from_schema(&dataset.name, &dataset.schema).map_err(usage)
}

fn load_config(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| CliError {
        outcome: Outcome::Usage,
        error: e.into(),
    })
}

/// The exit outcome of a pipeline error, the same from every command: a
/// config that names an unknown dataset or a bad schema is the user's to
/// fix (usage); anything the store, the disk or a file did is a failure.
fn pipeline_error(e: pipeline::PipelineError) -> CliError {
    use pipeline::PipelineError;
    let outcome = match &e {
        PipelineError::Integration { .. } | PipelineError::Schema(_) => Outcome::Usage,
        _ => Outcome::Failed,
    };
    CliError {
        outcome,
        error: e.into(),
    }
}

/// What printing left to say: nothing when the reader went away (`| head`),
/// since the runs themselves decide the exit code.
fn printed(result: std::io::Result<()>) -> Result<(), CliError> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::from),
    }
}

fn run(
    config_path: &Path,
    args: RunArgs,
    out: &mut dyn Write,
    palette: output::Palette,
    line: Option<&progress::ProgressLine>,
) -> Result<Outcome, CliError> {
    let config = load_config(config_path)?;
    // Every integration must resolve (dataset, schema) before the store is
    // touched: a config mistake leaves nothing behind.
    for name in config.integrations.keys().chain(&args.integrations) {
        Integration::resolve(&config, name).map_err(|e| usage(e.to_string()))?;
    }
    let dates = match (args.date, args.from, args.to) {
        (Some(d), _, _) => Some((d, d)),
        (None, Some(from), Some(to)) if from <= to => Some((from, to)),
        (None, Some(from), Some(to)) => {
            return Err(usage(format!("--from {from} is after --to {to}")));
        }
        (None, Some(from), None) => Some((from, chrono::Utc::now().date_naive())),
        (None, None, Some(to)) => Some((NaiveDate::MIN, to)),
        (None, None, None) => None,
    };
    let request = api::Request::Run {
        integrations: args.integrations.clone(),
        dates,
        force: args.sync.force,
        dry_run: args.sync.dry_run,
    };
    if let Some(outcomes) = outcomes_via_daemon(&config, &request, None)? {
        return print_outcomes(out, &outcomes, args.sync.json, dates, palette);
    }
    let store = Store::open_at(&config.store.location, &config.notify)?.feeding(&config.subscribe);
    let selection = Selection {
        integrations: args.integrations,
        dates,
        latest_only: false,
    };
    let opts = args.sync.options(Trigger::Manual);
    let json = args.sync.json;
    let mut print_error = None;
    let outcomes = sync::run(&store, &config, &selection, opts, |outcome| {
        if let Some(line) = line {
            line.clear();
        }
        if !json && let Err(e) = output::file_outcome(out, outcome, palette) {
            print_error.get_or_insert(e);
        }
    })
    .map_err(pipeline_error);
    deliver_alerts(&store, &config);
    let outcomes = outcomes?;
    if let Some(e) = print_error {
        printed(Err(e))?;
    }
    if json {
        printed(output::json(out, &output::outcomes_json(&outcomes)))?;
    } else if outcomes.is_empty() {
        printed(nothing_to_sync(out, dates))?;
    }
    flushed(store, overall(&outcomes))
}

/// The outcome of a command that wrote to the store, once what it committed
/// is on disk: DuckDB would write it when the store closes, but would
/// swallow a failure there.
///
/// Once it is on disk the store is left for the process's exit to close
/// (`Store::leave_to_exit`): this is the command's last step.
fn flushed(store: Store, outcome: Outcome) -> Result<Outcome, CliError> {
    match store.flush() {
        Ok(()) => {
            store.leave_to_exit();
            Ok(outcome)
        }
        // A failure already reported (a batch that could not be flushed
        // leaves the store refusing writes) is not reported twice.
        Err(_) if outcome == Outcome::Failed => Ok(outcome),
        Err(e) => Err(e.into()),
    }
}

/// Sends the alerts this command's runs recorded (committed already); a
/// receiver that is down keeps them in the outbox for a later try.
fn deliver_alerts(store: &Store, config: &Config) {
    if config.notify.is_empty() && config.subscribe.is_empty() {
        return;
    }
    if let Err(e) = crate::notify::deliver_due(store, config, crate::notify::Recipients::All) {
        tracing::warn!("cannot deliver alerts or changes: {e}");
    }
}

fn nothing_to_sync(
    out: &mut dyn Write,
    dates: Option<(NaiveDate, NaiveDate)>,
) -> std::io::Result<()> {
    match dates {
        Some((from, to)) if from == to => writeln!(out, "no file for {from}"),
        Some(_) => writeln!(out, "no file in that range"),
        None => writeln!(out, "nothing new to sync"),
    }
}

/// Prints what the daemon ran for us.
fn print_outcomes(
    out: &mut dyn Write,
    outcomes: &[FileOutcome],
    json: bool,
    dates: Option<(NaiveDate, NaiveDate)>,
    palette: output::Palette,
) -> Result<Outcome, CliError> {
    let result = (|| {
        if json {
            return output::json(out, &output::outcomes_json(outcomes));
        }
        for outcome in outcomes {
            output::file_outcome(out, outcome, palette)?;
        }
        if outcomes.is_empty() {
            nothing_to_sync(out, dates)?;
        }
        Ok(())
    })();
    printed(result)?;
    Ok(overall(outcomes))
}

/// Asks the daemon, when one holds the store. `None`: no daemon; the
/// command opens the store itself.
fn via_daemon(config: &Config, request: &api::Request) -> Result<Option<api::Response>, CliError> {
    via_daemon_with(config, request, None)
}

/// `via_daemon`, sending `content` after the request (an ingested file).
fn via_daemon_with(
    config: &Config,
    request: &api::Request,
    content: Option<&mut dyn std::io::Read>,
) -> Result<Option<api::Response>, CliError> {
    let timeout = config.daemon.answer_timeout_secs.duration();
    match api::call(&config.socket_path(), request, content, timeout) {
        None => Ok(None),
        Some(Ok(api::Response::Error(message))) => Err(anyhow::anyhow!(message).into()),
        Some(Ok(response)) => Ok(Some(response)),
        Some(Err(message)) => Err(anyhow::anyhow!(message).into()),
    }
}

fn outcomes_via_daemon(
    config: &Config,
    request: &api::Request,
    content: Option<&mut dyn std::io::Read>,
) -> Result<Option<Vec<FileOutcome>>, CliError> {
    match via_daemon_with(config, request, content)? {
        None => Ok(None),
        Some(api::Response::Outcomes(outcomes)) => Ok(Some(outcomes)),
        Some(other) => Err(unexpected(other)),
    }
}

fn unexpected(response: api::Response) -> CliError {
    anyhow::anyhow!("the daemon answered something unexpected: {response:?}").into()
}

fn ingest(
    config_path: &Path,
    args: IngestArgs,
    out: &mut dyn Write,
    palette: output::Palette,
    line: Option<&progress::ProgressLine>,
) -> Result<Outcome, CliError> {
    let config = load_config(config_path)?;
    Integration::resolve(&config, &args.integration).map_err(|e| usage(e.to_string()))?;
    // Opened here, with this user's rights: a daemon is handed the content,
    // never a path it would open with its own.
    let opened = std::fs::File::open(&args.file).and_then(|f| Ok((f.metadata()?, f)));
    let (meta, mut file) = match opened {
        Ok(opened) => opened,
        Err(source) => {
            let error = crate::source::SourceError::Read {
                path: args.file.clone(),
                source,
            };
            let outcome = FileOutcome::Error {
                integration: args.integration.clone(),
                file: Some(args.file.display().to_string()),
                error: error.to_string(),
            };
            return print_outcomes(out, &[outcome], args.sync.json, None, palette);
        }
    };
    let request = api::Request::Ingest {
        integration: args.integration.clone(),
        name: args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: meta.len(),
        modified: crate::source::mtime(&meta),
        force: args.sync.force,
        dry_run: args.sync.dry_run,
    };
    if let Some(outcomes) = outcomes_via_daemon(&config, &request, Some(&mut file))? {
        return print_outcomes(out, &outcomes, args.sync.json, None, palette);
    }
    let store = Store::open_at(&config.store.location, &config.notify)?.feeding(&config.subscribe);
    let opts = args.sync.options(Trigger::Ingest);
    let outcome =
        sync::ingest(&store, &config, &args.integration, &args.file, opts).map_err(pipeline_error);
    deliver_alerts(&store, &config);
    if let Some(line) = line {
        line.clear();
    }
    let outcome = outcome?;
    printed(if args.sync.json {
        output::json(out, &output::outcomes_json(std::slice::from_ref(&outcome)))
    } else {
        output::file_outcome(out, &outcome, palette)
    })?;
    flushed(store, overall(std::slice::from_ref(&outcome)))
}

/// The exit outcome of a set of file outcomes: the worst of them.
fn overall(outcomes: &[FileOutcome]) -> Outcome {
    let mut result = Outcome::Success;
    for o in outcomes {
        let this = match o {
            FileOutcome::Ran(report) => match report.record.status {
                RunStatus::Success | RunStatus::Skipped | RunStatus::Running => Outcome::Success,
                RunStatus::Partial => Outcome::Partial,
                RunStatus::Failed | RunStatus::Interrupted => Outcome::Failed,
            },
            FileOutcome::Error { .. } => Outcome::Failed,
        };
        result = match (result, this) {
            (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
            (Outcome::Partial, _) | (_, Outcome::Partial) => Outcome::Partial,
            _ => Outcome::Success,
        };
    }
    result
}

/// `--encoding`: a WHATWG label, checked once here.
fn parse_encoding(label: &str) -> Result<Encoding, String> {
    Encoding::from_label(label).ok_or_else(|| {
        format!("unknown encoding `{label}`: use a WHATWG encoding label such as utf-8, windows-1252, iso-8859-15, shift_jis or utf-16le")
    })
}

fn validate(
    config_path: &Path,
    args: ValidateArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let (integration, mut dialect, columns) = match &args.integration {
        Some(name) => {
            let config = load_config(config_path)?;
            let integration =
                Integration::resolve(&config, name).map_err(|e| usage(e.to_string()))?;
            let dialect = integration.config.csv.clone();
            let columns = integration.config.columns.clone();
            (integration, dialect, columns)
        }
        None => {
            let name = args.dataset.as_deref().unwrap_or_default();
            let dataset =
                Dataset::load(name, args.schemas.as_deref()).map_err(|e| usage(e.to_string()))?;
            let text = format!(
                "dataset = \"{name}\"\npattern = \"*\"\nsource = {{ type = \"folder\", path = \".\" }}\n"
            );
            let config: crate::config::IntegrationConfig =
                toml::from_str(&text).map_err(|e| usage(e.to_string()))?;
            let integration =
                Integration::from_config(&dataset.name, &config, args.schemas.as_deref())
                    .map_err(|e| usage(e.to_string()))?;
            (integration, CsvDialect::default(), Default::default())
        }
    };
    if let Some(d) = args.delimiter {
        dialect.delimiter = d;
    }
    if let Some(encoding) = args.encoding {
        dialect.encoding = encoding;
    }
    if args.no_header {
        dialect.header = false;
    }
    let name = args.file.display().to_string();
    let reading = schema::formats::DropReading {
        csv: &dialect,
        columns: &columns,
        ..schema::formats::DropReading::of(&integration.config)
    };
    let raw =
        match schema::formats::read_drop(&args.file, &name, &reading, &integration.file_schema) {
            Ok(read) => read.table,
            Err(e) => {
                if args.json {
                    output::json(
                        out,
                        &serde_json::json!({"file": name, "valid": false, "error": e.to_string()}),
                    )?;
                    return Ok(Outcome::Failed);
                }
                return Err(e.into());
            }
        };
    // References to other datasets need the store; only the file is checked here.
    let ctx = schema::validate::Context {
        references: Default::default(),
        repeats_are_duplicates: integration.mode == crate::config::Mode::Append,
        key_checked_later: integration.metrics.is_some(),
        keep_errors: None,
    };
    let mut file_schema = integration.file_schema.clone();
    let unchecked: Vec<String> = file_schema
        .foreign_keys
        .iter()
        .filter(|fk| !fk.reference.resource.is_empty())
        .map(|fk| fk.reference.resource.clone())
        .collect();
    file_schema
        .foreign_keys
        .retain(|fk| fk.reference.resource.is_empty());
    if let Some(message) = pipeline::computed_in_file(&integration, &raw) {
        if args.json {
            output::json(
                out,
                &serde_json::json!({"file": name, "valid": false, "error": message}),
            )?;
            return Ok(Outcome::Failed);
        }
        return Err(CliError {
            outcome: Outcome::Failed,
            error: anyhow::anyhow!("{name}: {message}"),
        });
    }
    let mut valid = schema::validate(&raw, &file_schema, &ctx);
    if let Some(spec) = &integration.metrics {
        valid = spec.to_long(valid, &raw, chrono::Utc::now().date_naive());
    }
    if let Some(computed) = &integration.computed {
        valid = computed
            .add_to(valid, &raw, &std::env::temp_dir(), usize::MAX)
            .map_err(|e| pipeline_error(e.into()))?;
    }
    output::validation(out, &name, &valid, &unchecked, args.errors, args.json)?;
    Ok(if valid.error_rows > 0 {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}

/// Writes `bytes` to `path` so that a reader sees the old file or the whole
/// new one: an exclusive temporary file with an unpredictable name beside
/// it (so no one can plant a symlink there to redirect the write), synced,
/// then renamed over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".dropsync-export-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
