//! `dropsync daemon`: holds the store, and syncs integrations when their
//! schedule fires, when a file settles in a watched folder, and when the
//! command line asks through the local API.
//!
//! One worker thread owns the store and runs one batch at a time, so runs
//! never overlap (DuckDB has one writer anyway); an integration already
//! waiting for its turn is not queued twice. SIGTERM or SIGINT stops taking
//! work, lets the batch in flight finish, and exits.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use chrono::Utc;
use tokio::net::UnixListener;

use super::Schedule;
use super::api::{Request, Response};
use crate::config::{CatchUp, Config, SourceConfig};
use crate::notify::Recipients;
use crate::pipeline::{RunOptions, Trigger};
use crate::store::{Store, StoreError, Taken};
use crate::sync::{self, FileOutcome, ReceivedFile, Selection};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("cannot start the daemon: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Web(String),
}

/// What the daemon does besides holding the store and serving the command
/// line and the web console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the schedules, watch the folders, judge the deadlines.
    Full,
    /// Only serve (`dropsync web`): nothing syncs unless asked.
    ServeOnly,
}

/// Work for the thread that owns the store.
type Job = Box<dyn FnOnce(&Store, &Config) + Send>;

/// Hands work to the worker; remembers which integrations wait for a sync.
#[derive(Clone)]
struct Worker {
    jobs: mpsc::Sender<Job>,
    waiting: Arc<Mutex<HashSet<String>>>,
    settle: Duration,
}

impl Worker {
    /// Queues a sync of `integration`, unless one is already waiting.
    fn sync(&self, integration: &str, trigger: Trigger, latest_only: bool) {
        if !self
            .waiting
            .lock()
            .expect("not poisoned")
            .insert(integration.to_string())
        {
            tracing::debug!(integration, "a sync is already waiting; not queued twice");
            return;
        }
        let waiting = self.waiting.clone();
        let name = integration.to_string();
        let settle = self.settle;
        let _ = self.jobs.send(Box::new(move |store, config| {
            waiting.lock().expect("not poisoned").remove(&name);
            let Some(_hold) = take(store, &name) else {
                return;
            };
            sync_now(store, config, &name, trigger, latest_only, settle);
        }));
    }

    /// Queues the run of `integration`'s due schedule slots, unless one is
    /// already waiting. The job re-reads, once it holds the integration,
    /// which slots have run: on a shared store another worker may have run
    /// them meanwhile, and a slot is run once. `catching_up`: slots missed
    /// while no worker ran them (`catch_up` decides between every new file
    /// and the newest).
    fn fire(&self, integration: &str, catching_up: bool) {
        let key = format!("{integration}\0schedule");
        if !self
            .waiting
            .lock()
            .expect("not poisoned")
            .insert(key.clone())
        {
            tracing::debug!(
                integration,
                "a scheduled run is already waiting; not queued twice"
            );
            return;
        }
        let waiting = self.waiting.clone();
        let name = integration.to_string();
        let settle = self.settle;
        let _ = self.jobs.send(Box::new(move |store, config| {
            waiting.lock().expect("not poisoned").remove(&key);
            let Some(integration) = config.integrations.get(&name) else {
                return;
            };
            let Some(schedule) = integration
                .schedule
                .as_deref()
                .and_then(|text| Schedule::parse(text, integration.timezone.as_deref()).ok())
            else {
                return;
            };
            let Some(_hold) = take(store, &name) else {
                return;
            };
            let now = Utc::now();
            let due = match store.last_fired(&name) {
                Ok(Some(last)) => schedule.fires_between(last.and_utc(), now, 1000),
                Ok(None) => vec![now],
                Err(e) => {
                    tracing::warn!(integration = name, "cannot read the schedule's state: {e}");
                    return;
                }
            };
            let Some(&latest) = due.last() else {
                tracing::debug!(
                    integration = name,
                    "the due schedule slot has already run (on another worker)"
                );
                return;
            };
            let latest_only =
                integration.catch_up == CatchUp::Latest && (catching_up || due.len() > 1);
            sync_now(store, config, &name, Trigger::Schedule, latest_only, settle);
            // Recorded once the slot has run, under the same hold: a worker
            // that dies before this leaves the slot due, for another to run.
            if let Err(e) = store.record_fired(&name, latest.naive_utc()) {
                tracing::warn!(integration = name, "{e}");
            }
        }));
    }

