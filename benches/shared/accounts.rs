//! What the day-2 benches share: the accounts exports they sync (a 1M-row
//! snapshot, then the next day's with 1% updated, 0.5% deleted and 0.5%
//! inserted), generated the same way every time, and how a measured
//! process is timed (wall time and peak resident memory).
//!
//! Included by benches/day2.rs and benches/pg.rs with `#[path]`: a file
//! under a subdirectory of benches/ is no bench target of its own.

#![allow(dead_code)]

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
pub const REGIONS: [&str; 5] = ["EMEA", "NA", "LATAM", "APAC", "Nordics"];
/// Names with a comma (quoted for it) and letters beyond ASCII.
pub const NAME_STEMS: [&str; 6] = [
    "Müller, Schmidt & Co.",
    "Ålborg Øst A/S",
    "Société Générale, Lyon",
    "Zürich Versicherung",
    "Łódź Tech, sp. z o.o.",
    "ACME, Inc.",
];
pub const OWNERS: [&str; 4] = ["Zoë Ortega", "José Núñez", "Chloé Dubois", "Sam O'Neil"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    Unquoted,
    Quoted,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Unquoted => "unquoted",
            Workload::Quoted => "quoted",
        }
    }

    pub fn parse(s: &str) -> Workload {
        match s {
            "unquoted" => Workload::Unquoted,
            "quoted" => Workload::Quoted,
            other => panic!("unknown workload `{other}` (unquoted, quoted)"),
        }
    }

    /// The columns DuckDB reads the file with, typed as the schema types them.
    pub fn duckdb_columns(self) -> &'static str {
        match self {
            Workload::Unquoted => {
                "{'AccountID': 'VARCHAR', 'ParentID': 'VARCHAR', 'Name': 'VARCHAR', 'Type': 'VARCHAR', 'Plan': 'VARCHAR', 'Seats': 'BIGINT', 'CreatedDate': 'DATE'}"
            }
            Workload::Quoted => {
                "{'AccountID': 'VARCHAR', 'ParentID': 'VARCHAR', 'Name': 'VARCHAR', 'Type': 'VARCHAR', 'Plan': 'VARCHAR', 'Seats': 'BIGINT', 'CreatedDate': 'DATE', 'Region': 'VARCHAR', 'Owner': 'VARCHAR'}"
            }
        }
    }

    /// `read_csv(...)` of a file of this workload, typed.
    pub fn read_csv(self, path: &Path) -> String {
        let dialect = match self {
            Workload::Unquoted => "",
            // Grouped numbers: "51,750" is 51750.
            Workload::Quoted => ", quote = '\"', thousands = ','",
        };
        format!(
            "read_csv('{}', header = true, delim = ',', columns = {}{dialect}, parallel = true)",
            path.display(),
            self.duckdb_columns()
        )
    }

    pub fn column_list(self) -> &'static str {
        match self {
            Workload::Unquoted => "AccountID, ParentID, Name, Type, Plan, Seats, CreatedDate",
            Workload::Quoted => {
                "AccountID, ParentID, Name, Type, Plan, Seats, CreatedDate, Region, Owner"
            }
        }
    }
}

/// A small deterministic generator, so every run benchmarks the same files.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub struct Account {
    pub id: u64,
    pub parent: Option<u64>,
    pub seats: u64,
    pub plan: u8,
    pub day: u16,
}

pub fn accounts(rows: u64, rng: &mut Rng) -> Vec<Account> {
    (0..rows)
        .map(|id| {
            // One account in ten is a parent; products hang under the
            // nearest parent before them.
            let parent = (!id.is_multiple_of(10)).then_some(id - id % 10);
            Account {
                id,
                parent,
                // Up to 99,999 seats: most quoted values carry a group comma.
                seats: rng.below(100_000),
                plan: rng.below(4) as u8,
                day: rng.below(3000) as u16,
            }
        })
        .collect()
}

