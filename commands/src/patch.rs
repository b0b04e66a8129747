//! Data patch commands: request → dry-run → approve (another operator) → apply.
//!
//! The dry-run runs each action's ordinary domain decision with the patch id in the context,
//! encodes the resulting events *once* (ids included) and records them with the versions it
//! read. Applying appends exactly those recorded events, with `Exact` expected versions and
//! the patch id in the metadata, together with the patch's own `PatchApplied` — one atomic
//! multi-stream append. If a target moved since the dry-run, the append conflicts and the
//! patch is refused with `PATCH_TARGET_MOVED`: it needs a new dry-run and a new approval.

use crate::{expected, stream_of, CommandError, CommandMeta, Commands, Executed};
use mykey_domain::application::{Application, ApplicationCommand};
use mykey_domain::patch::{
    Patch, PatchAction, PatchCommand, PatchState, PlannedAppend, PlannedEvent,
};
use mykey_domain::ppid::PpidCommand;
use mykey_domain::{Aggregate, ApplicationId, DomainError, ErrorCode};
use mykey_schemas::{NewEvent, StreamId};
use mykey_store::{AppendError, AppendRequest, EventStore, ExpectedVersion, StreamAppend};
use uuid::Uuid;

/// A requested patch expires after three days unless applied: the data it was dry-run
/// against goes stale, and an old approval should not stay usable indefinitely.
pub const DEFAULT_PATCH_TTL: chrono::Duration = chrono::Duration::hours(72);

/// What an operator supplies to request a patch.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPatch {
    pub patch_id: Uuid,
    pub ticket_id: String,
    pub reason: String,
    /// The streams the patch may touch; the dry-run is refused if it touches any other.
    pub targets: Vec<StreamId>,
    pub actions: Vec<PatchAction>,
}

type Result<T> = std::result::Result<T, CommandError>;

fn planned(append: StreamAppend) -> PlannedAppend {
    PlannedAppend {
        stream: append.stream.to_string(),
        expected_version: match append.expected {
            ExpectedVersion::Exact(v) => v,
            ExpectedVersion::NoStream | ExpectedVersion::Any => 0,
        },
        events: append
            .events
            .into_iter()
            .map(|e| PlannedEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
            })
            .collect(),
    }
}

fn to_append(p: &PlannedAppend) -> Result<StreamAppend> {
    Ok(StreamAppend {
        stream: StreamId::parse(&p.stream)?,
        expected: expected(p.expected_version),
        events: p
            .events
            .iter()
            .map(|e| NewEvent {
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                payload: e.payload.clone(),
            })
            .collect(),
    })
}

impl<S: EventStore> Commands<S> {
    pub async fn load_patch(&self, patch_id: Uuid) -> Result<Option<PatchState>> {
        Ok(self
            .load::<Patch>(&stream_of::<Patch>(patch_id)?, None)
            .await?
            .state)
    }

    pub async fn request_patch(
        &self,
        meta: &CommandMeta,
        r: RequestPatch,
    ) -> Result<Executed<Option<PatchState>>> {
        let cmd = PatchCommand::Request {
            patch_id: r.patch_id,
            ticket_id: r.ticket_id,
            reason: r.reason,
            targets: r.targets.iter().map(|s| s.to_string()).collect(),
            actions: r.actions,
            ttl: self.patch_ttl,
        };
        self.execute::<Patch>(meta, r.patch_id, cmd).await
    }

    /// Computes the exact events the patch's actions would append now, and records them.
    /// Writes nothing to the targets.
    pub async fn dry_run_patch(
        &self,
        meta: &CommandMeta,
        patch_id: Uuid,
    ) -> Result<Executed<Option<PatchState>>> {
        let stream = stream_of::<Patch>(patch_id)?;
        self.execute_on::<Patch, _, _>(meta, &stream, None, || async move {
            let state = self.load_patch(patch_id).await?;
            let actions = state.map(|p| p.actions).unwrap_or_default();
            let mut plan: Vec<PlannedAppend> = Vec::new();
            for action in &actions {
                for append in self.plan_action(meta, patch_id, action).await? {
                    if plan.iter().any(|p| p.stream == append.stream.as_str()) {
                        // Two actions on one stream would need the second decided on top of
                        // the first; keep patches simple enough to review instead.
                        return Err(DomainError::new(
                            ErrorCode::INVALID_INPUT,
                            format!("two actions of the patch touch {}", append.stream),
                        )
                        .into());
                    }
                    plan.push(planned(append));
                }
            }
            Ok(PatchCommand::RecordDryRun { plan })
        })
        .await
    }

