//! Operator CRL loads and every instance's CRL reload (see `crl.rs` for what a CRL must be).

use super::crl::{self, CrlError};
use super::identity::{self, CertificateRef, IdentityError, RequestActor};
use super::{db, rfc3339, Auth, CrlReport};
use std::sync::Arc;

/// Why an operator's CRL load failed.
#[derive(Debug, thiserror::Error)]
pub enum CrlLoadError {
    /// The CRL does not verify or parse, or is not newer than the one installed.
    #[error(transparent)]
    Refused(#[from] CrlError),
    /// Stored, but the CRL set would not take it (its message stays in the log).
    #[error("the CRL was stored but not installed: {0}")]
    NotInstalled(CrlError),
    /// Marking its certificates revoked failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The database did not store it; the database's message is logged, never answered.
    #[error("the CRL could not be stored; retry")]
    NotStored,
}

/// A CRL load logs its progress every this many entries (a national CRL takes a while).
const CRL_PROGRESS_EVERY: usize = 100_000;

impl Auth {
    /// Verifies a CRL, marks the platform's known certificates on it revoked (one
    /// CertificateRevoked event each, only the first time), then stores and installs it.
    ///
    /// Also answers the global position that reflects the marking: the last revocation
    /// written (or, for certificates already marked, their last event; 0 when the CRL lists
    /// no certificate the platform knows).
    pub async fn load_crl(
        &self,
        der: &[u8],
        actor: &RequestActor,
    ) -> Result<(CrlReport, u64), CrlLoadError> {
        let crl = crl::parse_crl_blocking(Arc::new(der.to_vec()), self.anchors.clone()).await?;
        if let Some(current) = self.crls.get(&crl.ca_key_id) {
            if current.this_update >= crl.this_update {
                return Err(CrlError::NotNewer.into());
            }
        }
        // Known certificates are marked before the CRL is stored: a load that fails half-way
        // stores nothing, so repeating it (not refused as "not newer") finishes the marking.
        let (mut known, mut position) = (0, 0);
        let serials: Vec<&String> = crl.revoked.iter().collect();
        let started = std::time::Instant::now();
        for (i, chunk) in serials.chunks(identity::CRL_CHECK_CHUNK).enumerate() {
            let certs = chunk
                .iter()
                .map(|serial| {
                    CertificateRef::new(&crl.issuer, serial)
                        .map_err(|d| IdentityError::rejected(d.code(), d.message))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let marked = self
                .identity
                .mark_certificates_revoked(&certs, actor)
                .await?;
            known += marked.written;
            position = position.max(marked.position);
            let checked = i * identity::CRL_CHECK_CHUNK + chunk.len();
            if checked % CRL_PROGRESS_EVERY < chunk.len() || checked == serials.len() {
                tracing::info!(
                    ca = %crl.ca_key_id,
                    checked,
                    total = serials.len(),
                    known_revoked = known,
                    secs = started.elapsed().as_secs(),
                    "CRL: checking entries against known certificates"
                );
            }
        }
        self.db
            .insert_crl(&crl, der, &actor.actor.id)
            .await
            .map_err(|e| {
                // The database's message stays in the log, never in an answer.
                tracing::error!("storing a CRL failed: {e}");
                CrlLoadError::NotStored
            })?;
        let report = CrlReport {
            ca_key_id: crl.ca_key_id.clone(),
            issuer: crl.issuer.clone(),
            this_update: rfc3339(crl.this_update, false),
            next_update: rfc3339(crl.next_update, false),
            revoked_entries: crl.revoked.len(),
            known_certificates_revoked: known,
        };
        match self.crls.install(crl) {
            Ok(()) | Err(CrlError::NotNewer) => {}
            Err(e) => return Err(CrlLoadError::NotInstalled(e)),
        }
        Ok((report, position))
    }

    /// Installs the newest stored CRL of each CA key when it is newer than the installed one
    /// (loaded by the CLI or another instance). Compares thisUpdate per CA key, never a row-id
    /// watermark, so a load that commits late is still picked up.
    pub async fn reload_crls(&self) -> Result<(), db::DbError> {
        for stored in self.db.newest_crls().await? {
            let installed = self.crls.get(&stored.ca_key_id);
            if installed.is_some_and(|c| c.this_update >= stored.this_update) {
                // Loaded here already (or superseded): no need to fetch and parse it again.
                continue;
            }
            if self.skipped_crl(stored.id, false) {
                continue;
            }
            let der = Arc::new(self.db.crl_der(stored.id).await?);
            match crl::parse_crl_blocking(der, self.anchors.clone()).await {
                Ok(c) => match self.crls.install(c) {
                    Ok(()) | Err(CrlError::NotNewer) => {}
                    Err(e) => tracing::warn!(id = stored.id, "stored CRL not installed: {e}"),
                },
                // E.g. its CA is no longer a configured anchor.
                Err(e) => {
                    self.skipped_crl(stored.id, true);
                    tracing::warn!(id = stored.id, "stored CRL skipped: {e}");
                }
            }
        }
        Ok(())
    }

    /// Whether stored CRL `id` was found unusable before; with `mark`, records that it is.
    fn skipped_crl(&self, id: i64, mark: bool) -> bool {
        let mut skipped = self.crl_skipped.lock().unwrap_or_else(|e| e.into_inner());
        if mark {
            skipped.insert(id);
        }
        skipped.contains(&id)
    }
}
