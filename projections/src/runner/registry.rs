//! The registry of read-model schemas (`read_models.*`): which schemas exist for each
//! projection, each one's checkpoint, and which one serves readers.
//!
//! It belongs to the read side, not to the event log's migrations: the runner creates it at
//! start (idempotently, under an advisory lock), with the runtime role's `CREATE` privilege.
//! Every decision that creates, switches or drops a projection's schema runs in a transaction
//! holding that projection's advisory lock, so two servers (or a server and a
//! `mykey-server rebuild`) never both create a generation or both switch.

use crate::exec::create_schema;
use crate::Projection;
use std::time::Duration;
use tokio_postgres::{Client, GenericClient, Transaction};

/// Advisory lock (transaction scope) serialising the creation of the registry itself.
pub const REGISTRY_LOCK_KEY: i64 = 0x6d79_6b65_795f_726d; // "mykey_rm"

const DDL: &str = "
CREATE SCHEMA IF NOT EXISTS read_models;
CREATE TABLE IF NOT EXISTS read_models.schemas (
    schema_name text PRIMARY KEY,
    name        text NOT NULL,
    version     integer NOT NULL,
    generation  integer NOT NULL,
    state       text NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    position    bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version, generation)
);
-- Secondary indexes of a schema being built, created at its switch (see `defer_indexes`).
-- Added only where missing: ALTER TABLE would wait for (and stall) every running batch.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'read_models.schemas'::regclass
                   AND attname = 'deferred_indexes' AND NOT attisdropped) THEN
        ALTER TABLE read_models.schemas ADD COLUMN deferred_indexes text[] NOT NULL DEFAULT '{}';
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS read_models.active (
    name        text PRIMARY KEY,
    schema_name text NOT NULL REFERENCES read_models.schemas (schema_name),
    version     integer NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now()
);
";

/// Moves a schema's checkpoint from `$3` to `$2` inside the batch's transaction, and fails
/// the transaction (division by zero, SQLSTATE 22012) unless exactly that row moved: when
/// another runner moved the checkpoint first, or the schema was retired by a switch, this
/// batch must not commit — that is what rules out applying an event twice.
pub const ADVANCE_CHECKPOINT: &str = "WITH moved AS (\
     UPDATE read_models.schemas SET position = $2, updated_at = now() \
     WHERE schema_name = $1 AND position = $3 AND state <> 'retired' RETURNING 1) \
     SELECT 1 / count(*)::int FROM moved";

/// A build whose checkpoint has not moved for this long was abandoned (a rebuild by hand that
/// was interrupted): a running build moves it with every batch.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3_600);

/// SQLSTATE of [`ADVANCE_CHECKPOINT`]'s refusal.
pub const CHECKPOINT_MOVED: &str = "22012";

/// Role of a schema in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Being filled from position 1; not read by anyone yet.
    Building,
    /// Serves readers.
    Active,
    /// Replaced by a switch; dropped after a grace period.
    Retired,
}

impl State {
    fn parse(s: &str) -> State {
        match s {
            "building" => State::Building,
            "active" => State::Active,
            _ => State::Retired,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            State::Building => "building",
            State::Active => "active",
            State::Retired => "retired",
        }
    }
}

/// One row of `read_models.schemas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRow {
    pub schema: String,
    pub version: u32,
    pub state: State,
    pub position: u64,
}

/// What the runner follows after [`attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The schema this runner fills.
    pub target: SchemaRow,
    /// When `target` is being built: the schema that serves meanwhile (None on first start).
    pub serving: Option<SchemaRow>,
}

/// Creates the registry if it does not exist.
pub async fn ensure(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOCK_KEY])
        .await?;
    tx.batch_execute(DDL).await?;
    tx.commit().await
}

/// Takes the transaction-scoped lock for decisions about `name`'s schemas.
async fn lock_name(tx: &Transaction<'_>, name: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('mykey_read_model:' || $1))",
        &[&name],
    )
    .await
    .map(drop)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const ROW_COLUMNS: &str = "schema_name, version, state, position";

fn row(r: &tokio_postgres::Row) -> Result<SchemaRow, tokio_postgres::Error> {
    Ok(SchemaRow {
        schema: r.try_get(0)?,
        version: u32::try_from(r.try_get::<_, i32>(1)?).unwrap_or(0),
        state: State::parse(r.try_get(2)?),
        position: to_u64(r.try_get(3)?),
    })
}

/// The schema serving `name`, if any.
pub async fn active<C: GenericClient + Sync>(
    client: &C,
    name: &str,
) -> Result<Option<SchemaRow>, tokio_postgres::Error> {
    client
        .query_opt(
            &format!(
                "SELECT {ROW_COLUMNS} FROM read_models.schemas \
                 WHERE schema_name = (SELECT schema_name FROM read_models.active WHERE name = $1)"
            ),
            &[&name],
        )
        .await?
        .map(|r| row(&r))
        .transpose()
}

