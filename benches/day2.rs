//! The day-2 benchmark: an accounts snapshot is applied (day 1), then the
//! next day's export (1% updated, 0.5% deleted, 0.5% inserted) is synced by
//! the real binary: validate + diff + apply + history (day 2).
//!
//! Two workloads, each at every size asked for:
//! - `unquoted`: the 7 schema columns, nothing quoted, LF line ends;
//! - `quoted`: what CRM and BI tools export: every field quoted, CRLF line
//!   ends, the 7 schema columns plus two attribute columns beyond the
//!   schema, commas and non-ASCII letters in names, grouped numbers
//!   ("51,750").
//!
//! Next to dropsync, in the same run and interleaved with it, two peers
//! work on the same file, each in its own process so its peak memory is
//! its own (this bench binary runs itself again as the peer):
//! - `duckdb load`: DuckDB's plain typed load (read_csv into a typed table),
//!   the floor any CSV sync stands on;
//! - `duckdb diff+apply`: the sync a user could write by hand: load into a
//!   temp table, classify by a hash join against the stored table, delete +
//!   insert, in one transaction.
//!
//! Prints, per size and workload, every run, the medians, the ratios, the
//! peak memory (max RSS) of each for the day-1 load and the day-2 sync, and
//! the cost per row, so linearity across sizes shows; then the stage
//! timings of one more day-2 run.
//!
//! `scripts/bench` runs it at 1M rows; `scripts/bench scale` at 1M and 10M.
//! BENCH_ROWS (a comma-separated list of sizes), BENCH_RUNS, BENCH_WORKLOADS
//! (`unquoted,quoted`) and BENCH_DIR (where the files go; a temporary
//! directory by default) change what runs. BENCH_BIN names the dropsync
//! binary to measure (the one cargo built by default). BENCH_COMPARE names
//! another dropsync binary (one built from an earlier commit, say) that
//! syncs the same files interleaved with this one, each from its own day 1,
//! so a change is measured against what it replaces on the same machine,
//! in the same minutes.
//!
//! BENCH_MODE=changelog (`scripts/bench changelog`) measures what the change
//! log costs instead: the day-2 sync with and without it (interleaved), how
//! much a day with changes and a day with none add to the log and the store
//! file, and `export --as-of` of the table against a plain export.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "shared/accounts.rs"]
mod accounts;
use accounts::*;

/// The peers, run as a process of their own (this binary, with DAY2_PEER set).
mod peer {
    use super::Workload;
    use std::path::Path;

    /// `load`: DuckDB's plain typed load of the file into a new table.
    /// `base`: the hand-written day 1: the same load, with a hash of each
    /// row kept for tomorrow's diff. `diff`: the hand-written day 2.
    pub fn main(kind: &str) {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
        let workload = Workload::parse(&var("PEER_WORKLOAD"));
        let csv = std::path::PathBuf::from(var("PEER_CSV"));
        let db = std::path::PathBuf::from(var("PEER_DB"));
        let conn = duckdb::Connection::open(&db).expect("open the peer's database");
        let columns = workload.column_list();
        let read = workload.read_csv(&csv);
        match kind {
            "load" => conn
                .execute_batch(&format!("CREATE TABLE accounts AS SELECT * FROM {read}"))
                .expect("typed load"),
            "base" => conn
                .execute_batch(&format!(
                    "CREATE TABLE accounts AS SELECT *, hash({columns}) AS row_hash FROM {read}"
                ))
                .expect("hand-written day 1"),
            "diff" => diff(&conn, columns, &read, &db),
            other => panic!("unknown peer `{other}`"),
        }
    }

