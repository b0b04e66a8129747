//! Versioned schema migrations, embedded in the binary and applied at connect.
//!
//! **New migrations are added to [`MIGRATIONS`] below, and nowhere else.** Files live in
//! `store/migrations/NNNN_name.sql`; the event log owns 0001–0099, login/audit tables start at
//! 0100. A migration, once applied anywhere, is never edited: its SHA-256 is recorded in
//! `schema_migrations`, and a changed file makes [`migrate`] fail rather than silently
//! diverge from what production ran. Fix a mistake with a new migration.
//!
//! **Each migration grants what `mykey_runtime` needs on the tables it creates** (and nothing
//! more: append-only tables get SELECT and INSERT only). Migrations run as the owner role
//! (`MYKEY_OWNER_DATABASE_URL`); the server connects as a login role in the NOLOGIN group
//! `mykey_runtime` (created by 0003), which owns nothing and so cannot alter, disable or drop
//! a trigger. A table without grants is invisible to the server.
//!
//! Two servers starting at once are safe: everything runs in one transaction that first takes
//! a transaction-scoped advisory lock, so the second waits, then sees the first one's rows and
//! applies nothing. DDL is transactional in PostgreSQL, so a failing migration leaves nothing
//! half-applied.

use crate::StoreError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokio_postgres::Client;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing; equals the `NNNN` prefix of the file name.
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Add new ones at the end.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_events",
        sql: include_str!("../../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "0002_append_only",
        sql: include_str!("../../migrations/0002_append_only.sql"),
    },
    Migration {
        version: 3,
        name: "0003_runtime_role",
        sql: include_str!("../../migrations/0003_runtime_role.sql"),
    },
    // 0100+: login/audit tables, owned by the login crate (login/src/db.rs).
    Migration {
        version: 100,
        name: "0100_auth",
        sql: include_str!("../../migrations/0100_auth.sql"),
    },
    Migration {
        version: 101,
        name: "0101_auth_hardening",
        sql: include_str!("../../migrations/0101_auth_hardening.sql"),
    },
    Migration {
        version: 110,
        name: "0110_auth_runtime_grants",
        sql: include_str!("../../migrations/0110_auth_runtime_grants.sql"),
    },
    Migration {
        version: 111,
        name: "0111_auth_hardening_grants",
        sql: include_str!("../../migrations/0111_auth_hardening_grants.sql"),
    },
    // 0200-0209: signed checkpoints, owned by api/src/audit.
    Migration {
        version: 200,
        name: "0200_audit_checkpoints",
        sql: include_str!("../../migrations/0200_audit_checkpoints.sql"),
    },
    // 0300–0309: the Kafka relay, owned by projections/src/kafka.
    Migration {
        version: 300,
        name: "0300_relay_position",
        sql: include_str!("../../migrations/0300_relay_position.sql"),
    },
    // 0400–0409: the HTTP doors' shared layer (api/src/http).
    Migration {
        version: 400,
        name: "0400_doors_core",
        sql: include_str!("../../migrations/0400_doors_core.sql"),
    },
    // 0500–0509: operations data for the reports (projections::reports::health).
    Migration {
        version: 500,
        name: "0500_ops_health_probe",
        sql: include_str!("../../migrations/0500_ops_health_probe.sql"),
    },
];

/// Advisory lock key (transaction scope) serialising migration runs across servers. Distinct
/// from the append lock so a long migration never looks like a stuck writer.
pub const MIGRATION_LOCK_KEY: i64 = 0x6d79_6b65_795f_6d67; // "mykey_mg"

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run, in order.
    pub applied: Vec<i32>,
    /// Versions found in the database that this binary does not know (a newer binary ran).
    pub unknown: Vec<i32>,
}

pub fn checksum(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

/// Checks that [`MIGRATIONS`] is well formed (strictly increasing versions matching names).
pub fn check_registry(migrations: &[Migration]) -> Result<(), String> {
    let mut last = 0;
    for m in migrations {
        if m.version <= last {
            return Err(format!(
                "migration {} is out of order (after version {last})",
                m.name
            ));
        }
        if !m.name.starts_with(&format!("{:04}_", m.version)) {
            return Err(format!(
                "migration {} does not start with its version {:04}",
                m.name, m.version
            ));
        }
        last = m.version;
    }
    Ok(())
}

/// Applies every migration in [`MIGRATIONS`] not yet applied.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, StoreError> {
    migrate_with(client, MIGRATIONS).await
}