/// One schema's row, if it still exists.
pub async fn schema_row<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
) -> Result<Option<SchemaRow>, tokio_postgres::Error> {
    client
        .query_opt(
            &format!("SELECT {ROW_COLUMNS} FROM read_models.schemas WHERE schema_name = $1"),
            &[&schema],
        )
        .await?
        .map(|r| row(&r))
        .transpose()
}

/// Every projection's serving schema: `(name, schema, version, position)`.
pub async fn all_active<C: GenericClient + Sync>(
    client: &C,
) -> Result<Vec<(String, SchemaRow)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.name, s.schema_name, s.version, s.state, s.position \
             FROM read_models.active a JOIN read_models.schemas s USING (schema_name)",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                SchemaRow {
                    schema: r.try_get(1)?,
                    version: u32::try_from(r.try_get::<_, i32>(2)?).unwrap_or(0),
                    state: State::parse(r.try_get(3)?),
                    position: to_u64(r.try_get(4)?),
                },
            ))
        })
        .collect()
}

/// Creates the next generation of `projection`'s current version: its schema, its tables and
/// its registry row (checkpoint 0).
async fn create_generation(
    tx: &Transaction<'_>,
    projection: &dyn Projection,
    state: State,
) -> Result<SchemaRow, tokio_postgres::Error> {
    let version = i32::try_from(projection.version()).unwrap_or(i32::MAX);
    let generation: i32 = tx
        .query_one(
            "SELECT coalesce(max(generation), 0) + 1 FROM read_models.schemas \
             WHERE name = $1 AND version = $2",
            &[&projection.name(), &version],
        )
        .await?
        .try_get(0)?;
    let schema = schema_name(projection.name(), projection.version(), generation);
    // A schema left by a registry row deleted by hand would make CREATE SCHEMA fail forever.
    tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    create_schema(tx, &schema, projection).await?;
    // A build serves nobody until its switch: it is filled without its secondary indexes.
    let deferred = match state {
        State::Building => defer_indexes(tx, &schema).await?,
        State::Active | State::Retired => Vec::new(),
    };
    tx.execute(
        "INSERT INTO read_models.schemas \
         (schema_name, name, version, generation, state, deferred_indexes) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &schema,
            &projection.name(),
            &version,
            &generation,
            &state.as_str(),
            &deferred,
        ],
    )
    .await?;
    Ok(SchemaRow {
        schema,
        version: projection.version(),
        state,
        position: 0,
    })
}

/// Drops the secondary indexes of `schema` (those that enforce nothing: no constraint, not
/// unique) and returns their definitions, to be created again by [`switch`]. A rebuild then
/// maintains only the indexes its `checked` updates and uniqueness need, and builds the others
/// once, in bulk, over the finished tables. Constraints (primary keys, `UNIQUE`, `CHECK`, foreign
/// keys) stay, so an event the read model rejects still stops the build at that event.
async fn defer_indexes(
    tx: &Transaction<'_>,
    schema: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND NOT i.indisunique \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
             ORDER BY c.relname",
            &[&schema],
        )
        .await?;
    let mut definitions = Vec::with_capacity(rows.len());
    for r in &rows {
        let index: String = r.try_get(0)?;
        tx.batch_execute(&format!("DROP INDEX {index}")).await?;
        definitions.push(r.try_get(1)?);
    }
    Ok(definitions)
}

/// Creates the indexes [`defer_indexes`] dropped from `schema` (inside the switch's
/// transaction: the schema serves with all its indexes or not at all).
async fn create_deferred_indexes(
    tx: &Transaction<'_>,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    let definitions: Vec<String> = tx
        .query_one(
            "SELECT deferred_indexes FROM read_models.schemas WHERE schema_name = $1",
            &[&schema],
        )
        .await?
        .try_get(0)?;
    for definition in &definitions {
        // Written by `pg_get_indexdef` for this schema's own index (schema-qualified).
        tx.batch_execute(definition).await?;
    }
    Ok(())
}

/// `rm_<name>_v<version>_g<generation>`. Names are checked by [`crate::runner::check_name`]
/// (short, `[a-z][a-z0-9_]*`), so this is a plain identifier.
pub fn schema_name(name: &str, version: u32, generation: i32) -> String {
    format!("rm_{name}_v{version}_g{generation}")
}

