//! A PostgreSQL store: `[store] url` with its password from a file or the
//! environment, against a real throwaway cluster (common::pg_cluster), and
//! the behaviour that must be the same on either store.

use crate::common::*;

/// `check` on a store nobody answers at: UNKNOWN, naming the store (never
/// its password) and why.
#[test]
fn check_reports_a_postgres_store_it_cannot_reach() {
    let port = crate::servers::free_port();
    let ws = Workspace::new(&format!(
        "[store]\nurl = \"postgres://sync@127.0.0.1:{port}/dropsync\"\npassword_env = \"PG_SECRET\"\nsslmode = \"disable\"\n\n{}",
        accounts_config("")
    ));
    let out = ws.dropsync_env(&["check"], &[("PG_SECRET", "s3cret-value")]);
    out.code(3).stdout_has(&[
        "UNKNOWN",
        &format!("cannot reach the PostgreSQL store postgres://sync@127.0.0.1:{port}/dropsync"),
    ]);
    assert!(
        !out.stdout.contains("s3cret-value") && !out.stderr.contains("s3cret-value"),
        "{out}"
    );
}

/// A wrong password is the server's refusal, told as such; the password
/// itself appears nowhere.
#[test]
fn a_wrong_postgres_password_is_refused_without_being_shown() {
    let db = PgDatabase::new();
    let ws = Workspace::new(&format!(
        "[store]\nurl = \"{}\"\npassword_env = \"PG_SECRET\"\nsslmode = \"prefer\"\n\n{}",
        db.url(),
        accounts_config("")
    ));
    let out = ws.dropsync_env(&["check"], &[("PG_SECRET", "not-the-password")]);
    out.code(3)
        .stdout_has(&["UNKNOWN", "password authentication failed", &db.url()]);
    assert!(!format!("{out}").contains("not-the-password"), "{out}");

    let out = ws.dropsync(&["check"]);
    out.code(3)
        .stdout_has(&["password_env PG_SECRET is not set"]);
}

/// A password in the URL is refused when the config is read, shown masked.
#[test]
fn a_password_in_the_store_url_is_refused_and_masked() {
    let ws = Workspace::new(&format!(
        "[store]\nurl = \"postgres://sync:hunter2@db.example/dropsync\"\n\n{}",
        accounts_config("")
    ));
    let out = ws.dropsync(&["run"]);
    assert_ne!(out.code, 0, "{out}");
    out.stderr_has(&["postgres://sync:***@db.example/dropsync", "password_env"]);
    assert!(!format!("{out}").contains("hunter2"), "{out}");
}

/// The right password (SCRAM over TCP) logs in, and a run on a PostgreSQL
/// store applies its file and records itself there, as on DuckDB.
#[test]
fn a_run_on_a_postgres_store_applies_and_records_it() {
    let ws = workspace_on(StoreKind::Postgres, &accounts_config(""));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["success", "+6 ~0 -0"]);
    ws.dropsync(&["history"]).code(0).stdout_has(&["success"]);
    let mut client = ws.pg.as_ref().unwrap().client();
    let runs: i64 = client
        .query_one(
            "SELECT count(*) FROM dropsync_runs WHERE status = 'success'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    let accounts: i64 = client
        .query_one("SELECT count(*) FROM accounts", &[])
        .unwrap()
        .get(0);
    assert_eq!(accounts, 6);
    ws.dropsync(&["export", "accounts"])
        .code(0)
        .stdout_has(&["AccountID,ParentID"]);
}

/// The store's own tables are the same on both: one list of migrations,
/// run by each (the second opening of a PostgreSQL store finds them done).
#[test]
fn the_migrations_make_the_same_tables_on_both_stores() {
    let columns = "SELECT table_name || '.' || column_name FROM information_schema.columns
                   WHERE table_name LIKE 'dropsync%' ORDER BY 1";
    let duck = workspace_on(StoreKind::DuckDb, &accounts_config(""));
    duck.drop_file("accounts_20260101.csv", six_accounts());
    duck.dropsync(&["run"]).code(0);
    let duck_columns: Vec<String> = duck
        .db()
        .rows(columns)
        .into_iter()
        .map(|r| r[0].clone())
        .collect();

    let pg = workspace_on(StoreKind::Postgres, &accounts_config(""));
    for _ in 0..2 {
        pg.dropsync(&["run"]).code(0);
    }
    let pg_columns: Vec<String> = pg
        .pg
        .as_ref()
        .unwrap()
        .client()
        .query(columns, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!duck_columns.is_empty());
    assert_eq!(pg_columns, duck_columns);
}