/// The report of a run that has nothing to do, read without DDL or locks: the runtime role
/// (which may not create or alter anything) connects through here once the owner migrated.
/// `None` when anything is pending, changed or unreadable: the full run then applies it or
/// says what is wrong.
async fn already_applied(client: &Client, migrations: &[Migration]) -> Option<MigrationReport> {
    let exists = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .ok()?
        .try_get::<_, bool>(0)
        .ok()?;
    if !exists {
        return None;
    }
    let rows = client
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await
        .ok()?;
    let mut applied: HashMap<i32, Vec<u8>> = HashMap::new();
    for r in rows {
        applied.insert(r.try_get(0).ok()?, r.try_get(1).ok()?);
    }
    for m in migrations {
        if applied.remove(&m.version)? != checksum(m.sql) {
            return None;
        }
    }
    let mut unknown: Vec<i32> = applied.into_keys().collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "database has migrations this binary does not know"
        );
    }
    Some(MigrationReport {
        applied: Vec::new(),
        unknown,
    })
}

/// Connects with `config` (the owner role's) and applies pending migrations: the start-up step
/// before the server connects as the runtime role.
pub async fn migrate_database(
    config: &tokio_postgres::Config,
) -> Result<MigrationReport, StoreError> {
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "migration: connect as the owner role: {}",
            super::describe(&e)
        ))
    })?;
    let conn = tokio::spawn(connection);
    let report = migrate(&mut client).await;
    drop(client);
    let _ = conn.await;
    report
}

/// [`migrate`] over an explicit list (tests use it to simulate an edited file).
pub async fn migrate_with(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, StoreError> {
    check_registry(migrations).map_err(StoreError::Unavailable)?;
    let err = |what: &str, e: tokio_postgres::Error| {
        StoreError::Unavailable(format!("migration: {what}: {}", super::describe(&e)))
    };
    if let Some(report) = already_applied(client, migrations).await {
        return Ok(report);
    }
    let tx = client.transaction().await.map_err(|e| err("begin", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|e| err("lock", e))?;
    // The runner's own bookkeeping table is the one thing created idempotently: it must exist
    // before the runner can know what has been applied. It is created under the lock.
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer     PRIMARY KEY,
            name       text        NOT NULL,
            checksum   bytea       NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(|e| err("create schema_migrations", e))?;
    let rows = tx
        .query("SELECT version, name, checksum FROM schema_migrations", &[])
        .await
        .map_err(|e| err("read schema_migrations", e))?;
    let mut applied: HashMap<i32, (String, Vec<u8>)> = HashMap::new();
    for r in rows {
        let version: i32 = r.try_get(0).map_err(|e| err("decode", e))?;
        let name: String = r.try_get(1).map_err(|e| err("decode", e))?;
        let sum: Vec<u8> = r.try_get(2).map_err(|e| err("decode", e))?;
        applied.insert(version, (name, sum));
    }
    let mut report = MigrationReport {
        applied: Vec::new(),
        unknown: Vec::new(),
    };
    for m in migrations {
        let sum = checksum(m.sql);
        match applied.remove(&m.version) {
            Some((name, stored)) => {
                if stored != sum {
                    return Err(StoreError::Unavailable(format!(
                        "migration {} was changed after it was applied (as {name}): \
                         add a new migration instead of editing an applied one",
                        m.name
                    )));
                }
            }
            None => {
                tx.batch_execute(m.sql).await.map_err(|e| err(m.name, e))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &sum],
                )
                .await
                .map_err(|e| err("record", e))?;
                report.applied.push(m.version);
            }
        }
    }
    report.unknown = applied.into_keys().collect();
    report.unknown.sort_unstable();
    tx.commit().await.map_err(|e| err("commit", e))?;
    if !report.applied.is_empty() {
        tracing::info!(applied = ?report.applied, "database migrations applied");
    }
    if !report.unknown.is_empty() {
        // A newer binary migrated this database (e.g. during a rolling deploy). Additive
        // migrations keep older binaries working, so this is worth a warning, not a refusal.
        tracing::warn!(unknown = ?report.unknown, "database has migrations this binary does not know");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_ordered_and_named_by_version() {
        assert_eq!(check_registry(MIGRATIONS), Ok(()));
        let bad = [MIGRATIONS[1], MIGRATIONS[0]];
        assert!(check_registry(&bad).is_err());
        let misnamed = [Migration {
            version: 7,
            name: "0008_x",
            sql: "",
        }];
        assert!(check_registry(&misnamed).is_err());
    }

    #[test]
    fn every_migration_file_is_registered() {
        // A file dropped into store/migrations but not listed above would silently never run.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| n.ends_with(".sql"))
            .map(|n| n.trim_end_matches(".sql").to_owned())
            .collect();
        files.sort();
        let registered: Vec<String> = MIGRATIONS.iter().map(|m| m.name.to_owned()).collect();
        assert_eq!(files, registered);
    }
}