    /// Load into a temp table, classify by a hash join on the key (a row
    /// hash tells changed rows from unchanged), delete + insert, in one
    /// transaction. Prints the counts, so the bench can check them.
    fn diff(conn: &duckdb::Connection, columns: &str, read: &str, _db: &Path) {
        conn.execute_batch(&format!(
            "BEGIN TRANSACTION;
             CREATE TEMP TABLE incoming AS SELECT *, hash({columns}) AS row_hash FROM {read};
             CREATE TEMP TABLE changes AS
               SELECT coalesce(i.AccountID, s.AccountID) AS AccountID,
                      CASE WHEN s.AccountID IS NULL THEN 'insert'
                           WHEN i.AccountID IS NULL THEN 'delete'
                           ELSE 'update' END AS change
               FROM incoming i FULL OUTER JOIN accounts s ON i.AccountID = s.AccountID
               WHERE s.AccountID IS NULL OR i.AccountID IS NULL OR i.row_hash <> s.row_hash;
             DELETE FROM accounts WHERE AccountID IN
               (SELECT AccountID FROM changes WHERE change <> 'insert');
             INSERT INTO accounts SELECT * FROM incoming WHERE AccountID IN
               (SELECT AccountID FROM changes WHERE change <> 'delete');
             COMMIT;"
        ))
        .expect("hand-written diff + apply");
        let mut stmt = conn
            .prepare("SELECT change, count(*) FROM changes GROUP BY change ORDER BY change")
            .unwrap();
        let counts: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (change, n) in counts {
            println!("{change} {n}");
        }
    }
}

/// A dropsync binary being measured: this build, or the one BENCH_COMPARE
/// names.
struct Binary {
    label: String,
    path: PathBuf,
}

/// Every figure of one size and workload.
struct Figures {
    rows: u64,
    workload: Workload,
    day2_mb: f64,
    day1: [Measured; 3],
    sync: Vec<Measured>,
    load: Vec<Measured>,
    diff: Vec<Measured>,
    /// BENCH_COMPARE's binary: its day 1 and its day-2 runs.
    compare: Option<(String, Measured, Vec<Measured>)>,
}

/// The expected day-2 changes of `rows` day-1 rows.
fn expected_changes(rows: u64) -> (u64, u64, u64) {
    (rows / 200, rows / 100, rows / 200)
}

/// The exports of one size and workload, and where they live.
struct Drops {
    dir: PathBuf,
    drops: PathBuf,
    day1: PathBuf,
    day2: PathBuf,
    /// Day 2's rows again, in reverse order: a new file that changes nothing.
    quiet_day: Option<PathBuf>,
    day2_mb: f64,
}

fn make_drops(root: &Path, rows: u64, workload: Workload, with_quiet_day: bool) -> Drops {
    let dir = root.join(format!("{}-{rows}", workload.name()));
    let drops = dir.join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let day1 = accounts(rows, &mut rng);
    let day1_path = drops.join("accounts_20261101.csv");
    let day1_size = write_csv(&day1_path, &day1, workload);
    let mut day2 = next_day(day1, &mut rng);
    let day2_rows = day2.len();
    let day2_path = drops.join("accounts_20261102.csv");
    let day2_size = write_csv(&day2_path, &day2, workload);
    let quiet_day = with_quiet_day.then(|| {
        day2.reverse();
        let path = drops.join("accounts_20261103.csv");
        write_csv(&path, &day2, workload);
        path
    });
    drop(day2);
    println!(
        "\n== {} workload, {rows} rows: day 1 {:.1} MB; day 2 {day2_rows} rows, {:.1} MB ({:.0} bytes a row)",
        workload.name(),
        day1_size as f64 / 1e6,
        day2_size as f64 / 1e6,
        day2_size as f64 / day2_rows as f64
    );
    Drops {
        dir,
        drops,
        day1: day1_path,
        day2: day2_path,
        quiet_day,
        day2_mb: day2_size as f64 / 1e6,
    }
}

/// The config of a store syncing `drops` into `store`.
fn config(drops: &Drops, store: &Path) -> PathBuf {
    let path = store.with_extension("toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = \"{}\"\nstaging = \"{}\"\n\n[integrations.accounts]\ndataset = \"accounts\"\nsource = {{ type = \"folder\", path = \"{}\" }}\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n",
            store.display(),
            drops.dir.join("staging").display(),
            drops.drops.display()
        ),
    )
    .unwrap();
    path
}

