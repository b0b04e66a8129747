//! `mykey-replay diff`: compares a replay's scratch schema with the live read model (the
//! schema the runner's registry marks active for the same projection), table by table.
//!
//! Rows are matched by primary key and compared as `to_jsonb(row)` in PostgreSQL, so the
//! comparison streams nothing but the differences; a table without a primary key is matched
//! on whole rows (its differences are then "only in" one side). Exit status: 0 equal, 1
//! different, 2 on errors.

use crate::scratch::{self, ident, pg_err};
use crate::{emit, Outcome, ToolError};
use clap::Args;
use mykey_projections::runner::registry;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use tokio_postgres::GenericClient;

/// Differing rows listed per table by default (all are counted).
pub const DEFAULT_SHOWN: u32 = 20;
/// Most rows listed per table: the counts say the rest.
pub const MAX_SHOWN: u32 = 10_000;

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The database holding both the scratch schema and the live read models.
    #[arg(long)]
    pub database_url: String,
    /// The replay's scratch schema.
    #[arg(long)]
    pub schema: String,
    /// Compare with this schema instead of the projection's active one.
    #[arg(long)]
    pub live_schema: Option<String>,
    /// Differing rows listed per table.
    #[arg(long, default_value_t = DEFAULT_SHOWN, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SHOWN)))]
    pub limit: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowChange {
    OnlyInReplay,
    OnlyInLive,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowDiff {
    pub change: RowChange,
    /// The primary key's columns (the whole row for a table without one).
    pub key: Value,
    pub replay: Option<Value>,
    pub live: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableDiff {
    pub table: String,
    /// Set when the table exists on one side only: `replay` or `live`.
    pub only_in: Option<&'static str>,
    pub only_in_replay: u64,
    pub only_in_live: u64,
    pub changed: u64,
    /// The first differing rows by key, at most `--limit`.
    pub rows: Vec<RowDiff>,
}

impl TableDiff {
    pub fn is_equal(&self) -> bool {
        self.only_in.is_none() && self.only_in_replay + self.only_in_live + self.changed == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffReport {
    pub projection: String,
    pub replay_schema: String,
    pub replay_position: u64,
    pub live_schema: String,
    /// The live schema's checkpoint (None for a `--live-schema` outside the registry).
    pub live_position: Option<u64>,
    pub equal: bool,
    /// Only the tables that differ.
    pub tables: Vec<TableDiff>,
    pub notes: Vec<String>,
}

impl DiffReport {
    pub fn outcome(&self) -> Outcome {
        if self.equal {
            Outcome::Done
        } else {
            Outcome::Failed
        }
    }
}

pub async fn run(args: &DiffArgs, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    let report = diff(args).await?;
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| ToolError::io("stdout", e.into()))?;
        emit(out, text)?;
        return Ok(report.outcome());
    }
    emit(
        out,
        format!(
            "replay {} (position {}) vs live {} (position {})",
            report.replay_schema,
            report.replay_position,
            report.live_schema,
            report
                .live_position
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
        ),
    )?;
    for n in &report.notes {
        emit(out, format!("note: {n}"))?;
    }
    for t in &report.tables {
        match t.only_in {
            Some(side) => emit(out, format!("{}: only in {side}", t.table))?,
            None => emit(
                out,
                format!(
                    "{}: {} only in replay, {} only in live, {} changed",
                    t.table, t.only_in_replay, t.only_in_live, t.changed
                ),
            )?,
        }
        for r in &t.rows {
            let side = |v: &Option<Value>| v.as_ref().map_or("-".to_owned(), Value::to_string);
            let line = match r.change {
                RowChange::OnlyInReplay => format!("  + replay {}", side(&r.replay)),
                RowChange::OnlyInLive => format!("  - live   {}", side(&r.live)),
                RowChange::Changed => format!(
                    "  ~ {}\n      replay {}\n      live   {}",
                    r.key,
                    side(&r.replay),
                    side(&r.live)
                ),
            };
            emit(out, line)?;
        }
    }
    emit(
        out,
        if report.equal {
            "EQUAL: the replay and the live read model hold the same rows"
        } else {
            "DIFFERENT"
        },
    )?;
    Ok(report.outcome())
}

/// Compares without printing.
pub async fn diff(args: &DiffArgs) -> Result<DiffReport, ToolError> {
    scratch::check_name(&args.schema)?;
    let client = scratch::connect(&args.database_url).await?;
    // Read-only: a comparison never writes.
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .map_err(pg_err)?;
    let marker = scratch::marker(&client, &args.schema).await?;
    let (live_schema, live_position) = match &args.live_schema {
        Some(s) => (s.clone(), None),
        None => {
            let row = registry::active(&client, &marker.projection)
                .await
                .map_err(|e| match e.as_db_error() {
                    // No registry: no runner ever ran on this database.
                    Some(d) if d.code().code() == "42P01" => ToolError::Usage(
                        "no live read models in this database (no runner registry): \
                         give --live-schema"
                            .into(),
                    ),
                    _ => pg_err(e),
                })?
                .ok_or_else(|| {
                    ToolError::Usage(format!(
                        "projection {} has no active schema in this database",
                        marker.projection
                    ))
                })?;
            (row.schema, Some(row.position))
        }
    };
    if args.live_schema.is_some() {
        scratch::check_exists(&client, &live_schema).await?;
    }
    if live_schema == args.schema {
        return Err(ToolError::Usage(
            "--live-schema names the replay's own schema".into(),
        ));
    }
    let mut notes = Vec::new();
    if !marker.complete {
        notes.push("the replay did not finish: its tables are partial".into());
    }
    match live_position {
        Some(p) if p != marker.position => notes.push(format!(
            "the live read model is at position {p}, the replay at {}: events in between \
             make differences of their own",
            marker.position
        )),
        _ => {}
    }
    let replay_tables = scratch::tables(&client, &args.schema).await?;
    let live_tables = scratch::tables(&client, &live_schema).await?;
    let mut tables = Vec::new();
    for t in &replay_tables {
        let d = if live_tables.contains(t) {
            table_diff(&client, &args.schema, &live_schema, t, args.limit).await?
        } else {
            missing(t, "replay")
        };
        if !d.is_equal() {
            tables.push(d);
        }
    }
    for t in live_tables.iter().filter(|t| !replay_tables.contains(t)) {
        tables.push(missing(t, "live"));
    }
    Ok(DiffReport {
        projection: marker.projection,
        replay_schema: args.schema.clone(),
        replay_position: marker.position,
        live_schema,
        live_position,
        equal: tables.is_empty(),
        tables,
        notes,
    })
}

fn missing(table: &str, side: &'static str) -> TableDiff {
    TableDiff {
        table: table.to_owned(),
        only_in: Some(side),
        only_in_replay: 0,
        only_in_live: 0,
        changed: 0,
        rows: Vec::new(),
    }
}

/// The primary key's columns of `schema.table`, in key order (empty without one).
async fn key_columns<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, ToolError> {
    client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
               AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&schema, &table],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| r.try_get(0).map_err(pg_err))
        .collect()
}

