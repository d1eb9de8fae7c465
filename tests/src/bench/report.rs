//! Tables on stdout, `<scenario>.json`, and `<scenario>.png` drawn by `tests/bench/plot.py`
//! from the JSON's `plot` object.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

/// A plain text table.
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self { title: title.into(), headers: headers.iter().map(|h| h.to_string()).collect(), rows: vec![] }
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let width = |i: usize| {
            self.rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).chain([self.headers[i].len()]).max()
        };
        let widths: Vec<usize> = (0..columns).map(|i| width(i).unwrap_or(0)).collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                // First column left-aligned (names), the rest right-aligned (figures).
                if i == 0 {
                    let _ = write!(out, "{cell:<w$}");
                } else {
                    let _ = write!(out, "  {cell:>w$}");
                }
            }
            out.trim_end().to_string()
        };
        let mut out = format!("{}\n{}\n", self.title, line(&self.headers));
        let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out
    }
}

/// `x` with `digits` decimals.
pub fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// Writes `<dir>/<name>.json`, pretty-printed.
pub fn write_json(dir: &Path, name: &str, value: &Value) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Draws `<name>.png` next to the JSON with `python tests/bench/plot.py`.
pub fn plot(python: &Path, json: &Path) -> Result<PathBuf> {
    let script = silo_testenv::repo_dir().join("tests/bench/plot.py");
    let png = json.with_extension("png");
    let out = Command::new(python)
        .arg(&script)
        .arg(json)
        .arg(&png)
        .output()
        .with_context(|| format!("run {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            python.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(png)
}

/// A series for the plot: `points` are (x, y); `style` is "step", "line" or "dashed";
/// `axis` "left" or "right".
pub fn series(label: &str, points: &[[f64; 2]], style: &str, axis: &str) -> Value {
    json!({"label": label, "points": points, "style": style, "axis": axis})
}

/// A vertical marker on the plot.
pub fn vline(x: f64, label: &str) -> Value {
    json!({"x": x, "label": label})
}