    /// Runs `work` on the worker, after the batches queued before it, and
    /// waits for its answer (blocking: called from a connection's thread).
    fn ask(&self, work: impl FnOnce(&Store, &Config) -> Response + Send + 'static) -> Response {
        let (tx, rx) = mpsc::channel();
        let sent = self.jobs.send(Box::new(move |store, config| {
            let _ = tx.send(work(store, config));
        }));
        if sent.is_err() {
            return Response::Error("the daemon is stopping".into());
        }
        rx.recv()
            .unwrap_or_else(|_| Response::Error("the daemon is stopping".into()))
    }
}

fn log_outcome(outcome: &FileOutcome) {
    match outcome {
        FileOutcome::Ran(report) => {
            let r = &report.record;
            let failed = matches!(
                r.status,
                crate::store::RunStatus::Failed | crate::store::RunStatus::Interrupted
            );
            let file = r.file_name.as_deref().unwrap_or("-");
            let message = r.message.as_deref().unwrap_or("");
            if failed {
                tracing::warn!(
                    integration = r.integration,
                    file,
                    status = r.status.as_str(),
                    execution_id = r.execution_id,
                    "{message}"
                );
            } else {
                tracing::info!(
                    integration = r.integration,
                    file,
                    status = r.status.as_str(),
                    rows = r.input_rows,
                    rejected = r.error_rows,
                    inserted = r.inserted,
                    updated = r.updated,
                    deleted = r.deleted,
                    execution_id = r.execution_id,
                    "run finished"
                );
            }
        }
        FileOutcome::Error {
            integration,
            file,
            error,
        } => {
            tracing::warn!(
                integration,
                file = file.as_deref().unwrap_or("-"),
                "{error}"
            )
        }
    }
}

/// Takes `name` for a run; `None` if another worker of the shared store is
/// syncing it (left to that worker) or the store cannot say.
fn take<'a>(store: &'a Store, name: &str) -> Option<crate::store::Hold<'a>> {
    match store.take(name) {
        Ok(Taken::Held(hold)) => Some(hold),
        Ok(Taken::Busy { worker }) => {
            tracing::debug!(
                integration = name,
                worker,
                "being synced by another worker; left to it"
            );
            None
        }
        Err(e) => {
            tracing::warn!(integration = name, "cannot take the integration: {e}");
            None
        }
    }
}