async fn table_diff<C: GenericClient + Sync>(
    client: &C,
    replay: &str,
    live: &str,
    table: &str,
    limit: u32,
) -> Result<TableDiff, ToolError> {
    let columns = key_columns(client, replay, table).await?;
    let key = if columns.is_empty() {
        "to_jsonb(t)".to_owned()
    } else {
        let pairs: Vec<String> = columns
            .iter()
            .map(|c| format!("'{}', t.{}", c.replace('\'', "''"), ident(c)))
            .collect();
        format!("jsonb_build_object({})", pairs.join(", "))
    };
    let sql = format!(
        "WITH r AS (SELECT {key} AS k, to_jsonb(t) AS v FROM {rs}.{tb} t), \
              l AS (SELECT {key} AS k, to_jsonb(t) AS v FROM {ls}.{tb} t), \
              d AS (SELECT coalesce(r.k, l.k) AS k, r.v AS rv, l.v AS lv \
                    FROM r FULL JOIN l ON r.k = l.k WHERE r.v IS DISTINCT FROM l.v) \
         SELECT k, rv, lv, \
                count(*) FILTER (WHERE lv IS NULL) OVER (), \
                count(*) FILTER (WHERE rv IS NULL) OVER (), \
                count(*) FILTER (WHERE rv IS NOT NULL AND lv IS NOT NULL) OVER () \
         FROM d ORDER BY k LIMIT $1",
        rs = ident(replay),
        ls = ident(live),
        tb = ident(table),
    );
    // One row at least, for the totals.
    let rows = client
        .query(&sql, &[&i64::from(limit.max(1))])
        .await
        .map_err(pg_err)?;
    let mut d = missing(table, "");
    d.only_in = None;
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    for (i, r) in rows.iter().enumerate() {
        if i == 0 {
            d.only_in_replay = count(r.try_get(3).map_err(pg_err)?);
            d.only_in_live = count(r.try_get(4).map_err(pg_err)?);
            d.changed = count(r.try_get(5).map_err(pg_err)?);
        }
        if i >= limit as usize {
            break;
        }
        let rv: Option<Value> = r.try_get(1).map_err(pg_err)?;
        let lv: Option<Value> = r.try_get(2).map_err(pg_err)?;
        let change = match (&rv, &lv) {
            (Some(_), None) => RowChange::OnlyInReplay,
            (None, Some(_)) => RowChange::OnlyInLive,
            _ => RowChange::Changed,
        };
        d.rows.push(RowDiff {
            change,
            key: r.try_get(0).map_err(pg_err)?,
            replay: rv,
            live: lv,
        });
    }
    Ok(d)
}
