//! Writes the demo's xlsx drop, `samples/drops/partners/
//! workspan_results_20261102.xlsx`: a WorkSpan-style partner pipeline
//! report, a summary sheet first and the data on the `Pipeline` sheet, with
//! one row whose value is a spreadsheet error. The same cells always make
//! the same bytes, so the committed file is what this writes:
//!
//! ```sh
//! cargo run --example make_samples
//! ```

#[path = "../tests/integration/xlsx_writer.rs"]
mod xlsx_writer;

use xlsx_writer::{Cell, date, text, workbook};

fn main() -> std::io::Result<()> {
    let summary = vec![
        vec![text("WorkSpan co-sell pipeline report")],
        vec![text("Generated for: dropsync demo")],
    ];
    let header = [
        "Opportunity ID",
        "Reporting Period",
        "Pipeline Value",
        "Deals Won",
        "Win Rate",
        "Close Date",
        "Stage",
    ];
    let mut pipeline = vec![header.iter().map(|h| text(h)).collect::<Vec<_>>()];
    let rows: [(&str, Cell, f64, &str, &str, &str); 4] = [
        (
            "WS-OPP-101",
            Cell::Number(125_000.0),
            3.0,
            "42%",
            "2026-12-15",
            "Commit",
        ),
        (
            "WS-OPP-102",
            Cell::Number(48_000.5),
            1.0,
            "25%",
            "2027-01-31",
            "Best case",
        ),
        // A broken lookup in the partner's workbook: rejected, naming the field.
        (
            "WS-OPP-103",
            Cell::Error("#REF!"),
            0.0,
            "0%",
            "2026-11-20",
            "Pipeline",
        ),
        (
            "WS-OPP-104",
            Cell::Number(9_900.0),
            2.0,
            "66.7%",
            "2026-11-28",
            "Closed won",
        ),
    ];
    for (id, value, won, rate, close, stage) in rows {
        pipeline.push(vec![
            text(id),
            date("2026-11-01"),
            value,
            Cell::Number(won),
            text(rate),
            date(close),
            text(stage),
        ]);
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/samples/drops/partners/workspan_results_20261102.xlsx"
    );
    std::fs::write(
        path,
        workbook(&[("Summary", summary), ("Pipeline", pipeline)]),
    )?;
    println!("wrote {path}");
    Ok(())
}
