//! `cargo xtask bench [suite]`: runs bench binaries and collects what they report.
//!
//! A suite `s` is the bench target `s` of the package listed for it in [`SUITES`]
//! (`cargo bench -p <package> --bench <s>`, a `harness = false` binary). Besides its own output, the binary
//! prints one line per measurement and, optionally, targets:
//!
//! ```text
//! BENCH {"metric":"avro.encode.typed_ns","value":123.4,"unit":"ns","baseline":"avro.encode.apache_value_ns"}
//! TARGET {"metric":"avro.encode.typed_ns","op":"<=","value":300}
//! ```
//!
//! `baseline` (optional) names another metric of the same run; the table then shows
//! `ratio = value / baseline value`. A `TARGET` compares a metric's value with `op` (`<`, `<=`, `>`, `>=`, `==`);
//! with `"of":"ratio"` it compares the ratio instead. Missed targets are shown in the table, not turned into a
//! failing exit code. Each suite's results go to `target/deimos-bench/<suite>.json` as an array of
//! `{"metric","value","unit","baseline","ratio"}`, where `baseline` is the baseline's value (or null).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::metadata::{self, Metadata};

/// Bench suites and the package holding each suite's bench target of the same name.
const SUITES: &[(&str, &str)] = &[
    ("avro", "deimos-avro"),
    ("kafka", "deimos-integration-tests"),
    ("outbox", "deimos-outbox-diesel"),
    ("records", "deimos-records-diesel"),
];

/// A `BENCH` line.
#[derive(Debug, Clone, Deserialize)]
struct Measurement {
    metric: String,
    value: f64,
    unit: String,
    #[serde(default)]
    baseline: Option<String>,
}

/// A `TARGET` line.
#[derive(Debug, Clone, Deserialize)]
struct Target {
    metric: String,
    op: String,
    value: f64,
    /// `"value"` (default) or `"ratio"`.
    #[serde(default)]
    of: Option<String>,
}

/// One row of `target/deimos-bench/<suite>.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Row {
    metric: String,
    value: f64,
    unit: String,
    /// The baseline metric's value.
    baseline: Option<f64>,
    ratio: Option<f64>,
}

/// What one suite run reported.
#[derive(Debug, Default)]
struct Report {
    measurements: Vec<Measurement>,
    targets: Vec<Target>,
}

impl Report {
    /// Handles one stdout line of the bench binary: returns `false` if the line is not protocol and should be
    /// passed through.
    fn take_line(&mut self, line: &str) -> bool {
        if let Some(json) = line.strip_prefix("BENCH ") {
            match serde_json::from_str(json) {
                Ok(measurement) => self.measurements.push(measurement),
                Err(err) => eprintln!("xtask bench: ignoring malformed BENCH line ({err}): {line}"),
            }
            true
        } else if let Some(json) = line.strip_prefix("TARGET ") {
            match serde_json::from_str(json) {
                Ok(target) => self.targets.push(target),
                Err(err) => {
                    eprintln!("xtask bench: ignoring malformed TARGET line ({err}): {line}")
                }
            }
            true
        } else {
            false
        }
    }

    /// The rows with baseline values and ratios filled in (a later line for the same metric wins).
    fn rows(&self) -> Vec<Row> {
        let mut latest: BTreeMap<&str, &Measurement> = BTreeMap::new();
        let mut order = Vec::new();
        for measurement in &self.measurements {
            if latest.insert(&measurement.metric, measurement).is_none() {
                order.push(measurement.metric.as_str());
            }
        }
        order
            .into_iter()
            .filter_map(|metric| latest.get(metric).copied())
            .map(|measurement| {
                let baseline = measurement.baseline.as_deref().and_then(|name| {
                    let found = latest.get(name).map(|base| base.value);
                    if found.is_none() {
                        eprintln!(
                            "xtask bench: `{}` names baseline `{name}`, which the run did not report",
                            measurement.metric
                        );
                    }
                    found
                });
                let ratio = baseline
                    .filter(|base| *base != 0.0)
                    .map(|base| measurement.value / base);
                Row {
                    metric: measurement.metric.clone(),
                    value: measurement.value,
                    unit: measurement.unit.clone(),
                    baseline,
                    ratio,
                }
            })
            .collect()
    }
}

