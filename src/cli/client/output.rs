//! How the client prints: the API's JSON untouched with `--output json`, otherwise aligned
//! tables and `key: value` blocks, coloured only on a terminal and never under `NO_COLOR`.

use std::io::IsTerminal;

use serde_json::Value;

/// `--output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables and sentences for people.
    #[default]
    Table,
    /// Exactly the API's JSON.
    Json,
}

/// How a command shows its answer, decided once per command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ui {
    pub output: Output,
    pub paint: Paint,
    /// Standard output is a terminal: live progress is drawn rather than written line by line.
    pub terminal: bool,
}

impl Ui {
    pub fn new(output: Output) -> Ui {
        Ui {
            output,
            paint: Paint::for_stdout(),
            terminal: std::io::stdout().is_terminal(),
        }
    }
}

/// Colours on or off, decided once per command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paint {
    pub enabled: bool,
}

/// Colours only when standard output is a terminal and `NO_COLOR` is unset or empty
/// (no-color.org).
pub fn colours_wanted(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

impl Paint {
    pub fn for_stdout() -> Paint {
        let no_color = std::env::var("NO_COLOR").ok();
        Paint {
            enabled: colours_wanted(std::io::stdout().is_terminal(), no_color.as_deref()),
        }
    }

    fn wrap(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }

    pub fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }

    pub fn yellow(self, text: &str) -> String {
        self.wrap("33", text)
    }

    pub fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }

    pub fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }

    /// A deployment or configuration status in the colour an operator expects.
    pub fn status(self, status: &str) -> String {
        match status {
            "Completed" | "Approved" => self.green(status),
            "RolledBack" | "Failed" | "Rejected" => self.red(status),
            "Paused" | "AwaitingApproval" | "Draft" => self.yellow(status),
            _ => status.to_string(),
        }
    }
}

/// Prints a JSON answer as the API gave it.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Columns separated by two spaces, each as wide as its widest cell; no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let n_columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(n_columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    for row in rows {
        let mut cells: Vec<&str> = row.iter().map(String::as_str).take(n_columns).collect();
        cells.resize(n_columns, "");
        out.push(line(cells));
    }
    out.join("\n")
}

/// `key: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| {
            let pad = width - key.chars().count();
            format!("{key}:{}  {value}", " ".repeat(pad))
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string field, or `-`.
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        _ => "-".to_string(),
    }
}

/// "12s ago", "3m ago", "2h ago", "4d ago" for an RFC 3339 time; `-` when absent.
pub fn age(value: Option<&Value>, now: time::OffsetDateTime) -> String {
    let Some(at) = value.and_then(Value::as_str).and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return "-".to_string();
    };
    let seconds = (now - at).whole_seconds();
    if seconds < 0 {
        return "just now".to_string();
    }
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86_400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

/// The clock time (`HH:MM:SS`) of an RFC 3339 timestamp, in UTC; the text itself otherwise.
pub fn clock(value: Option<&Value>) -> String {
    let Some(text) = value.and_then(Value::as_str) else {
        return "--:--:--".to_string();
    };
    match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        Ok(at) => {
            let at = at.to_offset(time::UtcOffset::UTC);
            format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
        }
        Err(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_every_column_and_end_without_blanks() {
        let rendered = table(
            &["NAME", "VERSION", "STATUS"],
            &[
                vec!["static".into(), "1.0.0".into(), "Approved".into()],
                vec!["a-much-longer-name".into(), "12.3.4".into(), "".into()],
            ],
        );
        assert_eq!(
            rendered,
            "NAME                VERSION  STATUS\n\
             static              1.0.0    Approved\n\
             a-much-longer-name  12.3.4"
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours_wanted(true, None));
        assert!(colours_wanted(true, Some("")));
        assert!(!colours_wanted(true, Some("1")));
        assert!(!colours_wanted(false, None));
        let plain = Paint { enabled: false };
        assert_eq!(plain.red("x"), "x");
        let coloured = Paint { enabled: true };
        assert_eq!(coloured.red("x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn ages_and_clocks_read_rfc3339() {
        let now = time::macros::datetime!(2026-01-01 12:00:00 UTC);
        let at = |text: &str| json!(text);
        assert_eq!(age(Some(&at("2026-01-01T11:59:50Z")), now), "10s ago");
        assert_eq!(age(Some(&at("2026-01-01T11:55:00Z")), now), "5m ago");
        assert_eq!(age(Some(&at("2025-12-30T12:00:00Z")), now), "2d ago");
        assert_eq!(age(None, now), "-");
        assert_eq!(clock(Some(&at("2026-01-01T11:59:50.123Z"))), "11:59:50");
    }

    #[test]
    fn fields_align_their_values() {
        assert_eq!(
            fields(&[("id", "x".into()), ("status", "Draft".into())]),
            "id:      x\nstatus:  Draft"
        );
    }
}
