//! Point application commands. The stream id is derived from (program, subject), and the
//! first append uses `NoStream`, so a second application by the same citizen to the same
//! program can never be written, even by two racing requests.

use crate::{stream_of, CommandError, CommandMeta, Commands, Executed};
use mykey_domain::application::{Application, ApplicationCommand, ApplicationState, ReviewOutcome};
use mykey_domain::{ApplicationId, ProgramId, RelyingPartyId, SubjectId};
use mykey_schemas::StreamId;
use mykey_store::EventStore;

type Result<T> = std::result::Result<Executed<Option<T>>, CommandError>;

fn stream(program: &ProgramId, subject: SubjectId) -> std::result::Result<StreamId, CommandError> {
    stream_of::<Application>(ApplicationId::of(program, &subject))
}

impl<S: EventStore> Commands<S> {
    pub async fn load_application(
        &self,
        program: &ProgramId,
        subject: SubjectId,
    ) -> std::result::Result<Option<ApplicationState>, CommandError> {
        Ok(self
            .load::<Application>(&stream(program, subject)?, None)
            .await?
            .state)
    }

    /// A citizen applies to a program, choosing a payment service provider.
    pub async fn submit_application(
        &self,
        meta: &CommandMeta,
        subject: SubjectId,
        program: &ProgramId,
        payment_service: &RelyingPartyId,
    ) -> Result<ApplicationState> {
        let s = stream(program, subject)?;
        self.execute_on::<Application, _, _>(meta, &s, None, || async move {
            Ok(ApplicationCommand::Submit {
                subject,
                program_id: program.clone(),
                program: self.load_program(program).await?,
                payment_service: payment_service.clone(),
                payment_provider: self.load_relying_party(payment_service).await?,
            })
        })
        .await
    }

    /// Records the link to the citizen's account: by the chosen payment provider, the platform,
    /// or the citizen themself on the platform's screens.
    pub async fn link_payment_service(
        &self,
        meta: &CommandMeta,
        program: &ProgramId,
        subject: SubjectId,
        link_ref: &str,
    ) -> Result<ApplicationState> {
        let link_ref = link_ref.to_owned();
        self.execute::<Application>(
            meta,
            ApplicationId::of(program, &subject),
            ApplicationCommand::LinkPaymentService { link_ref },
        )
        .await
    }

    /// The program's municipality records the review outcome.
    pub async fn record_review(
        &self,
        meta: &CommandMeta,
        program: &ProgramId,
        subject: SubjectId,
        outcome: ReviewOutcome,
    ) -> Result<ApplicationState> {
        self.guard_acting_rp(meta).await?;
        let outcome = &outcome;
        self.execute_on::<Application, _, _>(
            meta,
            &stream(program, subject)?,
            None,
            || async move {
                Ok(ApplicationCommand::RecordReview {
                    outcome: outcome.clone(),
                    program: self.load_program(program).await?,
                })
            },
        )
        .await
    }

    /// Records that the approved points were granted through the payment provider.
    pub async fn grant_points(
        &self,
        meta: &CommandMeta,
        program: &ProgramId,
        subject: SubjectId,
    ) -> Result<ApplicationState> {
        self.execute::<Application>(
            meta,
            ApplicationId::of(program, &subject),
            ApplicationCommand::GrantPoints,
        )
        .await
    }

    /// The citizen unlinks the payment service (an operator does it only through a patch).
    pub async fn unlink_payment_service(
        &self,
        meta: &CommandMeta,
        program: &ProgramId,
        subject: SubjectId,
        reason: &str,
    ) -> Result<ApplicationState> {
        let reason = reason.to_owned();
        self.execute_on::<Application, _, _>(meta, &stream(program, subject)?, None, || {
            let reason = reason.clone();
            async move { Ok(ApplicationCommand::UnlinkPaymentService { reason }) }
        })
        .await
    }

    /// The payment provider records that `points` of an owed reversal were taken back.
    pub async fn record_reversal_paid(
        &self,
        meta: &CommandMeta,
        program: &ProgramId,
        subject: SubjectId,
        points: u64,
    ) -> Result<ApplicationState> {
        self.execute::<Application>(
            meta,
            ApplicationId::of(program, &subject),
            ApplicationCommand::RecordReversalPaid { points },
        )
        .await
    }

    /// The payment provider reports that it could not grant the approved points; the
    /// application still awaits a grant (see [`mykey_domain::application::MAX_GRANT_FAILURES`]).
    pub async fn report_grant_failed(
        &self,
        meta: &CommandMeta,
        program: &ProgramId,
        subject: SubjectId,
        reason: &str,
    ) -> Result<ApplicationState> {
        self.execute::<Application>(
            meta,
            ApplicationId::of(program, &subject),
            ApplicationCommand::ReportGrantFailed {
                reason: reason.to_owned(),
            },
        )
        .await
    }
}