/// Syncs `name`'s new files (held by this worker).
fn sync_now(
    store: &Store,
    config: &Config,
    name: &str,
    trigger: Trigger,
    latest_only: bool,
    settle: Duration,
) {
    let selection = Selection {
        integrations: vec![name.to_string()],
        dates: None,
        latest_only,
    };
    let opts = RunOptions {
        force: false,
        dry_run: false,
        trigger,
        explicit: false,
        folder_min_age: settle,
        execution_id: None,
    };
    tracing::info!(
        integration = name,
        trigger = trigger.as_str(),
        "sync started"
    );
    match sync::run(store, config, &selection, opts, log_outcome) {
        Ok(outcomes) if outcomes.is_empty() => {
            tracing::info!(integration = name, "nothing new to sync")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(integration = name, "sync failed: {e}"),
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config: Config, mode: Mode) -> Result<(), DaemonError> {
    // Nobody watches a daemon's terminal: a long run's progress goes to the log.
    let tracker = Arc::new(crate::progress::Tracker::default());
    crate::progress::install(tracker.clone());
    crate::progress::log_every(tracker, crate::progress::log_interval());
    let store = Store::open_at(&config.store.location, &config.notify)?.feeding(&config.subscribe);
    let web = crate::web::bind(&config, &store).map_err(DaemonError::Web)?;
    // Questions about the store (status, history, show) are answered on a
    // connection of their own, so they never wait behind a batch.
    let reader = Arc::new(Mutex::new(store.reader()?));
    // Catch up with what was missed while down, before anything else.
    let now = Utc::now();
    let mut catch_up = Vec::new();
    let mut schedules = Vec::new();
    for (name, integration) in &config.integrations {
        let Some(text) = integration.schedule.as_ref().filter(|_| mode == Mode::Full) else {
            continue;
        };
        let schedule = Schedule::parse(text, integration.timezone.as_deref())
            .expect("checked when the config was read");
        match store.last_fired(name)? {
            Some(last) => {
                let missed = schedule.fires_between(last.and_utc(), now, 1000);
                if !missed.is_empty() {
                    tracing::info!(integration = name, missed = missed.len(), since = %last, "catching up missed schedules");
                    catch_up.push(name.clone());
                }
            }
            // The first look at this schedule: its slots count from now.
            None => store.record_fired(name, now.naive_utc())?,
        }
        schedules.push((name.clone(), schedule));
    }
    // A deadline that passed while the daemon was down is noticed now (by
    // the daemon that watches deadlines, not by `dropsync web`).
    for (name, integration) in config.integrations.iter().filter(|_| mode == Mode::Full) {
        crate::notify::notice_missing(&store, name, integration, now, true)?;
    }

    // SIGTERM and SIGINT are taken over before the socket appears: a stop
    // asked for as soon as the daemon is reachable still finishes cleanly
    // (socket removed), instead of killing it with its socket left behind,
    // which the next start's callers would take for a daemon that is gone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let stop_signals = {
        let _entered = runtime.enter();
        StopSignals::register().map_err(DaemonError::Runtime)?
    };

    // The socket appears once the schedules' state is recorded: a command
    // that finds it talks to a daemon that is ready.
    let socket = config.socket_path();
    // Holding the store means no other daemon uses this socket.
    let _ = std::fs::remove_file(&socket);
    let listener = listen(&socket).map_err(|source| DaemonError::Socket {
        path: socket.clone(),
        source,
    })?;

    // Alerts are sent by threads of their own, one per receiver, each on
    // its own connection: a receiver that is slow or hangs delays neither
    // the next run nor the other receivers' alerts.
    let outbox = Arc::new(Outbox::default());
    let mut senders = Vec::new();
    for notifier in &config.notify {
        let connection = store.sender()?;
        let (config, outbox) = (config.clone(), outbox.clone());
        let notifier = notifier.clone();
        senders.push(std::thread::spawn(move || {
            let recipients = crate::notify::Recipients::Only(&notifier);
            outbox.send_until_stopped(&connection, &config, recipients)
        }));
    }
    // The change feed's subscribers likewise, one thread each.
    for subscriber in &config.subscribe {
        let connection = store.sender()?;
        let (config, outbox) = (config.clone(), outbox.clone());
        let subscriber = subscriber.clone();
        senders.push(std::thread::spawn(move || {
            let recipients = crate::notify::Recipients::Subscriber(&subscriber);
            outbox.send_until_stopped(&connection, &config, recipients)
        }));
    }

    let shared = store.is_shared();
    let stopping = Arc::new(AtomicBool::new(false));
    let (jobs, queue) = mpsc::channel::<Job>();
    let worker_config = config.clone();
    let worker_stopping = stopping.clone();
    let worker_outbox = outbox.clone();
    let worker_thread = std::thread::spawn(move || {
        for job in queue {
            if worker_stopping.load(Ordering::SeqCst) {
                break;
            }
            job(&store, &worker_config);
            // Whatever the job recorded is sent right after its commit.
            worker_outbox.committed();
        }
        drop(store);
    });
    let worker = Worker {
        jobs,
        waiting: Arc::new(Mutex::new(HashSet::new())),
        settle: config.daemon.settle_secs.duration(),
    };
    // The console hands the runs it is asked for (sync now, an upload) to
    // the same worker, so they queue behind the batch in flight.
    let web = web.map(|(listener, console)| {
        let jobs = worker.jobs.clone();
        (
            listener,
            console.with_queue(move |job| jobs.send(job).is_ok()),
        )
    });
    // What arrived in a caught-up integration's folder while the daemon was
    // down is the catch-up's to take (all, or the latest only), not the
    // start-up look at watched folders.
    let caught_up: HashSet<String> = catch_up.iter().cloned().collect();
    for name in catch_up {
        worker.fire(&name, true);
    }

    let api = Api {
        worker: worker.clone(),
        reader,
        config: Arc::new(config.clone()),
    };
    let result = runtime.block_on(async {
        if let Some((listener, console)) = web {
            tokio::spawn(crate::web::serve(listener, console));
        }
        let started = Started {
            schedules,
            caught_up,
            shared,
            stop_signals,
        };
        serve(config.clone(), &api, listener, started, mode).await
    });
    tracing::info!("stopping: finishing the batch in flight");
    stopping.store(true, Ordering::SeqCst);
    // Its reading connection closes here, off the runtime; its handle on
    // the job queue goes, so the worker ends once the queue is empty.
    drop(api);
    drop(worker);
    drop(runtime);
    let _ = worker_thread.join();
    // What the last batch recorded is sent before the senders stop.
    outbox.stop();
    for sender in senders {
        let _ = sender.join();
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    result
}

/// Binds the API socket for the daemon's user alone: created with no
/// access for group and others (no moment where another user could connect,
/// whatever the umask), then set to 0600.
fn listen(socket: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    crate::store::keep_new_files_private();
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What `serve` starts from: the schedules to fire, the integrations whose
/// missed runs are already queued, and the stop signals, taken over early.
struct Started {
    schedules: Vec<(String, Schedule)>,
    caught_up: HashSet<String>,
    /// Other workers share the store (PostgreSQL): look for what they left.
    shared: bool,
    stop_signals: StopSignals,
}

/// SIGTERM and SIGINT, registered with the runtime (which replaces their
/// default action of ending the process at once).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn register() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }
}

/// `api` outlives the runtime: the store connections it holds are dropped
/// off the async threads (a PostgreSQL session closes by blocking).
async fn serve(
    config: Config,
    api: &Api,
    listener: std::os::unix::net::UnixListener,
    started: Started,
    mode: Mode,
) -> Result<(), DaemonError> {
    let Started {
        schedules,
        caught_up,
        shared,
        mut stop_signals,
    } = started;
    let worker = api.worker.clone();
    let listener = UnixListener::from_std(listener).map_err(DaemonError::Runtime)?;
    if mode == Mode::Full && shared {
        tokio::spawn(take_over(
            api.reader.clone(),
            config.clone(),
            schedules.clone(),
            worker.clone(),
        ));
    }
    for (name, schedule) in schedules {
        tokio::spawn(fire_on_schedule(name, schedule, worker.clone()));
    }
    let watched = config.integrations.iter().filter(|_| mode == Mode::Full);
    for (name, integration) in watched {
        if let Some(expect) = &integration.expect {
            tokio::spawn(watch_deadline(
                name.clone(),
                expect.clone(),
                integration.zone(),
                worker.clone(),
            ));
        }
    }
    let _watcher = match mode {
        Mode::Full => watch_folders(&config, worker.clone(), &caught_up)?,
        Mode::ServeOnly => None,
    };
    tracing::info!(
        integrations = config.integrations.len(),
        socket = %config.socket_path().display(),
        "daemon started"
    );

    loop {
        tokio::select! {
            _ = stop_signals.term.recv() => break,
            _ = stop_signals.interrupt.recv() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    api.accept(stream);
                }
            }
        }
    }
    Ok(())
}

