//! The day-2 sync on a PostgreSQL store, next to what a user could write by
//! hand on the same server and to the same sync on a DuckDB store.
//!
//! A throwaway PostgreSQL cluster is started for the run (`initdb` into a
//! temporary directory, a free loopback port, trust authentication on
//! loopback only), and the accounts exports of benches/day2.rs are
//! generated (a 1M-row snapshot, then the next day's: 1% updated, 0.5%
//! deleted, 0.5% inserted). Day 1 is applied once by each contender; every
//! timed day-2 run starts from a copy of that state (`CREATE DATABASE ...
//! TEMPLATE`, or a copy of the DuckDB file). Interleaved, run by run:
//!
//! - `dropsync on postgres`: `dropsync ingest` of day 2 with `[store] url`;
//! - `copy+merge`: the hand-written sync: in one transaction, COPY the file
//!   into a temporary table, MERGE it into the accounts table (update what
//!   differs, insert what is new), and delete what the file no longer has
//!   (PostgreSQL 15's MERGE has no `WHEN NOT MATCHED BY SOURCE`);
//! - `dropsync on duckdb`: the same sync on a DuckDB store, for reference.
//!
//! Prints every run, the medians, the ratios and dropsync's peak memory
//! (its own process; the server's memory is not in it). Until dropsync can
//! sync into a PostgreSQL store, its runs fail: the bench says so and goes
//! on with the others.
//!
//! `scripts/bench pg` runs it. BENCH_ROWS (default 1,000,000), BENCH_RUNS
//! (default 3), BENCH_DIR (where the files and the cluster go; a temporary
//! directory by default) and BENCH_BIN (the dropsync binary measured; a
//! release build is the one worth measuring) change what runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "shared/accounts.rs"]
mod accounts;
#[path = "shared/cluster.rs"]
mod cluster;
use accounts::*;
use cluster::Cluster;

/// The hand-written sync's table: the file's columns, typed, keyed.
const PEER_TABLE: &str = "CREATE TABLE accounts (
    accountid text PRIMARY KEY, parentid text, name text, type text,
    plan text, seats bigint, createddate date)";

/// Day 1 by hand: COPY the file into the keyed table.
fn peer_day1(cluster: &Cluster, db: &str, csv: &Path) {
    let mut client = cluster.connect(db);
    client.batch_execute(PEER_TABLE).unwrap();
    copy_file(&mut client, "accounts", csv);
    client.batch_execute("ANALYZE accounts").unwrap();
}

/// Streams `csv` into `table` with COPY FROM STDIN, as a client on
/// another machine would have to (the server cannot read the file).
fn copy_file(client: &mut impl postgres::GenericClient, table: &str, csv: &Path) -> u64 {
    let mut writer = client
        .copy_in(&format!(
            "COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
        ))
        .unwrap();
    let mut file = std::fs::File::open(csv).unwrap();
    std::io::copy(&mut file, &mut writer).unwrap();
    writer.finish().unwrap()
}

/// Day 2 by hand, in one transaction: COPY into a temporary table, MERGE
/// (update what differs, insert what is new), delete what is gone.
/// Returns (rows merged: inserted + updated, rows deleted).
fn peer_day2(cluster: &Cluster, db: &str, csv: &Path) -> (u64, u64) {
    let mut client = cluster.connect(db);
    let mut tx = client.transaction().unwrap();
    tx.batch_execute("CREATE TEMP TABLE incoming (LIKE accounts) ON COMMIT DROP")
        .unwrap();
    copy_file(&mut tx, "incoming", csv);
    tx.batch_execute("ANALYZE incoming").unwrap();
    let merged = tx
        .execute(
            "MERGE INTO accounts t USING incoming s ON t.accountid = s.accountid
             WHEN MATCHED AND (t.parentid, t.name, t.type, t.plan, t.seats, t.createddate)
                 IS DISTINCT FROM (s.parentid, s.name, s.type, s.plan, s.seats, s.createddate)
               THEN UPDATE SET parentid = s.parentid, name = s.name, type = s.type,
                 plan = s.plan, seats = s.seats, createddate = s.createddate
             WHEN NOT MATCHED THEN INSERT VALUES
               (s.accountid, s.parentid, s.name, s.type, s.plan, s.seats, s.createddate)",
            &[],
        )
        .unwrap();
    let deleted = tx
        .execute(
            "DELETE FROM accounts t
             WHERE NOT EXISTS (SELECT 1 FROM incoming s WHERE s.accountid = t.accountid)",
            &[],
        )
        .unwrap();
    tx.commit().unwrap();
    (merged, deleted)
}