/// `cargo xtask bench [suite]`.
pub(crate) fn run(root: &Path, suite: Option<&str>) -> Result<()> {
    let suites: Vec<(&str, &str)> = match suite {
        Some(name) => match SUITES.iter().find(|(suite, _)| *suite == name) {
            Some(entry) => vec![*entry],
            None => {
                let known: Vec<&str> = SUITES.iter().map(|(suite, _)| *suite).collect();
                bail!("unknown bench suite `{name}`; known suites: {}", known.join(", "));
            }
        },
        None => SUITES.to_vec(),
    };
    let metadata = metadata::load(root)?;
    let out_dir = metadata.target_directory.join("deimos-bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("could not create {}", out_dir.display()))?;

    let mut table = Vec::new();
    for (suite, package) in suites {
        let features = check_bench_target(&metadata, suite, package)?;
        let report = run_suite(root, suite, package, &features)?;
        if report.measurements.is_empty() {
            bail!("bench suite `{suite}` printed no `BENCH {{...}}` lines");
        }
        let rows = report.rows();
        let path = out_dir.join(format!("{suite}.json"));
        let json = serde_json::to_string_pretty(&rows)?;
        std::fs::write(&path, json + "\n").with_context(|| format!("could not write {}", path.display()))?;
        println!("xtask bench: wrote {}", path.display());
        table.extend(table_rows(&report, &rows));
    }
    print_table(&table);
    Ok(())
}

/// The suite's bench target must exist; returns the features it requires (turned on to run it).
fn check_bench_target(metadata: &Metadata, suite: &str, package: &str) -> Result<Vec<String>> {
    let Some(found) = metadata.packages.iter().find(|p| p.name == package) else {
        bail!("bench suite `{suite}` belongs to `{package}`, which is not in the workspace");
    };
    let target = found
        .targets
        .iter()
        .find(|target| target.name == suite && target.kind.iter().any(|kind| kind == "bench"));
    let Some(target) = target else {
        bail!(
            "`{package}` has no bench target `{suite}` yet: add benches/{suite}.rs and a `[[bench]]` with `name = \"{suite}\"`, `harness = false` to {}",
            found.manifest_path.display()
        );
    };
    Ok(target.required_features.clone())
}

fn run_suite(root: &Path, suite: &str, package: &str, features: &[String]) -> Result<Report> {
    let mut command = crate::cargo(root);
    command.args(["bench", "-p", package, "--bench", suite]);
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    command.stdout(Stdio::piped());
    let shown = crate::describe(&command);
    println!("xtask bench: {shown}");
    let mut child = command.spawn().with_context(|| format!("could not start `{shown}`"))?;
    let mut report = Report::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("could not read the output of `{shown}`"))?;
            if !report.take_line(&line) {
                println!("{line}");
            }
        }
    }
    let status = child.wait().with_context(|| format!("`{shown}` did not finish"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(report)
}

/// metric | value | unit | baseline | ratio | target | met?
type TableRow = [String; 7];

fn table_rows(report: &Report, rows: &[Row]) -> Vec<TableRow> {
    let mut out = Vec::new();
    for row in rows {
        let baseline_name = report
            .measurements
            .iter()
            .rev()
            .find(|m| m.metric == row.metric)
            .and_then(|m| m.baseline.clone())
            .unwrap_or_default();
        let targets: Vec<&Target> = report.targets.iter().filter(|t| t.metric == row.metric).collect();
        let mut target_text = Vec::new();
        let mut met_text = Vec::new();
        for target in &targets {
            let on_ratio = target.of.as_deref() == Some("ratio");
            target_text.push(format!(
                "{}{} {}",
                if on_ratio { "ratio " } else { "" },
                target.op,
                format_number(target.value)
            ));
            let actual = if on_ratio { row.ratio } else { Some(row.value) };
            met_text.push(match actual.map(|actual| compare(actual, &target.op, target.value)) {
                Some(Some(true)) => "yes".to_string(),
                Some(Some(false)) => "MISSED".to_string(),
                Some(None) => format!("bad op `{}`", target.op),
                None => "no ratio".to_string(),
            });
        }
        out.push([
            row.metric.clone(),
            format_number(row.value),
            row.unit.clone(),
            baseline_name,
            row.ratio.map(|ratio| format!("{ratio:.3}")).unwrap_or_default(),
            target_text.join(", "),
            met_text.join(", "),
        ]);
    }
    for target in &report.targets {
        if !rows.iter().any(|row| row.metric == target.metric) {
            out.push([
                target.metric.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("{} {}", target.op, format_number(target.value)),
                "MISSED (not reported)".to_string(),
            ]);
        }
    }
    out
}

fn compare(actual: f64, op: &str, wanted: f64) -> Option<bool> {
    Some(match op {
        "<" => actual < wanted,
        "<=" => actual <= wanted,
        ">" => actual > wanted,
        ">=" => actual >= wanted,
        "==" => (actual - wanted).abs() <= f64::EPSILON * actual.abs().max(wanted.abs()),
        _ => return None,
    })
}

fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

fn print_table(rows: &[TableRow]) {
    println!();
    print!("{}", render_table(rows));
    let missed = rows.iter().filter(|row| row[6].contains("MISSED")).count();
    if missed > 0 {
        println!("\n{missed} metric(s) missed a target (reported only; the exit code stays 0)");
    }
}

fn render_table(rows: &[TableRow]) -> String {
    const HEADER: [&str; 7] = ["metric", "value", "unit", "baseline", "ratio", "target", "met?"];
    /// Columns with numbers, right-aligned.
    const NUMERIC: [bool; 7] = [false, true, false, false, true, false, false];
    let mut widths = HEADER.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .zip(NUMERIC)
            .map(|((cell, width), numeric)| {
                if numeric {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        parts.join(" | ").trim_end().to_string() + "\n"
    };
    let mut out = line(HEADER);
    out.push_str(&widths.map(|width| "-".repeat(width)).join("-|-"));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[&str]) -> Report {
        let mut report = Report::default();
        for line in lines {
            assert!(report.take_line(line), "not protocol: {line}");
        }
        report
    }

    #[test]
    fn ratio_divides_by_the_baseline_value() {
        let report = report(&[
            r#"BENCH {"metric":"avro.encode.apache_value_ns","value":400.0,"unit":"ns"}"#,
            r#"BENCH {"metric":"avro.encode.typed_ns","value":100.0,"unit":"ns","baseline":"avro.encode.apache_value_ns"}"#,
        ]);
        let rows = report.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].baseline, None);
        assert_eq!(rows[0].ratio, None);
        assert_eq!(rows[1].baseline, Some(400.0));
        assert_eq!(rows[1].ratio, Some(0.25));
        let json = serde_json::to_value(&rows).map_err(|err| err.to_string());
        assert_eq!(
            json,
            Ok(serde_json::json!([
                {"metric": "avro.encode.apache_value_ns", "value": 400.0, "unit": "ns", "baseline": null, "ratio": null},
                {"metric": "avro.encode.typed_ns", "value": 100.0, "unit": "ns", "baseline": 400.0, "ratio": 0.25},
            ]))
        );
    }

    #[test]
    fn targets_are_checked_and_misses_shown() {
        let report = report(&[
            r#"BENCH {"metric":"a_ns","value":250,"unit":"ns"}"#,
            r#"BENCH {"metric":"b_ns","value":500,"unit":"ns","baseline":"a_ns"}"#,
            r#"TARGET {"metric":"a_ns","op":"<=","value":300}"#,
            r#"TARGET {"metric":"b_ns","op":"<=","value":1.5,"of":"ratio"}"#,
            r#"TARGET {"metric":"c_ns","op":"<","value":1}"#,
        ]);
        let table = table_rows(&report, &report.rows());
        let met: Vec<&str> = table.iter().map(|row| row[6].as_str()).collect();
        assert_eq!(met, vec!["yes", "MISSED", "MISSED (not reported)"]);
        assert_eq!(table[1][4], "2.000");
        let rendered = render_table(&table);
        let expected = "\
metric | value | unit | baseline | ratio | target        | met?
-------|-------|------|----------|-------|---------------|----------------------
a_ns   |   250 | ns   |          |       | <= 300        | yes
b_ns   |   500 | ns   | a_ns     | 2.000 | ratio <= 1.50 | MISSED
c_ns   |       |      |          |       | < 1           | MISSED (not reported)
";
        assert_eq!(rendered, expected, "\n{rendered}");
    }

    #[test]
    fn other_output_passes_through() {
        let mut report = Report::default();
        assert!(!report.take_line("warming up avro encode..."));
        assert!(report.take_line("BENCH {not json"));
        assert!(report.measurements.is_empty());
    }

    #[test]
    fn every_suite_is_listed_once() {
        let mut names: Vec<&str> = SUITES.iter().map(|(suite, _)| *suite).collect();
        names.dedup();
        assert_eq!(names.len(), SUITES.len());
    }
}