/// How often a worker of a shared store looks for work no live worker
/// holds. With the keepalives of the store's sessions, this bounds how
/// long a dead worker's integrations wait for another.
const TAKEOVER_INTERVAL: Duration = Duration::from_secs(5);

/// On a shared store, looks every `TAKEOVER_INTERVAL` for integrations no
/// worker holds that have work left: a schedule slot that has not run (its
/// worker died, or was busy with another of its runs), or a run left
/// `running` by a worker that died. Each is queued; the job takes it, or
/// finds another worker was quicker.
async fn take_over(
    reader: Arc<Mutex<Store>>,
    config: Config,
    schedules: Vec<(String, Schedule)>,
    worker: Worker,
) {
    let names: Vec<String> = config.integrations.keys().cloned().collect();
    let mut tick = tokio::time::interval(TAKEOVER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reader = reader.clone();
        let names = names.clone();
        let looked = tokio::task::spawn_blocking(move || {
            let store = reader.lock().unwrap_or_else(|e| e.into_inner());
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            store.shared_state(&names)
        })
        .await;
        let state = match looked {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => {
                tracing::warn!("cannot look for work other workers left: {e}");
                continue;
            }
            Err(_) => continue,
        };
        let now = Utc::now();
        for (name, schedule) in &schedules {
            if state.held.contains(name) {
                continue;
            }
            let due = state.last_fired.get(name).is_some_and(|last| {
                schedule
                    .next_after(last.and_utc())
                    .is_some_and(|next| next <= now)
            });
            if due {
                tracing::info!(
                    integration = name,
                    "a schedule slot no worker ran is due: taking it"
                );
                worker.fire(name, true);
            }
        }
        for name in &state.running {
            if state.held.contains(name) || !config.integrations.contains_key(name) {
                continue;
            }
            tracing::info!(
                integration = name,
                "a run its worker left unfinished: taking it over"
            );
            worker.sync(name, Trigger::Takeover, false);
        }
    }
}