/// Empties the staging directory of `drops`' stores. A night's file is new
/// to staging: every timed sync stages its file afresh, as a night does,
/// not over the copy an earlier run left there (which the file system
/// takes for a replacement and writes out at once).
fn clear_staging(drops: &Drops) {
    let _ = std::fs::remove_dir_all(drops.dir.join("staging"));
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

fn remove_db(db: &Path) {
    let _ = std::fs::remove_file(db);
    let _ = std::fs::remove_file(db.with_extension("duckdb.wal"));
    let _ = std::fs::remove_file(db.with_extension("toml"));
}

/// What dropsync's run changed, as its --json output says.
fn changes_of(json: &str) -> (u64, u64, u64) {
    let v: serde_json::Value = serde_json::from_str(json).expect("dropsync --json output");
    let c = &v[0]["changes"];
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("no `{k}` in {json}"))
    };
    (n("inserted"), n("updated"), n("deleted"))
}

/// The stage and apply-step timings a debug log holds, in order:
/// `parse 812 ms, validate 431 ms, ...`.
fn stage_timings(log: &str) -> String {
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        let rest = &line[at..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.split('"').next()?
        } else {
            rest.split_whitespace().next()?
        };
        Some(value.to_string())
    };
    log.lines()
        .filter_map(|line| {
            let what = field(line, "stage")
                .map(|s| format!("[{s}]"))
                .or_else(|| field(line, "step"))?;
            let ms = field(line, "ms")?;
            Some(format!("{what} {ms} ms"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Copies a day-1 store for a timed run, and waits until the copy is on
/// disk: a night's store was not written a moment before its sync, and a
/// copy still being written out makes the sync's first fsync (its commit)
/// wait for all of it (1.5 to 1.8 s at 10M rows, against 70 ms).
fn copy_store(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::File::open(to).unwrap().sync_all().unwrap();
}

/// One more day-2 sync of `bin`, with stage timings in its log.
fn stages_of(bin: &Path, drops: &Drops, base: &Path, name: &str) -> String {
    let store = drops.dir.join(format!("{name}.duckdb"));
    copy_store(base, &store);
    clear_staging(drops);
    let out = ingest(bin, &config(drops, &store), &drops.day2)
        .env("DROPSYNC_LOG", "dropsync=debug")
        .output()
        .unwrap();
    remove_db(&store);
    stage_timings(&String::from_utf8_lossy(&out.stderr))
}

fn bench_one(bins: &[Binary], root: &Path, rows: u64, workload: Workload, runs: usize) -> Figures {
    let drops = make_drops(root, rows, workload, false);
    let dir = drops.dir.clone();
    let peer_bin = std::env::current_exe().unwrap();
    let peer = |kind: &str, csv: &Path, db: &Path| {
        let mut cmd = Command::new(&peer_bin);
        cmd.env("DAY2_PEER", kind)
            .env("PEER_WORKLOAD", workload.name())
            .env("PEER_CSV", csv)
            .env("PEER_DB", db);
        cmd
    };

    // Day 1, once each; every timed day-2 run starts from a copy of these.
    let mut bases = Vec::new();
    let mut day1_syncs = Vec::new();
    for (n, bin) in bins.iter().enumerate() {
        let base = dir.join(format!("day1-{n}.duckdb"));
        let (day1_sync, out) = run_measured(
            &mut ingest(&bin.path, &config(&drops, &base), &drops.day1),
            "day 1 sync",
        );
        assert_eq!(
            changes_of(&out).0,
            rows,
            "day 1 should insert every row: {out}"
        );
        bases.push(base);
        day1_syncs.push(day1_sync);
    }
    let load_db = dir.join("load.duckdb");
    let (day1_load, _) = run_measured(&mut peer("load", &drops.day1, &load_db), "day 1 load");
    remove_db(&load_db);
    let peer_base = dir.join("peer-day1.duckdb");
    let (day1_peer, _) = run_measured(&mut peer("base", &drops.day1, &peer_base), "day 1 peer");

    let expected = expected_changes(rows);
    let mut syncs: Vec<Vec<Measured>> = vec![Vec::new(); bins.len()];
    let mut load = Vec::new();
    let mut diff = Vec::new();
    for i in 0..runs {
        // Interleaved: all of them see the same machine, run after run.
        let (m, _) = run_measured(&mut peer("load", &drops.day2, &load_db), "duckdb load");
        load.push(m);
        remove_db(&load_db);

        for (n, bin) in bins.iter().enumerate() {
            let store = dir.join(format!("run{i}-{n}.duckdb"));
            copy_store(&bases[n], &store);
            clear_staging(&drops);
            let (m, out) = run_measured(
                &mut ingest(&bin.path, &config(&drops, &store), &drops.day2),
                "day 2 sync",
            );
            assert_eq!(changes_of(&out), expected, "{}'s day-2 changes", bin.label);
            syncs[n].push(m);
            remove_db(&store);
        }

        let db = dir.join(format!("peer{i}.duckdb"));
        copy_store(&peer_base, &db);
        let (m, out) = run_measured(&mut peer("diff", &drops.day2, &db), "duckdb diff+apply");
        let count = |change: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(change)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert_eq!(
            (count("insert"), count("update"), count("delete")),
            expected,
            "the hand-written diff's changes"
        );
        diff.push(m);
        remove_db(&db);
    }

    // One more day-2 run each with stage timings in the log, for where
    // time goes.
    let stages: Vec<String> = bins
        .iter()
        .zip(&bases)
        .map(|(bin, base)| stages_of(&bin.path, &drops, base, "stages"))
        .collect();
    let mut syncs = syncs.into_iter();
    let figures = Figures {
        rows,
        workload,
        day2_mb: drops.day2_mb,
        day1: [day1_syncs[0], day1_load, day1_peer],
        sync: syncs.next().unwrap(),
        load,
        diff,
        compare: bins.get(1).map(|bin| {
            (
                bin.label.clone(),
                day1_syncs[1],
                syncs.next().unwrap_or_default(),
            )
        }),
    };
    report(&figures);
    println!("stage timings of one more day-2 sync ([stage], then the apply steps):");
    for (bin, stages) in bins.iter().zip(&stages) {
        println!("  {}: {stages}", bin.label);
    }
    for base in &bases {
        remove_db(base);
    }
    remove_db(&peer_base);
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

/// What the change log costs at one size: the day-2 sync with and without
/// it, what a day with changes and a day without add to the log and to the
/// store file, and `export --as-of` against a plain export.
fn bench_changelog(bin: &Path, root: &Path, rows: u64, workload: Workload, runs: usize) {
    let drops = make_drops(root, rows, workload, true);
    let dir = drops.dir.clone();
    let base = dir.join("day1.duckdb");
    let (_, out) = run_measured(
        &mut ingest(bin, &config(&drops, &base), &drops.day1),
        "day 1 sync",
    );
    assert_eq!(changes_of(&out).0, rows, "day 1 should insert every row");
    let size = |db: &Path| std::fs::metadata(db).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let logged = |db: &Path| -> i64 {
        let conn = duckdb::Connection::open_with_flags(
            db,
            duckdb::Config::default()
                .access_mode(duckdb::AccessMode::ReadOnly)
                .unwrap(),
        )
        .expect("open the store");
        conn.query_row("SELECT count(*) FROM dropsync_changes", [], |r| r.get(0))
            .expect("count the change log")
    };
    let base_mb = size(&base);
    let base_logged = logged(&base);

    let expected = expected_changes(rows);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let (mut with_mb, mut without_mb) = (0.0, 0.0);
    let mut with_logged = 0;
    let kept = dir.join("kept.duckdb");
    for i in 0..runs {
        for logging in [true, false] {
            let store = dir.join(format!("run{i}-{logging}.duckdb"));
            copy_store(&base, &store);
            clear_staging(&drops);
            let mut cmd = ingest(bin, &config(&drops, &store), &drops.day2);
            if !logging {
                cmd.env("DROPSYNC_BENCH_NO_CHANGE_LOG", "1");
            }
            let (m, out) = run_measured(&mut cmd, "day 2 sync");
            assert_eq!(changes_of(&out), expected, "dropsync's day-2 changes");
            if logging {
                with.push(m);
                with_mb = size(&store);
                with_logged = logged(&store);
                let _ = std::fs::remove_file(&kept);
                std::fs::rename(&store, &kept).unwrap();
            } else {
                without.push(m);
                without_mb = size(&store);
            }
            remove_db(&store);
        }
    }
    let (w, wo) = (med(&with), med(&without));
    println!("day 2, {runs} runs (s):");
    println!("  with the change log:     {}", secs(&with));
    println!("  without the change log:  {}", secs(&without));
    println!(
        "day 2 median: with {:.2} s, without {:.2} s: the change log adds {:.2} s ({:+.1}%)",
        w.as_secs_f64(),
        wo.as_secs_f64(),
        w.as_secs_f64() - wo.as_secs_f64(),
        (w.as_secs_f64() / wo.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "  its own step, one more run: {}",
        stages_of(bin, &drops, &base, "stages")
            .split(", ")
            .filter(|s| s.starts_with("log the changes"))
            .collect::<Vec<_>>()
            .join("")
    );

    // Day 3 sends the same rows again (another file, nothing changed).
    let (_, out) = run_measured(
        &mut ingest(
            bin,
            &config(&drops, &kept),
            drops.quiet_day.as_ref().unwrap(),
        ),
        "day 3 sync",
    );
    assert_eq!(changes_of(&out), (0, 0, 0), "day 3 changes nothing");
    let (quiet_mb, quiet_logged) = (size(&kept), logged(&kept));
    println!(
        "change log rows: {base_logged} after day 1 ({rows} inserts); day 2 ({} changes) adds {}; day 3 (no change) adds {}",
        expected.0 + expected.1 + expected.2,
        with_logged - base_logged,
        quiet_logged - with_logged
    );
    println!(
        "store file: {base_mb:.1} MB after day 1; day 2 adds {:.1} MB with the log, {:.1} MB without; day 3 adds {:.1} MB",
        with_mb - base_mb,
        without_mb - base_mb,
        quiet_mb - with_mb
    );

    // The table as of day 1 (walking back day 2's changes) against it now.
    let cfg = config(&drops, &kept);
    let exported = dir.join("export.csv");
    let export = |as_of: Option<&str>| {
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("export")
            .arg("accounts")
            .arg("-o")
            .arg(&exported);
        if let Some(date) = as_of {
            cmd.arg("--as-of").arg(date);
        }
        cmd
    };
    let lines = |path: &Path| {
        std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(path).unwrap())).count()
            as u64
    };
    let (mut plain, mut as_of) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (m, _) = run_measured(&mut export(None), "export");
        plain.push(m);
        assert_eq!(lines(&exported), rows + 1, "the current rows and a header");
        let (m, _) = run_measured(&mut export(Some("2026-11-01")), "export --as-of");
        as_of.push(m);
        assert_eq!(lines(&exported), rows + 1, "day 1's rows and a header");
    }
    let (p, a) = (med(&plain), med(&as_of));
    println!("export of the {rows}-row table, {runs} runs (s):");
    println!("  export:                   {}", secs(&plain));
    println!("  export --as-of day 1:     {}", secs(&as_of));
    println!(
        "export median: plain {:.2} s / {:.0} MB, --as-of {:.2} s / {:.0} MB: {:.2}x (target <= about 2x)",
        p.as_secs_f64(),
        peak(&plain),
        a.as_secs_f64(),
        peak(&as_of),
        a.as_secs_f64() / p.as_secs_f64()
    );

    // The whole change log read back (day 1's inserts and the changes of
    // days 2 and 3), into a file, as a user exports it.
    let listed = dir.join("changes.out");
    let list = |format: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"exec "$0" --config "$1" changes accounts "$2" > "$3""#)
            .arg(bin)
            .arg(&cfg)
            .arg(format)
            .arg(&listed);
        cmd
    };
    let (mut json, mut csv) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        json.push(run_measured(&mut list("--json"), "changes --json").0);
        csv.push(run_measured(&mut list("--csv"), "changes --csv").0);
        assert_eq!(
            lines(&listed),
            quiet_logged as u64 + 1,
            "every change and a header"
        );
    }
    let (j, c) = (med(&json), med(&csv));
    println!("the change log read back ({quiet_logged} changes), {runs} runs (s):");
    println!("  changes --json:           {}", secs(&json));
    println!("  changes --csv:            {}", secs(&csv));
    println!(
        "changes median: --json {:.2} s / {:.0} MB, --csv {:.2} s / {:.0} MB",
        j.as_secs_f64(),
        peak(&json),
        c.as_secs_f64(),
        peak(&csv),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn secs(v: &[Measured]) -> String {
    v.iter()
        .map(|m| format!("{:.2}", m.time.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn med(v: &[Measured]) -> Duration {
    median(v.iter().map(|m| m.time).collect())
}

fn peak(v: &[Measured]) -> f64 {
    v.iter().map(|m| m.mb()).fold(0.0, f64::max)
}

/// Nanoseconds a row.
fn per_row(t: Duration, rows: u64) -> f64 {
    t.as_nanos() as f64 / rows as f64
}

fn report(f: &Figures) {
    let runs = f.sync.len();
    let [d1_sync, d1_load, d1_peer] = f.day1;
    println!(
        "day 1 (once each): dropsync {:.2} s / {:.0} MB peak; duckdb load {:.2} s / {:.0} MB; duckdb hand-written load {:.2} s / {:.0} MB; ratio to load {:.2}x",
        d1_sync.time.as_secs_f64(),
        d1_sync.mb(),
        d1_load.time.as_secs_f64(),
        d1_load.mb(),
        d1_peer.time.as_secs_f64(),
        d1_peer.mb(),
        d1_sync.time.as_secs_f64() / d1_load.time.as_secs_f64()
    );
    if let Some((label, day1, _)) = &f.compare {
        println!(
            "day 1 of {label}: {:.2} s / {:.0} MB peak",
            day1.time.as_secs_f64(),
            day1.mb()
        );
    }
    println!("day 2, {runs} runs (s):");
    println!("  dropsync sync:      {}", secs(&f.sync));
    if let Some((label, _, runs)) = &f.compare {
        println!("  {label}:  {}", secs(runs));
    }
    println!("  duckdb load:        {}", secs(&f.load));
    println!("  duckdb diff+apply:  {}", secs(&f.diff));
    let (sync, load, diff) = (med(&f.sync), med(&f.load), med(&f.diff));
    println!(
        "day 2 median: dropsync {:.2} s, duckdb load {:.2} s, duckdb diff+apply {:.2} s; dropsync/load {:.2}x (target <= 1.0x), dropsync/diff+apply {:.2}x (target < 1.0x)",
        sync.as_secs_f64(),
        load.as_secs_f64(),
        diff.as_secs_f64(),
        sync.as_secs_f64() / load.as_secs_f64(),
        sync.as_secs_f64() / diff.as_secs_f64()
    );
    if let Some((label, _, runs)) = &f.compare {
        let other = med(runs);
        println!(
            "day 2 median of {label}: {:.2} s, {:.0} MB peak; dropsync/{label} {:.2}x, {label}/load {:.2}x",
            other.as_secs_f64(),
            peak(runs),
            sync.as_secs_f64() / other.as_secs_f64(),
            other.as_secs_f64() / load.as_secs_f64()
        );
    }
    println!(
        "day 2 peak RSS: dropsync {:.0} MB, duckdb load {:.0} MB, duckdb diff+apply {:.0} MB (target < 2048 MB)",
        peak(&f.sync),
        peak(&f.load),
        peak(&f.diff)
    );
}

/// The side-by-side table of every size, for linearity.
fn summary(all: &[Figures]) {
    println!("\n== summary (medians; ns a row; peak RSS)");
    println!(
        "{:<9} {:>11} {:>8} | {:>22} {:>22} | {:>22} {:>22} {:>22} | {:>7} {:>7}",
        "workload",
        "rows",
        "day2 MB",
        "day-1 dropsync",
        "day-1 duckdb load",
        "day-2 dropsync",
        "day-2 duckdb load",
        "day-2 duckdb diff",
        "/load",
        "/diff"
    );
    let cell = |t: Duration, rows: u64, mb: f64| {
        format!(
            "{:.2}s {:.0}ns {:.0}MB",
            t.as_secs_f64(),
            per_row(t, rows),
            mb
        )
    };
    for f in all {
        let (sync, load, diff) = (med(&f.sync), med(&f.load), med(&f.diff));
        println!(
            "{:<9} {:>11} {:>8.0} | {:>22} {:>22} | {:>22} {:>22} {:>22} | {:>6.2}x {:>6.2}x",
            f.workload.name(),
            f.rows,
            f.day2_mb,
            cell(f.day1[0].time, f.rows, f.day1[0].mb()),
            cell(f.day1[1].time, f.rows, f.day1[1].mb()),
            cell(sync, f.rows, peak(&f.sync)),
            cell(load, f.rows, peak(&f.load)),
            cell(diff, f.rows, peak(&f.diff)),
            sync.as_secs_f64() / load.as_secs_f64(),
            sync.as_secs_f64() / diff.as_secs_f64()
        );
        if let Some((label, _, runs)) = &f.compare {
            let other = med(runs);
            println!(
                "{:<9} {:>11} {:>8} | {:>22} {:>22} | {:>22} {:>22} {:>22} | {:>6.2}x {:>6}",
                "",
                "",
                "",
                "",
                "",
                format!("{label}: {}", cell(other, f.rows, peak(runs))),
                "",
                "",
                other.as_secs_f64() / load.as_secs_f64(),
                ""
            );
        }
    }
}

fn main() {
    if let Ok(kind) = std::env::var("DAY2_PEER") {
        peer::main(&kind);
        return;
    }
    let sizes: Vec<u64> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .expect("BENCH_ROWS: row counts, comma-separated")
        })
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mode = std::env::var("BENCH_MODE");
    let changelog = match mode.as_deref() {
        Ok("changelog") => true,
        Ok("day2") | Ok("files") | Err(_) => false,
        Ok(other) => panic!("unknown BENCH_MODE `{other}` (day2, changelog, files)"),
    };
    let workloads: Vec<Workload> = std::env::var("BENCH_WORKLOADS")
        .unwrap_or_else(|_| {
            if changelog {
                "unquoted".into()
            } else {
                "unquoted,quoted".into()
            }
        })
        .split(',')
        .map(|s| Workload::parse(s.trim()))
        .collect();
    // BENCH_BIN: a dropsync built elsewhere (a release build in a shared
    // target directory, say) instead of the one cargo built with this bench.
    let bin = std::env::var_os("BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dropsync")));
    assert!(bin.is_file(), "no dropsync binary at {}", bin.display());
    let mut bins = vec![Binary {
        label: "dropsync".into(),
        path: bin,
    }];
    if let Some(other) = std::env::var_os("BENCH_COMPARE") {
        let path = PathBuf::from(other);
        assert!(path.is_file(), "BENCH_COMPARE: no file {}", path.display());
        bins.push(Binary {
            label: format!("compared ({})", path.display()),
            path,
        });
    }
    // BENCH_DIR: big files go where there is room for them (a 10M-row
    // export is 1.2 GB, and each day's store about as much again).
    let temp;
    let root = match std::env::var_os("BENCH_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            PathBuf::from(dir)
        }
        None => {
            temp = tempfile::tempdir().expect("temp dir");
            temp.path().to_path_buf()
        }
    };
    // BENCH_MODE=files: only write the exports, and keep them (for a
    // profiler, or a run by hand).
    if mode.as_deref() == Ok("files") {
        assert!(
            std::env::var_os("BENCH_DIR").is_some(),
            "BENCH_MODE=files keeps its files in BENCH_DIR: set it"
        );
        for &rows in &sizes {
            for &workload in &workloads {
                let drops = make_drops(&root, rows, workload, false);
                println!("{}", drops.drops.display());
            }
        }
        return;
    }
    if changelog {
        for &rows in &sizes {
            for &workload in &workloads {
                bench_changelog(&bins[0].path, &root, rows, workload, runs);
            }
        }
        return;
    }
    let mut all = Vec::new();
    for &rows in &sizes {
        for &workload in &workloads {
            all.push(bench_one(&bins, &root, rows, workload, runs));
        }
    }
    summary(&all);
}
