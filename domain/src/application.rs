//! Point applications (自治体マイナポイント): submitted → payment service linked → review
//! outcome recorded → points granted. Stream `application-<program>.<subject>`: one per
//! subject per program, enforced by the deterministic id and a `NoStream` append.
//!
//! Invariants:
//! - points are granted only for an approved outcome while a payment service is linked, once;
//! - an unlinked payment service blocks every grant not yet made;
//! - a review outcome is corrected only by a data patch; a correction after a grant records
//!   the reversal owed (the grant is not erased) and allows a new grant for the new outcome;
//! - the payment provider records a reversal paid only up to the points still owed, so the
//!   owed balance never goes below zero;
//! - a failed grant is reported only where a grant could have been made (approved, linked, not
//!   yet granted) and leaves the application awaiting a grant: the provider may try again. At
//!   most [`MAX_GRANT_FAILURES`] failures are recorded per link; linking a payment service
//!   again (the usual cure for a closed or wrong account) starts the count afresh.

use crate::program::{existing as existing_program, ProgramState};
use crate::relying_party::{ensure_active, RelyingPartyState, RpKind};
use crate::{
    check_text, Context, DomainError, ErrorCode, ProgramId, RelyingPartyId, Role, SubjectId,
};
use uuid::Uuid;

/// Failed grants recorded per payment-service link. A provider retrying once a day gives up
/// within two weeks; past this the account, not the attempt, is the problem: the citizen must
/// link a payment service again, and the stream stays bounded.
pub const MAX_GRANT_FAILURES: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// Approved for this many points (integers: points are never fractional).
    Approved {
        points: u64,
    },
    Rejected {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationState {
    pub subject: SubjectId,
    pub program: ProgramId,
    pub municipality: RelyingPartyId,
    pub payment_service: RelyingPartyId,
    /// The payment provider's reference for the linked account, while linked.
    pub link_ref: Option<String>,
    pub outcome: Option<ReviewOutcome>,
    /// Points granted under the current outcome.
    pub granted_points: Option<u64>,
    /// Points granted under earlier, corrected outcomes that must be reversed.
    pub reversal_owed_points: u64,
    /// Grants the payment provider reported failed since the current link was made.
    pub grant_failures: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApplicationCommand {
    Submit {
        subject: SubjectId,
        program_id: ProgramId,
        /// The program as loaded by the shell.
        program: Option<ProgramState>,
        payment_service: RelyingPartyId,
        /// The chosen payment provider as loaded by the shell.
        payment_provider: Option<RelyingPartyState>,
    },
    LinkPaymentService {
        link_ref: String,
    },
    RecordReview {
        outcome: ReviewOutcome,
        program: Option<ProgramState>,
    },
    GrantPoints,
    UnlinkPaymentService {
        reason: String,
    },
    CorrectReview {
        outcome: ReviewOutcome,
        reason: String,
    },
    /// The payment provider took back `points` of the reversal owed.
    RecordReversalPaid {
        points: u64,
    },
    /// The payment provider could not credit the approved points (e.g. the account is closed).
    ReportGrantFailed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplicationEvent {
    Submitted {
        subject: SubjectId,
        program: ProgramId,
        municipality: RelyingPartyId,
        payment_service: RelyingPartyId,
    },
    PaymentServiceLinked {
        payment_service: RelyingPartyId,
        link_ref: String,
    },
    ReviewRecorded {
        outcome: ReviewOutcome,
    },
    PointsGranted {
        points: u64,
        payment_service: RelyingPartyId,
    },
    PaymentServiceUnlinked {
        reason: String,
        /// Set when a data patch unlinked it.
        patch_id: Option<Uuid>,
    },
    ReviewCorrected {
        previous: ReviewOutcome,
        outcome: ReviewOutcome,
        /// Points already granted under `previous`, now owed back (0 when none were granted).
        reversal_owed_points: u64,
        patch_id: Uuid,
        reason: String,
    },
    /// Points of an owed reversal that the payment service took back.
    ReversalPaid {
        points: u64,
        payment_service: RelyingPartyId,
    },
    /// The payment service could not grant the approved points; the application still awaits
    /// a grant.
    GrantFailed {
        reason: String,
        payment_service: RelyingPartyId,
    },
}

#[derive(Debug)]
pub struct Application;

fn existing(state: &Option<ApplicationState>) -> Result<&ApplicationState, DomainError> {
    state
        .as_ref()
        .ok_or_else(|| DomainError::new(ErrorCode::APPLICATION_NOT_FOUND, "no such application"))
}

fn check_outcome(outcome: &ReviewOutcome) -> Result<(), DomainError> {
    match outcome {
        ReviewOutcome::Approved { points: 0 } => Err(DomainError::new(
            ErrorCode::POINTS_MUST_BE_POSITIVE,
            "an approval grants at least one point",
        )),
        ReviewOutcome::Approved { .. } => Ok(()),
        ReviewOutcome::Rejected { reason } => check_text("reason", reason),
    }
}

/// Whether `ctx` may act for the application's payment service (or is the platform).
fn by_payment_service(
    a: &ApplicationState,
    ctx: &Context<'_>,
    why: &str,
) -> Result<(), DomainError> {
    match ctx.role() {
        Role::System => Ok(()),
        Role::RelyingParty(rp) if *rp == a.payment_service => Ok(()),
        _ => Err(DomainError::not_authorised(ctx, why)),
    }
}

/// The points a grant would credit now: approved, not yet granted, a payment service linked.
fn grantable(a: &ApplicationState) -> Result<u64, DomainError> {
    let points = match &a.outcome {
        None => {
            return Err(DomainError::new(
                ErrorCode::NOT_REVIEWED,
                "the application has not been reviewed",
            ))
        }
        Some(ReviewOutcome::Rejected { .. }) => {
            return Err(DomainError::new(
                ErrorCode::APPLICATION_REJECTED,
                "the application was rejected",
            ))
        }
        Some(ReviewOutcome::Approved { points }) => *points,
    };
    if a.granted_points.is_some() {
        return Err(DomainError::new(
            ErrorCode::POINTS_ALREADY_GRANTED,
            "points were already granted for this outcome",
        ));
    }
    if a.link_ref.is_none() {
        return Err(DomainError::new(
            ErrorCode::PAYMENT_SERVICE_NOT_LINKED,
            "no payment service is linked to receive the points",
        ));
    }
    Ok(points)
}

pub fn decide(
    state: &Option<ApplicationState>,
    command: ApplicationCommand,
    ctx: &Context<'_>,
) -> Result<Vec<ApplicationEvent>, DomainError> {
    use ApplicationCommand as C;
    use ApplicationEvent as E;
    match command {
        C::Submit {
            subject,
            program_id,
            program,
            payment_service,
            payment_provider,
        } => {
            if *ctx.role() != Role::Citizen(subject) {
                return Err(DomainError::not_authorised(
                    ctx,
                    "only the citizen applies for themselves",
                ));
            }
            if state.is_some() {
                return Err(DomainError::new(
                    ErrorCode::APPLICATION_ALREADY_SUBMITTED,
                    format!("the citizen already applied to program {program_id}"),
                ));
            }
            let p = existing_program(&program)?;
            p.accepting_applications(ctx.now)?;
            let psp = ensure_active(&payment_provider, &payment_service)?;
            if psp.kind != RpKind::PaymentServiceProvider {
                return Err(DomainError::new(
                    ErrorCode::RP_WRONG_KIND,
                    format!("{payment_service} is not a payment service provider"),
                ));
            }
            Ok(vec![E::Submitted {
                subject,
                program: program_id,
                municipality: p.municipality.clone(),
                payment_service,
            }])
        }
        C::LinkPaymentService { link_ref } => {
            let a = existing(state)?;
            // The citizen enters their account reference on the platform's own screens
            // (the citizen door), as on the national point site.
            if !matches!(ctx.role(), Role::Citizen(s) if *s == a.subject) {
                by_payment_service(
                    a,
                    ctx,
                    "the citizen, the chosen payment provider (or the platform) links",
                )?;
            }
            if a.link_ref.is_some() {
                return Err(DomainError::new(
                    ErrorCode::PAYMENT_SERVICE_ALREADY_LINKED,
                    "a payment service is already linked",
                ));
            }
            check_text("link_ref", &link_ref)?;
            Ok(vec![E::PaymentServiceLinked {
                payment_service: a.payment_service.clone(),
                link_ref,
            }])
        }
        C::RecordReview { outcome, program } => {
            let a = existing(state)?;
            if *ctx.role() != Role::RelyingParty(a.municipality.clone()) {
                return Err(DomainError::not_authorised(
                    ctx,
                    "only the program's municipality reviews its applications",
                ));
            }
            existing_program(&program)?.not_paused()?;
            if a.outcome.is_some() {
                return Err(DomainError::new(
                    ErrorCode::ALREADY_REVIEWED,
                    "the outcome is recorded; only a data patch can correct it",
                ));
            }
            check_outcome(&outcome)?;
            Ok(vec![E::ReviewRecorded { outcome }])
        }
        C::GrantPoints => {
            let a = existing(state)?;
            by_payment_service(
                a,
                ctx,
                "points are granted by the platform's payment batch or the provider",
            )?;
            let points = grantable(a)?;
            Ok(vec![E::PointsGranted {
                points,
                payment_service: a.payment_service.clone(),
            }])
        }
        C::ReportGrantFailed { reason } => {
            let a = existing(state)?;
            by_payment_service(
                a,
                ctx,
                "only the application's payment service reports its failed grant",
            )?;
            grantable(a)?;
            check_text("reason", &reason)?;
            if a.grant_failures >= MAX_GRANT_FAILURES {
                return Err(DomainError::new(
                    ErrorCode::GRANT_FAILURES_EXHAUSTED,
                    format!(
                        "{MAX_GRANT_FAILURES} failed grants are recorded for this link; \
                         the citizen must link a payment service again"
                    ),
                ));
            }
            Ok(vec![E::GrantFailed {
                reason,
                payment_service: a.payment_service.clone(),
            }])
        }
        C::UnlinkPaymentService { reason } => {
            let a = existing(state)?;
            let patch_id = match ctx.role() {
                Role::Citizen(s) if *s == a.subject => None,
                Role::Operator => Some(ctx.require_patch()?),
                _ => {
                    return Err(DomainError::not_authorised(
                        ctx,
                        "the citizen, or an operator through a data patch, unlinks",
                    ))
                }
            };
            if a.link_ref.is_none() {
                return Err(DomainError::new(
                    ErrorCode::PAYMENT_SERVICE_NOT_LINKED,
                    "no payment service is linked",
                ));
            }
            check_text("reason", &reason)?;
            Ok(vec![E::PaymentServiceUnlinked { reason, patch_id }])
        }
        C::CorrectReview { outcome, reason } => {
            let patch_id = ctx.require_patch()?;
            let a = existing(state)?;
            let previous = a.outcome.clone().ok_or_else(|| {
                DomainError::new(ErrorCode::NOT_REVIEWED, "there is no outcome to correct")
            })?;
            check_outcome(&outcome)?;
            check_text("reason", &reason)?;
            if previous == outcome {
                return Err(DomainError::new(
                    ErrorCode::SAME_OUTCOME,
                    "the correction equals the recorded outcome",
                ));
            }
            Ok(vec![E::ReviewCorrected {
                previous,
                outcome,
                reversal_owed_points: a.granted_points.unwrap_or(0),
                patch_id,
                reason,
            }])
        }
        C::RecordReversalPaid { points } => {
            let a = existing(state)?;
            by_payment_service(
                a,
                ctx,
                "the payment service that granted the points records their reversal",
            )?;
            if points == 0 {
                return Err(DomainError::new(
                    ErrorCode::POINTS_MUST_BE_POSITIVE,
                    "a reversal paid is at least one point",
                ));
            }
            if a.reversal_owed_points == 0 {
                return Err(DomainError::new(
                    ErrorCode::NO_REVERSAL_OWED,
                    "no reversal is owed for this application",
                ));
            }
            if points > a.reversal_owed_points {
                return Err(DomainError::new(
                    ErrorCode::REVERSAL_EXCEEDS_OWED,
                    format!("only {} points are owed", a.reversal_owed_points),
                ));
            }
            Ok(vec![E::ReversalPaid {
                points,
                payment_service: a.payment_service.clone(),
            }])
        }
    }
}

pub fn evolve(
    state: Option<ApplicationState>,
    event: &ApplicationEvent,
) -> Option<ApplicationState> {
    use ApplicationEvent as E;
    match (state, event) {
        (
            _,
            E::Submitted {
                subject,
                program,
                municipality,
                payment_service,
            },
        ) => Some(ApplicationState {
            subject: *subject,
            program: program.clone(),
            municipality: municipality.clone(),
            payment_service: payment_service.clone(),
            link_ref: None,
            outcome: None,
            granted_points: None,
            reversal_owed_points: 0,
            grant_failures: 0,
        }),
        (Some(mut a), E::PaymentServiceLinked { link_ref, .. }) => {
            a.link_ref = Some(link_ref.clone());
            a.grant_failures = 0;
            Some(a)
        }
        (Some(mut a), E::ReviewRecorded { outcome }) => {
            a.outcome = Some(outcome.clone());
            Some(a)
        }
        (Some(mut a), E::PointsGranted { points, .. }) => {
            a.granted_points = Some(*points);
            Some(a)
        }
        (Some(mut a), E::PaymentServiceUnlinked { .. }) => {
            a.link_ref = None;
            Some(a)
        }
        (
            Some(mut a),
            E::ReviewCorrected {
                outcome,
                reversal_owed_points,
                ..
            },
        ) => {
            a.outcome = Some(outcome.clone());
            a.reversal_owed_points += reversal_owed_points;
            a.granted_points = None;
            Some(a)
        }
        (Some(mut a), E::ReversalPaid { points, .. }) => {
            a.reversal_owed_points = a.reversal_owed_points.saturating_sub(*points);
            Some(a)
        }
        (Some(mut a), E::GrantFailed { .. }) => {
            a.grant_failures = a.grant_failures.saturating_add(1);
            Some(a)
        }
        (None, _) => None,
    }
}

crate::aggregate!(
    Application,
    "application",
    Option<ApplicationState>,
    ApplicationCommand,
    ApplicationEvent
);