/// Fires `name` at each of its schedule's times. Each next time is computed
/// afresh in the schedule's zone, so daylight-saving changes keep the local time.
async fn fire_on_schedule(name: String, schedule: Schedule, worker: Worker) {
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!(integration = name, "the schedule never fires again");
            return;
        };
        tracing::debug!(integration = name, next = %next, "next scheduled run");
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        // Sleeping can end a little early; never fire before the time.
        while Utc::now() < next {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker.fire(&name, false);
    }
}

/// Looks at `name` at each of its `expect` deadlines, so a file that does not
/// come is noticed when it was due, not when the next one arrives.
async fn watch_deadline(
    name: String,
    expect: crate::freshness::Expectation,
    zone: chrono_tz::Tz,
    worker: Worker,
) {
    loop {
        let now = Utc::now();
        let Some(deadline) = expect.next_after(now, zone) else {
            return;
        };
        tokio::time::sleep((deadline - now).to_std().unwrap_or_default()).await;
        while Utc::now() <= deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let name = name.clone();
        let _ = worker.jobs.send(Box::new(move |store, config| {
            let Some(integration) = config.integrations.get(&name) else {
                return;
            };
            match crate::notify::notice_missing(store, &name, integration, Utc::now(), false) {
                Ok(f) => tracing::debug!(integration = name, state = ?f.map(|f| f.state), "deadline passed"),
                Err(e) => tracing::warn!(integration = name, "cannot judge freshness: {e}"),
            }
        }));
    }
}

/// What the worker tells the alert senders: something was committed (an
/// event may wait in the outbox), or the daemon is stopping.
#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct OutboxState {
    commits: u64,
    stopping: bool,
}

impl Outbox {
    fn committed(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).commits += 1;
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stopping = true;
        self.changed.notify_all();
    }

    /// Sends the due deliveries of `recipients` (one receiver's alerts, or
    /// one subscriber's changes) after each commit, and every second for
    /// the retries that come due, until the daemon stops; then one last
    /// round, for what the last batch recorded.
    fn send_until_stopped(&self, store: &Store, config: &Config, recipients: Recipients) {
        let mut seen = 0;
        let mut last_round = false;
        loop {
            if let Err(e) = crate::notify::deliver_due(store, config, recipients) {
                tracing::warn!(
                    notifier = recipients.name(),
                    "cannot deliver alerts or changes: {e}"
                );
            }
            if last_round {
                return;
            }
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (state, _) = self
                .changed
                .wait_timeout_while(state, Duration::from_secs(1), |s| {
                    s.commits == seen && !s.stopping
                })
                .unwrap_or_else(|e| e.into_inner());
            seen = state.commits;
            // Stopping is told after the worker's last commit: the round
            // that follows sees everything it recorded.
            last_round = state.stopping;
        }
    }
}