    /// One action's compensating events, decided by the target aggregate's own rules.
    async fn plan_action(
        &self,
        meta: &CommandMeta,
        patch_id: Uuid,
        action: &PatchAction,
    ) -> Result<Vec<StreamAppend>> {
        match action {
            PatchAction::InvalidatePpid { ppid, reason } => {
                self.plan_ppid_release(
                    meta,
                    Some(patch_id),
                    ppid,
                    PpidCommand::Invalidate {
                        reason: reason.clone(),
                    },
                )
                .await
            }
            PatchAction::UnlinkPaymentService {
                program,
                subject,
                reason,
            } => {
                self.plan_application(
                    meta,
                    patch_id,
                    &ApplicationId::of(program, subject),
                    ApplicationCommand::UnlinkPaymentService {
                        reason: reason.clone(),
                    },
                )
                .await
            }
            PatchAction::CorrectReviewOutcome {
                program,
                subject,
                outcome,
                reason,
            } => {
                self.plan_application(
                    meta,
                    patch_id,
                    &ApplicationId::of(program, subject),
                    ApplicationCommand::CorrectReview {
                        outcome: outcome.clone(),
                        reason: reason.clone(),
                    },
                )
                .await
            }
        }
    }

    async fn plan_application(
        &self,
        meta: &CommandMeta,
        patch_id: Uuid,
        id: &ApplicationId,
        command: ApplicationCommand,
    ) -> Result<Vec<StreamAppend>> {
        let loaded = self
            .load::<Application>(&stream_of::<Application>(id)?, None)
            .await?;
        let events = {
            let ctx = self.context(meta, Some(patch_id));
            Application::decide(&loaded.state, command, &ctx)?
        };
        Ok(self.stream_append(&loaded, &events)?.into_iter().collect())
    }

    /// Four eyes: refused (`PATCH_SELF_APPROVAL`) for the operator who requested or dry-ran it.
    pub async fn approve_patch(
        &self,
        meta: &CommandMeta,
        patch_id: Uuid,
    ) -> Result<Executed<Option<PatchState>>> {
        self.execute::<Patch>(meta, patch_id, PatchCommand::Approve)
            .await
    }

    pub async fn reject_patch(
        &self,
        meta: &CommandMeta,
        patch_id: Uuid,
        reason: &str,
    ) -> Result<Executed<Option<PatchState>>> {
        let reason = reason.to_owned();
        self.execute::<Patch>(meta, patch_id, PatchCommand::Reject { reason })
            .await
    }

    pub async fn expire_patch(
        &self,
        meta: &CommandMeta,
        patch_id: Uuid,
    ) -> Result<Executed<Option<PatchState>>> {
        self.execute::<Patch>(meta, patch_id, PatchCommand::Expire)
            .await
    }

    /// Appends the approved dry-run's events, exactly, plus `PatchApplied`, atomically.
    pub async fn apply_patch(
        &self,
        meta: &CommandMeta,
        patch_id: Uuid,
    ) -> Result<Executed<Option<PatchState>>> {
        let stream = stream_of::<Patch>(patch_id)?;
        let mut deduplicated_elsewhere = false;
        for _ in 0..crate::MAX_ATTEMPTS {
            let loaded = self.load::<Patch>(&stream, Some(meta.command_id)).await?;
            if loaded.seen_command {
                // The compensations went to the plan's streams in the same append.
                let mut streams = vec![stream.clone()];
                if let Some(p) = &loaded.state {
                    for planned in &p.plan {
                        streams.push(StreamId::parse(&planned.stream)?);
                    }
                }
                let position = self
                    .command_position(&streams, meta.command_id)
                    .await?
                    .unwrap_or(loaded.position);
                return Ok(Executed {
                    state: loaded.state,
                    version: loaded.version,
                    position,
                    appended: 0,
                    deduplicated: true,
                });
            }
            if deduplicated_elsewhere {
                return Err(crate::command_id_reused(meta));
            }
            let events = {
                let ctx = self.context(meta, None);
                Patch::decide(&loaded.state, PatchCommand::Apply, &ctx)?
            };
            let plan = loaded
                .state
                .as_ref()
                .map(|p| p.plan.clone())
                .unwrap_or_default();
            let mut streams = Vec::with_capacity(plan.len() + 1);
            streams.extend(self.stream_append(&loaded, &events)?);
            for p in &plan {
                streams.push(to_append(p)?);
            }
            let appended = events.len() + plan.iter().map(|p| p.events.len()).sum::<usize>();
            let state = events.iter().fold(loaded.state.clone(), Patch::evolve);
            let request = AppendRequest {
                metadata: meta.event_metadata(Some(patch_id)),
                streams,
            };
            match self.store().append(request).await {
                Ok(outcome) if outcome.deduplicated => deduplicated_elsewhere = true,
                Ok(outcome) => {
                    return Ok(Executed {
                        state,
                        version: outcome
                            .streams
                            .first()
                            .map_or(loaded.version, |s| s.last_version),
                        position: outcome.last_position,
                        appended,
                        deduplicated: false,
                    })
                }
                // Our own stream moved (a concurrent approve/reject): decide again.
                Err(AppendError::Conflict { stream: s, .. }) if s == stream => continue,
                Err(AppendError::Conflict {
                    stream: s, actual, ..
                }) => {
                    return Err(DomainError::new(
                        ErrorCode::PATCH_TARGET_MOVED,
                        format!(
                            "{s} is at version {actual}, not the one the dry-run saw: \
                             run the dry-run again and have it re-approved"
                        ),
                    )
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommandError::Contention {
            stream,
            attempts: crate::MAX_ATTEMPTS,
        })
    }
}
