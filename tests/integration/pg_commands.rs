//! Every command on a PostgreSQL store, next to the same on a DuckDB store:
//! `export TABLE [--as-of D]` in each format, `status`, `check`, `show`,
//! `history`, the web console, the daemon and its senders, and the outbox's
//! claims on a store several workers share.

use crate::common::*;

const SCENARIO: &str = r#"
[store]
schemas = "schemas"

[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
max_delete_ratio = 1.0

[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"

[integrations.ledger]
dataset = "ledger"
source = { type = "folder", path = "drops" }
pattern = "ledger_{date:%Y%m%d}.csv"
max_delete_ratio = 1.0
"#;

/// A user-defined dataset with every type a column can have.
const LEDGER_SCHEMA: &str = r#"{
  "fields": [
    {"name": "Entry", "type": "integer"},
    {"name": "Amount", "type": "number"},
    {"name": "Paid", "type": "boolean"},
    {"name": "Booked", "type": "datetime"},
    {"name": "Due", "type": "date"},
    {"name": "At", "type": "time"},
    {"name": "Year", "type": "year"},
    {"name": "Note", "type": "string"}
  ],
  "primaryKey": "Entry",
  "dropsync": {"mode": "snapshot"}
}"#;

const SUBSCRIBERS_HEADER: &str =
    "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";

/// Text a partner's export may hold: quotes, commas, line breaks, formulas,
/// non-ASCII, nothing at all.
const AWKWARD_TEXT: &[&str] = &[
    "Account",
    "=HYPERLINK(\"x\")",
    "@Acme, Inc.",
    "line one\nline two",
    "Zoë's \"quoted\" name",
    "+1 555",
    "",
];

fn csv_cell(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// One day's exports: an accounts snapshot, a subscribers delta and a
/// ledger snapshot.
fn exports(rng: &mut Random) -> [(&'static str, String); 3] {
    let mut accounts = ACCOUNTS_HEADER.to_string();
    for i in 1..=6 {
        if rng.below(4) == 0 {
            continue;
        }
        let plan = ["free", "pro", "enterprise"][rng.below(3)];
        let seats = match rng.below(4) {
            0 => String::new(),
            n => (n * 10).to_string(),
        };
        accounts.push_str(&format!(
            "A{i},,{},parent,{plan},{seats},2020-01-0{i}\n",
            csv_cell(&format!("{} {i}", awkward(rng)))
        ));
    }
    let mut subscribers = SUBSCRIBERS_HEADER.to_string();
    for who in ["ann", "bob", "cy", "dee", "Émile", "zed"] {
        match rng.below(3) {
            0 => {}
            1 => subscribers.push_str(&format!("NEWS,{who}@x.org,subscribed,,,{who},X\n")),
            _ => subscribers.push_str(&format!(
                "NEWS,{who}@x.org,unsubscribed,2026-11-01,moved,{who},{}\n",
                csv_cell(awkward(rng))
            )),
        }
    }
    let mut ledger = "Entry,Amount,Paid,Booked,Due,At,Year,Note\n".to_string();
    for entry in [1, 2, 3, 10, 200] {
        if rng.below(4) == 0 {
            continue;
        }
        let amount = format!("{}.{}", rng.below(100_000), rng.below(100));
        let amount = sometimes_empty(rng, amount);
        let paid = ["true", "false"][rng.below(2)].to_string();
        let paid = sometimes_empty(rng, paid);
        let (d, h, m, sec) = (
            1 + rng.below(9),
            rng.below(10),
            rng.below(10),
            rng.below(10),
        );
        let booked = sometimes_empty(rng, format!("2026-11-0{d}T1{h}:2{m}:3{sec}Z"));
        let (month, day) = (1 + rng.below(9), rng.below(10));
        let due = sometimes_empty(rng, format!("2027-0{month}-1{day}"));
        let hour = rng.below(10);
        let at = sometimes_empty(rng, format!("0{hour}:30:00"));
        let year = 20 + rng.below(10);
        let year = sometimes_empty(rng, format!("20{year}"));
        let note = csv_cell(awkward(rng));
        ledger.push_str(&format!(
            "{entry},{amount},{paid},{booked},{due},{at},{year},{note}\n"
        ));
    }
    [
        ("accounts", accounts),
        ("subscribers", subscribers),
        ("ledger", ledger),
    ]
}

fn day_date(day: usize) -> String {
    format!("2026-11-{day:02}")
}

/// The same drops, in the same order, on a workspace of each store.
fn both_stores(config: &str) -> [StoreWorkspace; 2] {
    [
        workspace_on(StoreKind::DuckDb, config),
        workspace_on(StoreKind::Postgres, config),
    ]
}

/// issue 12: `export TABLE [--as-of D]` on a PostgreSQL store writes the
/// same file, byte for byte, as on a DuckDB store fed the same drops, in
/// every format, now and as of every past date (snapshots applied out of
/// order, forced replays of old dates, late deltas), for every column type.
#[test]
fn export_and_export_as_of_are_the_same_file_on_both_stores() {
    const DAYS: usize = 5;
    let mut rng = Random(0x0012_2026_1126);
    let stores = both_stores(SCENARIO);
    for ws in &stores {
        ws.write("schemas/ledger.json", LEDGER_SCHEMA);
    }
    let mut order: Vec<(usize, bool)> = (1..=DAYS).map(|d| (d, false)).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for _ in 0..3 {
        order.push((1 + rng.below(DAYS), rng.below(2) == 0));
    }
    for &(day, force) in &order {
        let files = exports(&mut rng);
        let date = day_date(day);
        let mut args = vec!["run", "--date", &date];
        if force {
            args.push("--force");
        }
        let mut outputs = Vec::new();
        for ws in &stores {
            for (name, content) in &files {
                ws.drop_file(&format!("{name}_202611{day:02}.csv"), content);
            }
            let out = ws.dropsync(&args);
            assert!(out.code == 0 || out.code == 3, "{out}");
            outputs.push(filter_ids(&out.stdout));
        }
        assert_eq!(outputs[0], outputs[1], "the runs of {date} on both stores");
    }
    for ws in &stores {
        std::fs::create_dir_all(ws.path("out")).unwrap();
    }
    let mut dates: Vec<Option<String>> =
        vec![None, Some("2026-10-31".into()), Some("2030-01-01".into())];
    dates.extend((1..=DAYS).map(|d| Some(day_date(d))));
    for table in ["accounts", "subscribers", "ledger"] {
        let mut distinct = std::collections::HashSet::new();
        for date in &dates {
            // Every date as CSV; now and one past date in each format.
            let formats: &[&str] = match date.as_deref() {
                None | Some("2026-11-03") => &["csv", "json", "parquet"],
                Some(_) => &["csv"],
            };
            for &format in formats {
                let files: Vec<Vec<u8>> = stores
                    .iter()
                    .map(|ws| {
                        let mut args =
                            vec!["export", table, "--format", format, "-o", "out/export"];
                        if let Some(d) = date {
                            args.extend(["--as-of", d]);
                        }
                        ws.dropsync(&args).code(0);
                        std::fs::read(ws.path("out/export")).unwrap()
                    })
                    .collect();
                assert!(
                    files[0] == files[1],
                    "{table} as of {date:?} as {format}:\nDuckDB:\n{}\nPostgreSQL:\n{}",
                    String::from_utf8_lossy(&files[0]),
                    String::from_utf8_lossy(&files[1])
                );
                if format == "csv" {
                    distinct.insert(files[0].clone());
                }
            }
        }
        // The dates differ: the comparison is of states, not of empties.
        assert!(distinct.len() >= 3, "{table}: {} states", distinct.len());
    }
}

/// Run output with its execution ids and timings blanked.
fn filter_ids(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    if w.len() >= 20 && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                        "<id>"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An export file is private to its owner, its CSV text cells never run
/// as formulas, its JSON and Parquet are typed, and a table nothing was
/// synced into is refused: on either store.
fn export_file_is_private_typed_and_free_of_live_formulas(kind: StoreKind) {
    use serde_json::json;
    let ws = workspace_on(kind, &accounts_config(""));
    ws.drop_file(
        "accounts_20260101.csv",
        format!("{ACCOUNTS_HEADER}A1,,=HYPERLINK(\"http://x\"),parent,pro,5,2020-01-01\n"),
    );
    ws.dropsync(&["run"]).code(0);
    ws.dropsync(&["export", "accounts", "-o", "out/accounts.csv"])
        .code(1)
        .stderr_has(&["cannot create a file in out"]);
    std::fs::create_dir_all(ws.path("out")).unwrap();
    ws.dropsync(&["export", "accounts", "-o", "out/accounts.csv"])
        .code(0);
    let csv = std::fs::read_to_string(ws.path("out/accounts.csv")).unwrap();
    assert_eq!(
        csv,
        "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate,_attributes,_integration\n\
         A1,,\"'=HYPERLINK(\"\"http://x\"\")\",parent,pro,5,2020-01-01,,accounts\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.path("out/accounts.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "not readable by others: {mode:o}");
    // Nothing of the rows is left beside the export.
    let left: Vec<_> = std::fs::read_dir(ws.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["accounts.csv"]);
    ws.dropsync(&[
        "export",
        "accounts",
        "--format",
        "json",
        "--as-of",
        "2026-01-01",
        "-o",
        "out/a.json",
    ])
    .code(0);
    let json: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(ws.path("out/a.json"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(json["Seats"], json!(5));
    assert_eq!(json["Name"], json!("=HYPERLINK(\"http://x\")"));
    ws.dropsync(&[
        "export",
        "accounts",
        "--format",
        "parquet",
        "-o",
        "out/a.parquet",
    ])
    .code(0);
    assert!(
        std::fs::read(ws.path("out/a.parquet"))
            .unwrap()
            .starts_with(b"PAR1")
    );
    // To standard output, as of before anything: the header alone.
    ws.dropsync(&["export", "accounts", "--as-of", "2025-12-31"])
        .code(0)
        .stdout_has(&[
            "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate,_attributes,_integration\n",
        ]);
    ws.dropsync(&["export", "nosuch"])
        .code(2)
        .stderr_has(&["no integration", "syncs into a table `nosuch`"]);
    ws.dropsync(&["export", "unsubscribes"])
        .code(0)
        .stdout_has(&["ListID,Email,UnsubscribedDate"]);
}

crate::on_both_stores! {
    export_file_is_private_typed_and_free_of_live_formulas_on => export_file_is_private_typed_and_free_of_live_formulas;
}

fn awkward(rng: &mut Random) -> &'static str {
    AWKWARD_TEXT[rng.below(AWKWARD_TEXT.len())]
}

/// `value`, or one time in five nothing.
fn sometimes_empty(rng: &mut Random, value: String) -> String {
    if rng.below(5) == 0 {
        String::new()
    } else {
        value
    }
}
