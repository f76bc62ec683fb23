//! Output: aligned tables for people (fitted to the terminal, numbers with
//! units), one JSON document or TSV for scripts.

use std::io::Write;

use comfy_table::presets::UTF8_HORIZONTAL_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

use crate::cli::Format;
use crate::error::{CliError, Exit};

/// Where output goes, and how.
pub struct Out<'a> {
    /// Standard output.
    pub w: &'a mut dyn Write,
    /// The format.
    pub format: Format,
    /// Standard output is a terminal (tables fit its width).
    pub tty: bool,
}

fn io(e: std::io::Error) -> CliError {
    CliError::new(Exit::Failure, format!("cannot write output: {e}"))
}

/// The value at a dotted path.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A byte count for people: 1.2 MiB.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A count for people: 1,234,567.
pub fn count(n: f64) -> String {
    let s = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 { format!("-{out}") } else { out }
}

/// A cell for people: bytes and rates get units, counts separators.
fn human(column: &str, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0);
            if column.ends_with(".rate") || column.ends_with("_rate") {
                format!("{f:.1}/s")
            } else if column.contains("bytes") || column.ends_with("_oct") || column == "memory" {
                bytes(f)
            } else if n.is_f64() {
                format!("{f:.2}")
            } else {
                count(f)
            }
        }
        Some(other) => other.to_string(),
    }
}

fn plain(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.replace(['\t', '\n'], " "),
        Some(other) => other.to_string(),
    }
}

/// Keeps only `columns` of an item (dotted paths nest).
pub fn project(item: &Value, columns: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for c in columns {
        if let Some(v) = at(item, c) {
            out.insert(c.clone(), v.clone());
        }
    }
    Value::Object(out)
}

impl Out<'_> {
    /// Rows of `items` with `columns`: a table, a JSON array of the items
    /// (projected to the columns when `project_json`), or TSV.
    pub fn rows(
        &mut self,
        items: &[Value],
        columns: &[String],
        project_json: bool,
    ) -> Result<(), CliError> {
        match self.format {
            Format::Json => {
                let doc: Vec<Value> = if project_json {
                    items.iter().map(|i| project(i, columns)).collect()
                } else {
                    items.to_vec()
                };
                self.json(&Value::Array(doc))
            }
            Format::Tsv => {
                writeln!(self.w, "{}", columns.join("\t")).map_err(io)?;
                for i in items {
                    let cells: Vec<String> = columns.iter().map(|c| plain(at(i, c))).collect();
                    writeln!(self.w, "{}", cells.join("\t")).map_err(io)?;
                }
                Ok(())
            }
            Format::Table => {
                let mut t = Table::new();
                t.load_preset(UTF8_HORIZONTAL_ONLY);
                t.set_content_arrangement(if self.tty {
                    ContentArrangement::Dynamic
                } else {
                    ContentArrangement::Disabled
                });
                t.set_header(columns.iter().map(String::as_str));
                for i in items {
                    t.add_row(columns.iter().map(|c| human(c, at(i, c))));
                }
                writeln!(self.w, "{t}").map_err(io)
            }
        }
    }

    /// One object: a two-column table, JSON, or TSV key/value lines.
    pub fn object(&mut self, v: &Value, keys: &[(&str, &str)]) -> Result<(), CliError> {
        match self.format {
            Format::Json => self.json(v),
            Format::Tsv => {
                for (label, path) in keys {
                    writeln!(self.w, "{label}\t{}", plain(at(v, path))).map_err(io)?;
                }
                Ok(())
            }
            Format::Table => {
                let mut t = Table::new();
                t.load_preset(UTF8_HORIZONTAL_ONLY);
                for (label, path) in keys {
                    t.add_row(vec![label.to_string(), human(path, at(v, path))]);
                }
                writeln!(self.w, "{t}").map_err(io)
            }
        }
    }

    /// A JSON document, pretty-printed.
    pub fn json(&mut self, v: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(v)
            .map_err(|e| CliError::new(Exit::Failure, e.to_string()))?;
        writeln!(self.w, "{text}").map_err(io)
    }

    /// A line for people (not printed in JSON and TSV formats, which stay
    /// machine-readable).
    pub fn note(&mut self, line: &str) -> Result<(), CliError> {
        if self.format == Format::Table {
            writeln!(self.w, "{line}").map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_for_people() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(count(12.0), "12");
        assert_eq!(
            human(
                "message_stats.publish_details.rate",
                Some(&serde_json::json!(2.5))
            ),
            "2.5/s"
        );
    }
}
