//! The report command line: `mykey-server report <daily|weekly|monthly> --date YYYY-MM-DD
//! --format <csv|json|svg>` calls [`run`] and prints what it returns.

use super::{daily, monthly, weekly, Format, Kind, ReportError, Sources};
use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::GenericClient;

/// Parses a `--date` argument (an Asia/Tokyo calendar day).
pub fn parse_date(s: &str) -> Result<NaiveDate, ReportError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| ReportError::BadDate(s.to_owned()))
}

/// Makes the report of `kind` covering `date` and renders it in `format`. `now` bounds a month
/// not yet over.
pub async fn run(
    client: &impl GenericClient,
    sources: &Sources,
    kind: Kind,
    date: NaiveDate,
    format: Format,
    now: DateTime<Utc>,
) -> Result<String, ReportError> {
    let report = match kind {
        Kind::Daily => daily::daily(client, sources, date).await?,
        Kind::Weekly => weekly::weekly(client, sources, date).await?,
        Kind::Monthly => monthly::monthly(client, sources, date, now).await?,
    };
    report.render(format)
}

/// [`run`] from the command line's words: `kind`, `--date` and `--format` as typed.
pub async fn run_args(
    client: &impl GenericClient,
    sources: &Sources,
    kind: &str,
    date: &str,
    format: &str,
    now: DateTime<Utc>,
) -> Result<String, ReportError> {
    run(
        client,
        sources,
        Kind::parse(kind)?,
        parse_date(date)?,
        Format::parse(format)?,
        now,
    )
    .await
}
