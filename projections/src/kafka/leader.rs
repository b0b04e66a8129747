//! Leadership and the published position, both on one PostgreSQL connection.
//!
//! The relay that holds a session-level advisory lock publishes; the lock lives as long as
//! its connection, so a relay process that dies (or loses its database) lets another take
//! over. The position is written on that same connection: a relay whose connection broke
//! cannot write it any more, and the write only ever moves the position forward.

use super::RelayError;
use tokio_postgres::{Client, NoTls};

/// First key of the two-key advisory lock (the second is `hashtext(topic prefix)`, so relays
/// publishing under different prefixes do not exclude each other). The two-key space does not
/// overlap the one-key space the event log's own locks use.
const RELAY_LOCK_CLASS: i32 = 0x6d6b_7279; // "mkry"

fn db(what: &str, e: tokio_postgres::Error) -> RelayError {
    let detail = match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => e.to_string(),
    };
    RelayError::Database(format!("{what}: {detail}"))
}

/// The connection that holds (or tries to take) the lock.
#[derive(Debug)]
pub(super) struct LeaderConn {
    client: Client,
    prefix: String,
}

impl LeaderConn {
    pub(super) async fn open(
        config: &tokio_postgres::Config,
        prefix: &str,
    ) -> Result<LeaderConn, RelayError> {
        let mut config = config.clone();
        config.application_name("mykey-relay");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(mykey_store::pg::CONNECT_TIMEOUT);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| db("connect", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "relay leadership connection closed");
            }
        });
        Ok(LeaderConn {
            client,
            prefix: prefix.to_owned(),
        })
    }

    /// Takes the lock if no other session holds it. Never waits.
    pub(super) async fn try_lead(&self) -> Result<bool, RelayError> {
        self.client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&RELAY_LOCK_CLASS, &self.prefix],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db("try the relay lock", e))
    }

    /// False once the connection is gone, and with it the lock: another relay may lead now.
    pub(super) fn holds_connection(&self) -> bool {
        !self.client.is_closed()
    }

    /// The last position the broker acknowledged everything up to (0: nothing yet).
    pub(super) async fn position(&self) -> Result<u64, RelayError> {
        let row = self
            .client
            .query_opt(
                "SELECT position FROM relay_position WHERE topic_prefix = $1",
                &[&self.prefix],
            )
            .await
            .map_err(|e| db("read the relay position", e))?;
        let position: i64 = match row {
            Some(r) => r
                .try_get(0)
                .map_err(|e| db("decode the relay position", e))?,
            None => 0,
        };
        Ok(u64::try_from(position).unwrap_or(0))
    }

    /// Records that the broker acknowledged everything up to `position`.
    pub(super) async fn advance(&self, position: u64) -> Result<(), RelayError> {
        let position = i64::try_from(position)
            .map_err(|_| RelayError::Database(format!("position {position} out of range")))?;
        self.client
            .execute(
                "INSERT INTO relay_position (topic_prefix, position) VALUES ($1, $2) \
                 ON CONFLICT (topic_prefix) DO UPDATE \
                 SET position = GREATEST(relay_position.position, EXCLUDED.position), \
                     updated_at = now()",
                &[&self.prefix, &position],
            )
            .await
            .map_err(|e| db("advance the relay position", e))?;
        Ok(())
    }
}