/// `validate` checks a file against its dataset without the store, on
/// either store alike.
fn validate_reads_no_store(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    let file = ws.write("a.csv", six_accounts()).display().to_string();
    ws.dropsync(&["validate", "--dataset", "accounts", &file])
        .code(0)
        .stdout_has(&["6 rows, 6 valid, 0 rejected"]);
}

crate::on_both_stores! {
    validate_needs_no_store_on_either => validate_reads_no_store;
}

/// `verify-full` logs in over TLS when the server's certificate chains to
/// `sslrootcert` and names the host, and refuses one signed by another CA
/// with an error that says so; `require` encrypts without verifying.
#[test]
fn verify_full_checks_the_server_certificate() {
    let db = PgDatabase::new();
    let config = |tls: &str| {
        format!(
            "[store]\nurl = \"{}\"\npassword_file = \"pg.pass\"\n{tls}\n\n{}",
            db.url(),
            accounts_config("")
        )
    };
    let trusted = Workspace::new(&config(&format!(
        "sslmode = \"verify-full\"\nsslrootcert = \"{}\"",
        pg_cluster().ca_file().display()
    )));
    trusted.write("pg.pass", &pg_cluster().password);
    // Logged in: the check reads the store.
    let out = trusted.dropsync(&["check"]);
    assert!(!out.stdout.contains("cannot reach"), "{out}");

    let stranger = Workspace::new(&config(
        "sslmode = \"verify-full\"\nsslrootcert = \"other-ca.pem\"",
    ));
    make_ca(&stranger.root, "other-ca");
    stranger.write("pg.pass", &pg_cluster().password);
    let out = stranger.dropsync(&["check"]);
    out.code(3)
        .stdout_has(&["cannot reach the PostgreSQL store", "certificate"]);
    assert!(!out.stdout.contains(&pg_cluster().password), "{out}");

    let unverified = Workspace::new(&config("sslmode = \"require\""));
    unverified.write("pg.pass", &pg_cluster().password);
    let out = unverified.dropsync(&["check"]);
    assert!(!out.stdout.contains("cannot reach"), "{out}");
}

/// A second day's snapshot is diffed inside PostgreSQL: one update, one
/// delete, one insert, counted and applied as on DuckDB, and each changed
/// row found again by its place (not duplicated, not left behind).
#[test]
fn a_second_snapshot_is_diffed_and_applied_inside_postgres() {
    let ws = workspace_on(StoreKind::Postgres, &accounts_config(""));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    let day2 = six_accounts()
        .replace("Account 2,", "Account Two,")
        .replace("A6,,Account 6,parent,pro,60,2020-01-06\n", "")
        + "A7,,Account 7,parent,pro,70,2020-01-07\n";
    ws.drop_file("accounts_20260102.csv", day2);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["success", "+1 ~1 -1"]);
    let mut client = ws.pg.as_ref().unwrap().client();
    let rows: Vec<(String, String)> = client
        .query(
            "SELECT \"AccountID\", \"Name\" FROM accounts ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = [1, 2, 3, 4, 5, 7]
        .iter()
        .map(|i| {
            let name = if *i == 2 {
                "Account Two".to_string()
            } else {
                format!("Account {i}")
            };
            (format!("A{i}"), name)
        })
        .collect();
    assert_eq!(rows, expected);
}

/// The server's notices stay in the server: a day-2 sync logged at info
/// level (as a daemon logs) says nothing of temporary tables it dropped, and
/// a server in another zone changes no time the store keeps.
#[test]
fn a_sync_logs_no_server_notices_and_keeps_utc_times() {
    let ws = workspace_on(StoreKind::Postgres, &accounts_config(""));
    let database = &ws.pg.as_ref().unwrap().name;
    ws.alter_store(&format!(
        "ALTER DATABASE {database} SET timezone = 'America/New_York'"
    ));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.drop_file(
        "accounts_20260102.csv",
        six_accounts().replace("Account 2,", "Account Two,"),
    );
    let before = chrono::Utc::now().naive_utc();
    let out = ws.dropsync(&["-v", "run"]);
    out.code(0);
    assert!(
        !out.stderr.contains("NOTICE") && !out.stderr.contains("skipping"),
        "{out}"
    );
    let started = ws
        .db()
        .value("SELECT CAST(max(started_at) AS VARCHAR) FROM dropsync_runs");
    let started = chrono::NaiveDateTime::parse_from_str(&started, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    assert!(
        (started - before).num_minutes().abs() < 10,
        "started_at {started} is not UTC (now {before})"
    );
}