/// The config of a dropsync syncing `drops` into `store` (a `[store]`
/// section's first lines), written beside `staging`.
fn dropsync_config(dir: &Path, name: &str, store: &str, drops: &Path) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[store]\n{store}staging = \"{}\"\n\n[integrations.accounts]\ndataset = \"accounts\"\nsource = {{ type = \"folder\", path = \"{}\" }}\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n",
            dir.join("staging").display(),
            drops.display()
        ),
    )
    .unwrap();
    path
}

fn ingest(bin: &Path, cfg: &Path, file: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(cfg)
        .arg("ingest")
        .arg("accounts")
        .arg(file)
        .arg("--json");
    cmd
}

/// What dropsync's run changed, as its --json output says.
fn changes_of(json: &str) -> Result<(u64, u64, u64), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not dropsync's --json output: {e}"))?;
    let c = &v[0]["changes"];
    let n = |k: &str| c[k].as_u64().ok_or_else(|| format!("no `{k}` in {json}"));
    Ok((n("inserted")?, n("updated")?, n("deleted")?))
}

/// A dropsync run that went as expected, or why not.
fn checked_sync(cmd: &mut Command, expected: (u64, u64, u64)) -> Result<Measured, String> {
    let (m, out) = try_run_measured(cmd)?;
    let changes = changes_of(&out)?;
    if changes != expected {
        return Err(format!(
            "changed (inserted, updated, deleted) = {changes:?}, expected {expected:?}"
        ));
    }
    Ok(m)
}