/// Watches every folder source; a folder that has had no change for
/// `settle_secs` after one is synced (trigger `watch`). Files modified within
/// that time are left alone by the sync, so a file still being copied is
/// never taken half-written.
fn watch_folders(
    config: &Config,
    worker: Worker,
    caught_up: &HashSet<String>,
) -> Result<Option<notify::RecommendedWatcher>, DaemonError> {
    use notify::{EventKind, RecursiveMode, Watcher};

    let folders: Vec<(String, PathBuf)> = config
        .integrations
        .iter()
        .filter_map(|(name, i)| match &i.source {
            SourceConfig::Folder { path } => Some((name.clone(), path.clone())),
            _ => None,
        })
        .collect();
    if folders.is_empty() {
        return Ok(None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(
                event.kind,
                EventKind::Access(notify::event::AccessKind::Open(_))
            )
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(|source| DaemonError::Watch {
        path: PathBuf::from("."),
        source,
    })?;
    let mut dirs: HashMap<PathBuf, Vec<String>> = HashMap::new();
    for (name, path) in &folders {
        let dir = path.canonicalize().unwrap_or_else(|_| path.clone());
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| DaemonError::Watch {
                path: path.clone(),
                source,
            })?;
        dirs.entry(dir).or_default().push(name.clone());
    }
    let settle = worker.settle.max(Duration::from_millis(200));
    let caught_up = caught_up.clone();
    tokio::spawn(async move {
        // Integration -> when its folder will have been quiet long enough.
        // At start, every folder is looked at once: files may have arrived,
        // or finished arriving, while the daemon was down.
        let start = tokio::time::Instant::now() + settle;
        let mut due: HashMap<String, tokio::time::Instant> = dirs
            .values()
            .flatten()
            .filter(|integration| !caught_up.contains(*integration))
            .map(|integration| (integration.clone(), start))
            .collect();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                changed = rx.recv() => {
                    let Some(path) = changed else { return };
                    let Some(dir) = path.parent() else { continue };
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    if name.starts_with(".incoming-") {
                        continue;
                    }
                    for integration in dirs.get(dir).into_iter().flatten() {
                        due.insert(integration.clone(), tokio::time::Instant::now() + settle);
                    }
                }
                _ = tick.tick() => {
                    let now = tokio::time::Instant::now();
                    let ready: Vec<String> = due.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
                    for integration in ready {
                        due.remove(&integration);
                        worker.sync(&integration, Trigger::Watch, false);
                    }
                }
            }
        }
    });
    Ok(Some(watcher))
}

/// What the API's connections share.
#[derive(Clone)]
struct Api {
    worker: Worker,
    /// The store's reading connection.
    reader: Arc<Mutex<Store>>,
    config: Arc<Config>,
}

/// How long a client may take to send its request (and an ingested file's
/// next bytes) before the daemon gives up on it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest request line accepted; anything longer is not a request.
const MAX_REQUEST_BYTES: u64 = 1 << 20;

impl Api {
    /// Takes one connection: refuses a caller that is neither the daemon's
    /// user nor root, and serves the others on a thread of their own (their
    /// reads and the worker's answers block).
    fn accept(&self, stream: tokio::net::UnixStream) {
        let peer = stream.peer_cred().map(|c| (c.uid(), c.pid()));
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let api = self.clone();
        tokio::task::spawn_blocking(move || {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
            let response = match peer {
                Ok((uid, pid)) if caller_allowed(uid) => api.serve(&stream, uid, pid),
                Ok((uid, pid)) => {
                    tracing::warn!(uid, pid, "API request refused: another user");
                    Response::Error(format!(
                        "refused: the daemon serves only its own user (uid {}) and root, not uid {uid}",
                        daemon_uid()
                    ))
                }
                Err(e) => Response::Error(format!("refused: cannot tell who is calling: {e}")),
            };
            write_response(&stream, &response);
        });
    }

