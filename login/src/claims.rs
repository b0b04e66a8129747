//! Single use of challenges across instances, group-committed: every login's claim (the
//! challenge's random id into `auth_challenge_used`) waits for one INSERT shared with the
//! claims that arrived meanwhile, like the audit writer. So a PIN login costs the database no
//! commit of its own however many run at once; the primary key still decides every race,
//! within a batch, across batches and across instances.

use super::db::{AuthDb, DbError};
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Claims waiting to be written; when full, logins wait (backpressure).
pub const CLAIM_QUEUE: usize = 10_000;

/// Claims written in one INSERT.
pub const CLAIM_BATCH: usize = 512;

type Claim = (Uuid, i64, oneshot::Sender<Result<bool, String>>);

#[derive(Debug, Clone)]
pub struct ChallengeClaims {
    tx: mpsc::Sender<Claim>,
}

impl ChallengeClaims {
    /// Spawns the writer task on the current runtime.
    pub fn spawn(db: AuthDb) -> ChallengeClaims {
        let (tx, mut rx) = mpsc::channel::<Claim>(CLAIM_QUEUE);
        tokio::spawn(async move {
            let mut batch: Vec<Claim> = Vec::with_capacity(CLAIM_BATCH);
            while rx.recv_many(&mut batch, CLAIM_BATCH).await > 0 {
                let claims: Vec<(Uuid, i64)> =
                    batch.iter().map(|(id, exp, _)| (*id, *exp)).collect();
                match db.claim_challenges(&claims).await {
                    Ok(fresh) => {
                        let ids: Vec<Uuid> = claims.iter().map(|(id, _)| *id).collect();
                        for ((_, _, ack), ok) in batch.drain(..).zip(fresh_once(&ids, fresh)) {
                            let _ = ack.send(Ok(ok));
                        }
                    }
                    Err(e) => {
                        let e = e.to_string();
                        for (_, _, ack) in batch.drain(..) {
                            let _ = ack.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        ChallengeClaims { tx }
    }

    /// Marks challenge `id` (valid until `expires_at_ms`) used: true for exactly one claim of
    /// it, ever (until it is pruned after expiry, when it can no longer be presented).
    pub async fn claim(&self, id: Uuid, expires_at_ms: i64) -> Result<bool, DbError> {
        let (ack, done) = oneshot::channel();
        let closed = || DbError("challenge claim writer stopped".to_owned());
        self.tx
            .send((id, expires_at_ms, ack))
            .await
            .map_err(|_| closed())?;
        done.await.map_err(|_| closed())?.map_err(DbError)
    }
}

/// For each claim of a batch, in order: was it the one that made its id used? (`fresh` holds
/// the ids the INSERT returned; a second claim of one id in the same batch is not fresh.)
fn fresh_once(claims: &[Uuid], mut fresh: HashSet<Uuid>) -> Vec<bool> {
    claims.iter().map(|id| fresh.remove(id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_twice_in_one_batch_is_fresh_once() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let fresh: HashSet<Uuid> = [a, b].into_iter().collect();
        assert_eq!(fresh_once(&[a, b, a], fresh), [true, true, false]);
    }
}