fn secs(v: &[Duration]) -> String {
    v.iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One contender's day-2 runs, or why it could not run.
#[derive(Default)]
struct Runs {
    times: Vec<Duration>,
    peak_mb: f64,
    failed: Option<String>,
}

impl Runs {
    fn record(&mut self, m: Measured) {
        self.times.push(m.time);
        self.peak_mb = self.peak_mb.max(m.mb());
    }

    fn median(&self) -> Option<Duration> {
        (!self.times.is_empty()).then(|| median(self.times.clone()))
    }
}

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .map(|v| v.replace('_', "").parse().expect("BENCH_ROWS: a row count"))
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let bin = std::env::var_os("BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dropsync")));
    assert!(bin.is_file(), "no dropsync binary at {}", bin.display());
    let temp;
    let root = match std::env::var_os("BENCH_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir).join("pg");
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }
        None => {
            temp = tempfile::tempdir().expect("temp dir");
            temp.path().to_path_buf()
        }
    };
    // The cluster's directory must be reachable by the server's account.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();

    let cluster = Cluster::start(&root);
    println!(
        "PostgreSQL {} on 127.0.0.1:{}; dropsync {}; load average {}",
        cluster.server_version(),
        cluster.port,
        bin.display(),
        load_average()
    );

    let drops = root.join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let day1 = accounts(rows, &mut rng);
    let day1_csv = drops.join("accounts_20261101.csv");
    let day1_size = write_csv(&day1_csv, &day1, Workload::Unquoted);
    let day2 = next_day(day1, &mut rng);
    let day2_csv = drops.join("accounts_20261102.csv");
    let day2_size = write_csv(&day2_csv, &day2, Workload::Unquoted);
    println!(
        "accounts, {rows} rows: day 1 {:.1} MB; day 2 {} rows, {:.1} MB",
        day1_size as f64 / 1e6,
        day2.len(),
        day2_size as f64 / 1e6
    );
    drop(day2);
    let expected = (rows / 200, rows / 100, rows / 200);

    // Day 1, once each.
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let pg_store = |db: &str| format!("url = \"{}\"\nsslmode = \"disable\"\n", cluster.url(db));
    let mut on_pg = Runs::default();
    cluster.admin("CREATE DATABASE dropsync_day1");
    let cfg = dropsync_config(&work, "pg-day1", &pg_store("dropsync_day1"), &drops);
    match checked_sync(&mut ingest(&bin, &cfg, &day1_csv), (rows, 0, 0)) {
        Ok(m) => println!(
            "day 1, dropsync on postgres: {:.2} s, {:.0} MB peak",
            m.time.as_secs_f64(),
            m.mb()
        ),
        Err(e) => {
            println!("day 1, dropsync on postgres: FAILED, its day-2 runs are left out:\n  {e}");
            on_pg.failed = Some(e);
        }
    }
    let started = Instant::now();
    cluster.admin("CREATE DATABASE peer_day1");
    peer_day1(&cluster, "peer_day1", &day1_csv);
    println!(
        "day 1, copy into a keyed table: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let duck_day1 = work.join("day1.duckdb");
    let cfg = dropsync_config(
        &work,
        "duck-day1",
        &format!("path = \"{}\"\n", duck_day1.display()),
        &drops,
    );
    let m = checked_sync(&mut ingest(&bin, &cfg, &day1_csv), (rows, 0, 0))
        .unwrap_or_else(|e| panic!("day 1 on a DuckDB store: {e}"));
    println!(
        "day 1, dropsync on duckdb: {:.2} s, {:.0} MB peak",
        m.time.as_secs_f64(),
        m.mb()
    );

    // Day 2, interleaved: each run starts from a copy of day 1.
    let (mut merge, mut on_duck) = (Runs::default(), Runs::default());
    for i in 0..runs {
        if on_pg.failed.is_none() {
            let db = format!("dropsync_run{i}");
            cluster.copy_database("dropsync_day1", &db);
            let cfg = dropsync_config(&work, &db, &pg_store(&db), &drops);
            match checked_sync(&mut ingest(&bin, &cfg, &day2_csv), expected) {
                Ok(m) => on_pg.record(m),
                Err(e) => {
                    println!("day 2, dropsync on postgres: FAILED:\n  {e}");
                    on_pg.failed = Some(e);
                }
            }
            cluster.drop_database(&db);
        }

        let db = format!("peer_run{i}");
        cluster.copy_database("peer_day1", &db);
        let started = Instant::now();
        let (merged, deleted) = peer_day2(&cluster, &db, &day2_csv);
        merge.times.push(started.elapsed());
        assert_eq!(
            (merged, deleted),
            (expected.0 + expected.1, expected.2),
            "the hand-written sync's changes"
        );
        cluster.drop_database(&db);

        let store = work.join(format!("run{i}.duckdb"));
        std::fs::copy(&duck_day1, &store).unwrap();
        let cfg = dropsync_config(
            &work,
            &format!("duck-run{i}"),
            &format!("path = \"{}\"\n", store.display()),
            &drops,
        );
        match checked_sync(&mut ingest(&bin, &cfg, &day2_csv), expected) {
            Ok(m) => on_duck.record(m),
            Err(e) => panic!("day 2 on a DuckDB store: {e}"),
        }
        let _ = std::fs::remove_file(&store);
        let _ = std::fs::remove_file(store.with_extension("duckdb.wal"));
    }

    println!("day 2, {runs} runs (s), interleaved:");
    match &on_pg.failed {
        Some(_) if on_pg.times.is_empty() => {
            println!("  dropsync on postgres:  FAILED (see above): no figure")
        }
        _ => println!("  dropsync on postgres:  {}", secs(&on_pg.times)),
    }
    println!("  copy+merge by hand:    {}", secs(&merge.times));
    println!("  dropsync on duckdb:    {}", secs(&on_duck.times));
    let merge_median = merge.median().unwrap();
    let duck_median = on_duck.median().unwrap();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    match on_pg.median() {
        Some(pg) => println!(
            "day 2 median: dropsync on postgres {:.2} s, copy+merge {:.2} s, dropsync on duckdb {:.2} s; postgres/copy+merge {:.2}x, postgres/duckdb {:.2}x",
            pg.as_secs_f64(),
            merge_median.as_secs_f64(),
            duck_median.as_secs_f64(),
            ratio(pg, merge_median),
            ratio(pg, duck_median)
        ),
        None => println!(
            "day 2 median: dropsync on postgres FAILED, copy+merge {:.2} s, dropsync on duckdb {:.2} s; duckdb/copy+merge {:.2}x",
            merge_median.as_secs_f64(),
            duck_median.as_secs_f64(),
            ratio(duck_median, merge_median)
        ),
    }
    println!(
        "day 2 peak RSS of dropsync: on postgres {}, on duckdb {:.0} MB (the server's memory is its own)",
        if on_pg.times.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0} MB", on_pg.peak_mb)
        },
        on_duck.peak_mb
    );
    println!("load average at the end: {}", load_average());
    drop(cluster);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&drops);
}