    /// Reads one request (and an ingested file's content) and answers it.
    fn serve(
        &self,
        stream: &std::os::unix::net::UnixStream,
        uid: u32,
        pid: Option<i32>,
    ) -> Response {
        let mut input = BufReader::new(stream);
        let mut line = String::new();
        if let Err(e) = (&mut input).take(MAX_REQUEST_BYTES).read_line(&mut line) {
            return Response::Error(format!("a request that cannot be read: {e}"));
        }
        let request = match serde_json::from_str::<Request>(&line) {
            Ok(request) => request,
            Err(e) => return Response::Error(format!("a request that cannot be read: {e}")),
        };
        tracing::debug!(uid, pid, ?request, "API request");
        match request {
            Request::History { .. } | Request::Show { .. } | Request::Status => {
                let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
                handle(&reader, &self.config, request)
            }
            Request::Run { .. } => self
                .worker
                .ask(move |store, config| handle(store, config, request)),
            Request::Ingest {
                integration,
                name,
                size,
                modified,
                force,
                dry_run,
            } => {
                let received = ReceivedFile {
                    name,
                    size,
                    modified,
                };
                let mut content = match self.receive(&mut input, size) {
                    Ok(file) => file,
                    Err(message) => return Response::Error(message),
                };
                self.worker.ask(move |store, config| {
                    let opts = RunOptions {
                        force,
                        dry_run,
                        trigger: Trigger::Ingest,
                        explicit: true,
                        folder_min_age: Duration::ZERO,
                        execution_id: None,
                    };
                    let ingested = sync::ingest_received(
                        store,
                        config,
                        &integration,
                        &received,
                        &mut content,
                        opts,
                    );
                    match ingested {
                        Ok(outcome) => {
                            log_outcome(&outcome);
                            Response::Outcomes(vec![outcome])
                        }
                        Err(e) => Response::Error(e.to_string()),
                    }
                })
            }
        }
    }

    /// Takes an ingested file's `size` bytes off the connection into an
    /// unnamed file in staging (owner-only), before the request waits for
    /// its turn: a slow client never holds the worker up.
    fn receive(&self, input: &mut dyn Read, size: u64) -> Result<std::fs::File, String> {
        let staging = &self.config.store.staging;
        let mut file = crate::source::create_private_dir(staging)
            .and_then(|()| tempfile::tempfile_in(staging))
            .map_err(|e| format!("cannot receive the file into {}: {e}", staging.display()))?;
        let got = std::io::copy(&mut input.take(size), &mut file)
            .map_err(|e| format!("receiving the file failed: {e}"))?;
        if got != size {
            return Err(format!(
                "the file ended after {got} of the {size} bytes announced"
            ));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot read the received file back: {e}"))?;
        Ok(file)
    }
}

/// The daemon's own user, and root, may use the API; anyone else could
/// otherwise have the daemon read, sync or delete with its rights.
fn caller_allowed(uid: u32) -> bool {
    uid == 0 || uid == daemon_uid()
}

fn daemon_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

fn write_response(mut stream: &std::os::unix::net::UnixStream, response: &Response) {
    let mut text = serde_json::to_string(response).unwrap_or_else(|e| {
        serde_json::to_string(&Response::Error(e.to_string())).expect("a string serializes")
    });
    text.push('\n');
    let _ = stream.write_all(text.as_bytes());
}

fn handle(store: &Store, config: &Config, request: Request) -> Response {
    let fail = |e: &dyn std::fmt::Display| Response::Error(e.to_string());
    match request {
        Request::History { integration, limit } => {
            match store.runs(integration.as_deref(), limit) {
                Ok(runs) => Response::Runs(runs),
                Err(e) => fail(&e),
            }
        }
        Request::Show { id, errors } => match store
            .run(&id)
            .and_then(|run| Ok((store.row_errors(&run.execution_id, errors)?, run)))
        {
            Ok((errors, run)) => Response::Run {
                run: Box::new(run),
                errors,
            },
            Err(e) => fail(&e),
        },
        Request::Status => match crate::status::cards(Some(store), config, Utc::now()) {
            Ok(cards) => Response::Status(cards),
            Err(e) => fail(&e),
        },
        Request::Run {
            integrations,
            dates,
            force,
            dry_run,
        } => {
            let selection = Selection {
                integrations,
                dates,
                latest_only: false,
            };
            let opts = RunOptions {
                force,
                dry_run,
                trigger: Trigger::Manual,
                explicit: false,
                folder_min_age: Duration::ZERO,
                execution_id: None,
            };
            match sync::run(store, config, &selection, opts, log_outcome) {
                Ok(outcomes) => Response::Outcomes(outcomes),
                Err(e) => fail(&e),
            }
        }
        Request::Ingest { .. } => Response::Error("an ingest comes with its content".into()),
    }
}