/// "51750" as "51,750".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn write_csv(path: &Path, rows: &[Account], workload: Workload) -> u64 {
    let mut out = BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).expect("create bench file"),
    );
    let epoch = chrono::NaiveDate::from_ymd_opt(2017, 1, 1).unwrap();
    match workload {
        Workload::Unquoted => {
            writeln!(out, "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate").unwrap()
        }
        Workload::Quoted => write!(
            out,
            "\"AccountID\",\"ParentID\",\"Name\",\"Type\",\"Plan\",\"Seats\",\"CreatedDate\",\"Region\",\"Owner\"\r\n"
        )
        .unwrap(),
    }
    for a in rows {
        let parent = a.parent.map(|p| format!("ACC{p:08}")).unwrap_or_default();
        let kind = if a.parent.is_some() {
            "product"
        } else {
            "parent"
        };
        let created = epoch + chrono::Days::new(a.day as u64);
        let plan = PLANS[a.plan as usize];
        match workload {
            Workload::Unquoted => writeln!(
                out,
                "ACC{:08},{parent},Account {:08} Group,{kind},{plan},{},{created}",
                a.id, a.id, a.seats
            ),
            Workload::Quoted => write!(
                out,
                "\"ACC{:08}\",\"{parent}\",\"{} {:08}\",\"{kind}\",\"{plan}\",\"{}\",\"{created}\",\"{}\",\"{}\"\r\n",
                a.id,
                NAME_STEMS[(a.id % 6) as usize],
                a.id,
                grouped(a.seats),
                REGIONS[(a.id % 5) as usize],
                OWNERS[(a.id % 4) as usize],
            ),
        }
        .unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Day 2: 1% of rows updated, 0.5% deleted (products only, so no parent
/// goes missing), 0.5% inserted.
pub fn next_day(mut rows: Vec<Account>, rng: &mut Rng) -> Vec<Account> {
    let n = rows.len() as u64;
    let mut deleted = vec![false; rows.len()];
    let mut to_delete = n / 200;
    while to_delete > 0 {
        let i = rng.below(n) as usize;
        if rows[i].parent.is_some() && !deleted[i] {
            deleted[i] = true;
            to_delete -= 1;
        }
    }
    let mut updated = vec![false; rows.len()];
    let mut to_update = n / 100;
    while to_update > 0 {
        let i = rng.below(n) as usize;
        if !deleted[i] && !updated[i] {
            updated[i] = true;
            rows[i].seats += 1 + rng.below(50);
            to_update -= 1;
        }
    }
    let mut kept: Vec<Account> = rows
        .into_iter()
        .zip(deleted)
        .filter(|(_, d)| !d)
        .map(|(a, _)| a)
        .collect();
    for k in 0..n / 200 {
        let id = n + k;
        kept.push(Account {
            id,
            parent: Some(rng.below(n / 10) * 10),
            seats: rng.below(100_000),
            plan: rng.below(4) as u8,
            day: rng.below(3000) as u16,
        });
    }
    kept
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One measured process: wall time and peak resident memory.
#[derive(Clone, Copy)]
pub struct Measured {
    pub time: Duration,
    pub peak_kib: i64,
}

impl Measured {
    pub fn mb(self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// Runs a command, returning its wall time, peak resident memory and what
/// it printed on stdout; panics if it fails.
pub fn run_measured(cmd: &mut Command, what: &str) -> (Measured, String) {
    try_run_measured(cmd).unwrap_or_else(|e| panic!("{what} failed ({e})"))
}

/// `run_measured`, telling a failure (its exit status, stdout and the end
/// of its stderr) instead of panicking: a bench can report what does not
/// work yet and go on with the rest.
// The child is reaped by wait4 rather than Child::wait, to read its rusage.
#[allow(clippy::zombie_processes)]
pub fn try_run_measured(cmd: &mut Command) -> Result<(Measured, String), String> {
    use std::io::Read;
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    // Read on a thread of its own, so neither pipe can fill and stall the
    // child while the other is read.
    let mut err_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child; `usage` is a valid out-pointer.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let time = start.elapsed();
    let stderr = stderr.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let status = std::process::ExitStatus::from_raw(status);
    if !status.success() {
        let mut told = vec![status.to_string()];
        told.extend(
            [stdout.trim(), stderr.trim()]
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(|t| {
                    // The end of a long output says why.
                    let lines: Vec<&str> = t.lines().collect();
                    lines[lines.len().saturating_sub(5)..].join("\n  ")
                }),
        );
        return Err(told.join("\n  "));
    }
    Ok((
        Measured {
            time,
            peak_kib: usage.ru_maxrss,
        },
        stdout,
    ))
}
