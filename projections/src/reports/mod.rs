//! Reports from the read models: the daily citizen-card report, the weekly point-program report
//! and the monthly operations report — each as CSV (one header row), JSON and an SVG bar chart.
//!
//! Day boundaries are Asia/Tokyo calendar days (a fixed +09:00: Japan has no daylight saving
//! time), as everywhere on the read side ([`crate::models::tokyo_day`]). A week runs Monday to
//! Sunday; a month is the calendar month, both in Asia/Tokyo.
//!
//! Every report has the same long shape — rows of `(metric, key, detail, value)` — so one CSV
//! header, one JSON layout and one chart serve all three.

pub mod chart;
pub mod cli;
pub mod daily;
pub mod health;
pub mod monthly;
pub mod weekly;

use crate::models::QueryError;
use chrono::NaiveDate;
use serde::Serialize;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// PPIDs issued per RP, logins per RP and outcome — one Asia/Tokyo day.
    Daily,
    /// Applications by program and status, points approved / granted / owed back — Monday to
    /// Sunday.
    Weekly,
    /// Availability, incidents, patches applied, CRL freshness — one calendar month.
    Monthly,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, ReportError> {
        match s {
            "daily" => Ok(Kind::Daily),
            "weekly" => Ok(Kind::Weekly),
            "monthly" => Ok(Kind::Monthly),
            other => Err(ReportError::UnknownKind(other.to_owned())),
        }
    }
}

/// How a report is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/csv; header=present`.
    Csv,
    /// `application/json`.
    Json,
    /// `image/svg+xml`.
    Svg,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, ReportError> {
        match s {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "svg" => Ok(Format::Svg),
            other => Err(ReportError::UnknownFormat(other.to_owned())),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; header=present",
            Format::Json => "application/json",
            Format::Svg => "image/svg+xml",
        }
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("unknown report {0:?} (daily, weekly or monthly)")]
    UnknownKind(String),
    #[error("unknown format {0:?} (csv, json or svg)")]
    UnknownFormat(String),
    #[error("{0:?} is not a date (YYYY-MM-DD)")]
    BadDate(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("cannot render the report: {0}")]
    Render(String),
}

impl ReportError {
    /// Stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            ReportError::UnknownKind(_) => "UNKNOWN_REPORT",
            ReportError::UnknownFormat(_) => "UNKNOWN_REPORT_FORMAT",
            ReportError::BadDate(_) => "INVALID_DATE",
            ReportError::Query(e) => e.code(),
            ReportError::Render(_) => "REPORT_RENDER_FAILED",
        }
    }
}

impl From<tokio_postgres::Error> for ReportError {
    fn from(e: tokio_postgres::Error) -> ReportError {
        ReportError::Query(QueryError::Db(e))
    }
}

/// A figure: a count, or a ratio (availability, in percent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Count(i64),
    Percent(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            // Counts in a report are far below 2^53.
            Value::Count(n) => n as f64,
            Value::Percent(p) => p,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Percent(p) => write!(f, "{p:.3}"),
        }
    }
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What is counted (e.g. `ppids_issued`, `logins`, `applications`, `availability`).
    pub metric: String,
    /// Relying party, program, CA, or empty.
    pub key: String,
    /// Outcome, status, or empty.
    pub detail: String,
    pub value: Value,
}

impl Row {
    pub fn new(metric: &str, key: &str, detail: &str, value: Value) -> Row {
        Row {
            metric: metric.to_owned(),
            key: key.to_owned(),
            detail: detail.to_owned(),
            value,
        }
    }
}

/// A report: what it covers and its rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub kind: Kind,
    pub title: String,
    /// First Asia/Tokyo day covered.
    pub from: NaiveDate,
    /// Last Asia/Tokyo day covered (inclusive).
    pub to: NaiveDate,
    /// Always `Asia/Tokyo` (fixed +09:00).
    pub time_zone: &'static str,
    pub rows: Vec<Row>,
}

pub const TIME_ZONE: &str = "Asia/Tokyo";

/// Header of every report's CSV.
pub const CSV_HEADER: [&str; 6] = ["from", "to", "metric", "key", "detail", "value"];

impl Report {
    /// The sum of a metric's values (counts only), e.g. for totals.
    pub fn total(&self, metric: &str) -> i64 {
        self.rows
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| match r.value {
                Value::Count(n) => n,
                Value::Percent(_) => 0,
            })
            .sum()
    }

    pub fn to_csv(&self) -> Result<String, ReportError> {
        let render = |e: csv::Error| ReportError::Render(e.to_string());
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_HEADER).map_err(render)?;
        let (from, to) = (self.from.to_string(), self.to.to_string());
        for r in &self.rows {
            w.write_record([
                from.as_str(),
                to.as_str(),
                &r.metric,
                &r.key,
                &r.detail,
                &r.value.to_string(),
            ])
            .map_err(render)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| ReportError::Render(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| ReportError::Render(e.to_string()))
    }

    pub fn to_json(&self) -> Result<String, ReportError> {
        serde_json::to_string_pretty(self).map_err(|e| ReportError::Render(e.to_string()))
    }

    pub fn to_svg(&self) -> Result<String, ReportError> {
        chart::bar_chart(self)
    }

    pub fn render(&self, format: Format) -> Result<String, ReportError> {
        match format {
            Format::Csv => self.to_csv(),
            Format::Json => self.to_json(),
            Format::Svg => self.to_svg(),
        }
    }
}

/// The schemas the reports read, as the runner serves them now (its registry's active
/// schema per projection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The `daily_counters` projection's schema.
    pub counters: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            kind: Kind::Daily,
            title: "t".into(),
            from: NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
            time_zone: TIME_ZONE,
            rows: vec![
                Row::new("ppids_issued", "city-1", "", Value::Count(3)),
                Row::new("pin_logins", "rp,with \"comma\"", "OK", Value::Count(2)),
                Row::new("availability", "", "percent", Value::Percent(99.5)),
            ],
        }
    }

    #[test]
    fn csv_has_one_header_and_quotes_what_needs_it() {
        let csv = sample().to_csv().unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "from,to,metric,key,detail,value");
        assert_eq!(
            lines[2],
            "2026-11-30,2026-11-30,pin_logins,\"rp,with \"\"comma\"\"\",OK,2"
        );
        assert_eq!(
            lines[3],
            "2026-11-30,2026-11-30,availability,,percent,99.500"
        );
        assert_eq!(sample().total("ppids_issued"), 3);
    }

    #[test]
    fn json_keeps_counts_as_integers() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        assert_eq!(json["rows"][0]["value"], serde_json::json!(3));
        assert_eq!(json["kind"], "daily");
        assert_eq!(json["time_zone"], "Asia/Tokyo");
    }

    #[test]
    fn the_chart_names_its_axes_and_escapes_labels() {
        let svg = sample().to_svg().unwrap();
        let (x, y) = chart::axis_names(Kind::Daily);
        assert!(svg.contains(x) && svg.contains(y));
        assert!(svg.contains("city-1"));
        assert!(
            !svg.contains("\"comma\""),
            "a label's quotes must be escaped"
        );
    }

    #[test]
    fn kinds_and_formats_parse_or_are_refused() {
        assert_eq!(Kind::parse("weekly").unwrap(), Kind::Weekly);
        assert_eq!(Kind::parse("hourly").unwrap_err().code(), "UNKNOWN_REPORT");
        assert_eq!(
            Format::parse("svg").unwrap().content_type(),
            "image/svg+xml"
        );
        assert_eq!(
            Format::parse("png").unwrap_err().code(),
            "UNKNOWN_REPORT_FORMAT"
        );
    }
}