/// Decides what this runner fills for `projection`:
/// - nothing registered yet: a fresh schema that serves at once (empty, then filling);
/// - the serving schema has this code's version: follow it;
/// - another version serves: build this version in a fresh schema (or resume the build a
///   crashed runner left) while the old one keeps serving.
///
/// Also drops what nobody will read again: retired schemas past `grace`, builds of versions
/// that are neither serving nor this code's, and builds abandoned for [`ABANDONED_AFTER`].
pub async fn attach(
    client: &mut Client,
    projection: &dyn Projection,
    grace: Duration,
) -> Result<Attached, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    lock_name(&tx, projection.name()).await?;
    let serving = active(&tx, projection.name()).await?;
    let version = i32::try_from(projection.version()).unwrap_or(i32::MAX);
    let serving_version = serving
        .as_ref()
        .map_or(version, |s| i32::try_from(s.version).unwrap_or(i32::MAX));
    let grace_secs = grace.as_secs_f64();
    let stale: Vec<String> = tx
        .query(
            "SELECT schema_name FROM read_models.schemas WHERE name = $1 AND \
             ((state = 'retired' AND updated_at < now() - make_interval(secs => $2)) \
              OR (state = 'building' AND version <> $3 AND version <> $4) \
              OR (state = 'building' AND updated_at < now() - make_interval(secs => $5)))",
            &[
                &projection.name(),
                &grace_secs,
                &version,
                &serving_version,
                &ABANDONED_AFTER.as_secs_f64(),
            ],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    for schema in &stale {
        drop_in(&tx, schema).await?;
    }
    let attached = match serving {
        None => {
            let target = create_generation(&tx, projection, State::Active).await?;
            tx.execute(
                "INSERT INTO read_models.active (name, schema_name, version) VALUES ($1, $2, $3)",
                &[&projection.name(), &target.schema, &version],
            )
            .await?;
            Attached {
                target,
                serving: None,
            }
        }
        Some(s) if s.version == projection.version() => Attached {
            target: s,
            serving: None,
        },
        Some(s) => {
            let resumable = tx
                .query_opt(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM read_models.schemas \
                         WHERE name = $1 AND version = $2 AND state = 'building' \
                         ORDER BY generation DESC LIMIT 1"
                    ),
                    &[&projection.name(), &version],
                )
                .await?
                .map(|r| row(&r))
                .transpose()?;
            let target = match resumable {
                Some(t) => t,
                None => create_generation(&tx, projection, State::Building).await?,
            };
            Attached {
                target,
                serving: Some(s),
            }
        }
    };
    tx.commit().await?;
    Ok(attached)
}

/// Creates a fresh generation to rebuild `projection` by hand (same version or not), while
/// whatever serves keeps serving.
pub async fn begin_rebuild(
    client: &mut Client,
    projection: &dyn Projection,
) -> Result<Attached, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    lock_name(&tx, projection.name()).await?;
    let serving = active(&tx, projection.name()).await?;
    let target = create_generation(&tx, projection, State::Building).await?;
    tx.commit().await?;
    Ok(Attached { target, serving })
}

/// Why a switch did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// Someone else switched `name` first (another builder won); this build is not needed.
    #[error("another schema was switched in meanwhile")]
    Lost,
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Makes `to` serve `name` in one transaction, if `from` still serves it (`None`: nothing
/// served): readers see either the old schema or the new one, each complete.
pub async fn switch(
    client: &mut Client,
    name: &str,
    from: Option<&str>,
    to: &str,
) -> Result<(), SwitchError> {
    let tx = client.transaction().await?;
    lock_name(&tx, name).await?;
    let current = active(&tx, name).await?;
    if current.as_ref().map(|c| c.schema.as_str()) != from {
        return Err(SwitchError::Lost);
    }
    let target = schema_row(&tx, to).await?.ok_or(SwitchError::Lost)?;
    if target.state != State::Building {
        return Err(SwitchError::Lost);
    }
    create_deferred_indexes(&tx, to).await?;
    let version = i32::try_from(target.version).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO read_models.active (name, schema_name, version) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET schema_name = $2, version = $3, switched_at = now()",
        &[&name, &to, &version],
    )
    .await?;
    tx.execute(
        "UPDATE read_models.schemas SET state = 'active', deferred_indexes = '{}', \
         updated_at = now() WHERE schema_name = $1",
        &[&to],
    )
    .await?;
    if let Some(from) = from {
        tx.execute(
            "UPDATE read_models.schemas SET state = 'retired', updated_at = now() \
             WHERE schema_name = $1",
            &[&from],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn drop_in(tx: &Transaction<'_>, schema: &str) -> Result<(), tokio_postgres::Error> {
    // `schema` comes from the registry, which only holds names built by `schema_name`.
    tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    tx.execute(
        "DELETE FROM read_models.schemas WHERE schema_name = $1 AND state <> 'active'",
        &[&schema],
    )
    .await
    .map(drop)
}

/// Drops a schema that no longer serves (retired, or an abandoned build). Refuses silently
/// to drop the serving one: the `DELETE` keeps its row and the check below keeps its tables.
pub async fn drop_schema(
    client: &mut Client,
    name: &str,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    lock_name(&tx, name).await?;
    let row = schema_row(&tx, schema).await?;
    if row.is_some_and(|r| r.state == State::Active) {
        return Ok(());
    }
    drop_in(&tx, schema).await?;
    tx.commit().await
}

pub(crate) fn position_param(p: u64) -> i64 {
    to_i64(p)
}
