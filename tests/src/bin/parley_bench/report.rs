//! Results: a small text table for people and one JSON line for
//! BENCHMARKS.md.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use super::procs::round2;

/// Ordered key/value pairs.
pub type Fields = Vec<(String, Value)>;

/// One scenario's results.
pub struct Report {
    /// `idle`, `direct`, ...
    pub scenario: String,
    /// Settings and overall results.
    pub fields: Fields,
    /// One row per step (rate) where a scenario has several.
    pub rows: Vec<Fields>,
}

/// Adds a field.
pub fn put(fields: &mut Fields, key: &str, value: impl Into<Value>) {
    fields.push((key.to_owned(), value.into()));
}

/// p50 / p95 / p99 / max (and the count) of a histogram of microseconds, as
/// milliseconds, under `prefix`.
pub fn latency_fields(fields: &mut Fields, prefix: &str, h: &Histogram<u64>) {
    let ms = |us: u64| round2(us as f64 / 1000.0);
    if h.is_empty() {
        put(fields, &format!("{prefix}_count"), 0);
        return;
    }
    put(
        fields,
        &format!("{prefix}_p50_ms"),
        ms(h.value_at_quantile(0.50)),
    );
    put(
        fields,
        &format!("{prefix}_p95_ms"),
        ms(h.value_at_quantile(0.95)),
    );
    put(
        fields,
        &format!("{prefix}_p99_ms"),
        ms(h.value_at_quantile(0.99)),
    );
    put(fields, &format!("{prefix}_max_ms"), ms(h.max()));
    put(fields, &format!("{prefix}_count"), h.len());
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

impl Report {
    /// A report with no fields yet.
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            fields: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Prints the table, then the JSON line.
    pub fn print(&self) {
        println!("== parley-bench {} ==", self.scenario);
        let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.fields {
            println!("  {k:<width$}  {}", show(v));
        }
        if !self.rows.is_empty() {
            // A column per key, in first-seen order.
            let mut keys: Vec<&str> = Vec::new();
            for row in &self.rows {
                for (k, _) in row {
                    if !keys.contains(&k.as_str()) {
                        keys.push(k);
                    }
                }
            }
            // Rows as columns would be too wide: one line per key, one
            // column per step.
            let kw = keys.iter().map(|k| k.len()).max().unwrap_or(0);
            let cells: Vec<Vec<String>> = self
                .rows
                .iter()
                .map(|row| {
                    keys.iter()
                        .map(|k| {
                            row.iter()
                                .find(|(rk, _)| rk == k)
                                .map(|(_, v)| show(v))
                                .unwrap_or_else(|| "-".into())
                        })
                        .collect()
                })
                .collect();
            let cw: Vec<usize> = cells
                .iter()
                .map(|c| c.iter().map(String::len).max().unwrap_or(1).max(6))
                .collect();
            println!();
            for (i, k) in keys.iter().enumerate() {
                let mut line = format!("  {k:<kw$}");
                for (c, w) in cells.iter().zip(&cw) {
                    line.push_str(&format!("  {:>w$}", c[i]));
                }
                println!("{line}");
            }
        }
        println!("{}", self.json());
    }

    /// The one-line JSON form.
    pub fn json(&self) -> String {
        let mut obj = Map::new();
        obj.insert("scenario".into(), self.scenario.clone().into());
        for (k, v) in &self.fields {
            obj.insert(k.clone(), v.clone());
        }
        if !self.rows.is_empty() {
            let rows: Vec<Value> = self
                .rows
                .iter()
                .map(|r| Value::Object(r.iter().cloned().collect()))
                .collect();
            obj.insert("steps".into(), rows.into());
        }
        Value::Object(obj).to_string()
    }
}
