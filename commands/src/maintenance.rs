//! Maintenance notice commands.

use crate::{stream_of, CommandError, CommandMeta, Commands, Executed};
use mykey_domain::maintenance::{Maintenance, MaintenanceCommand, NoticeDetails, NoticeState};
use mykey_domain::NoticeId;
use mykey_store::EventStore;

type Result = std::result::Result<Executed<Option<NoticeState>>, CommandError>;

impl<S: EventStore> Commands<S> {
    pub async fn load_notice(
        &self,
        id: &NoticeId,
    ) -> std::result::Result<Option<NoticeState>, CommandError> {
        Ok(self
            .load::<Maintenance>(&stream_of::<Maintenance>(id)?, None)
            .await?
            .state)
    }

    pub async fn schedule_maintenance(
        &self,
        meta: &CommandMeta,
        id: &NoticeId,
        details: NoticeDetails,
    ) -> Result {
        let id2 = id.clone();
        self.execute::<Maintenance>(meta, id, MaintenanceCommand::Schedule { id: id2, details })
            .await
    }

    pub async fn update_maintenance(
        &self,
        meta: &CommandMeta,
        id: &NoticeId,
        details: NoticeDetails,
    ) -> Result {
        self.execute::<Maintenance>(meta, id, MaintenanceCommand::Update { details })
            .await
    }

    pub async fn cancel_maintenance(
        &self,
        meta: &CommandMeta,
        id: &NoticeId,
        reason: &str,
    ) -> Result {
        let reason = reason.to_owned();
        self.execute::<Maintenance>(meta, id, MaintenanceCommand::Cancel { reason })
            .await
    }
}
