//! Test card register commands.

use crate::{stream_of, CommandError, CommandMeta, Commands, Executed};
use mykey_domain::test_card::{Borrower, TestCard, TestCardCommand, TestCardState};
use mykey_domain::TestCardId;
use mykey_store::EventStore;

type Result = std::result::Result<Executed<Option<TestCardState>>, CommandError>;

impl<S: EventStore> Commands<S> {
    pub async fn load_test_card(
        &self,
        id: &TestCardId,
    ) -> std::result::Result<Option<TestCardState>, CommandError> {
        Ok(self
            .load::<TestCard>(&stream_of::<TestCard>(id)?, None)
            .await?
            .state)
    }

    pub async fn register_test_card(
        &self,
        meta: &CommandMeta,
        id: &TestCardId,
        label: &str,
    ) -> Result {
        let cmd = TestCardCommand::Register {
            id: id.clone(),
            label: label.to_owned(),
        };
        self.execute::<TestCard>(meta, id, cmd).await
    }

    pub async fn lend_test_card(
        &self,
        meta: &CommandMeta,
        id: &TestCardId,
        borrower: Borrower,
    ) -> Result {
        self.execute::<TestCard>(meta, id, TestCardCommand::Lend { borrower })
            .await
    }

    pub async fn return_test_card(&self, meta: &CommandMeta, id: &TestCardId) -> Result {
        self.execute::<TestCard>(meta, id, TestCardCommand::Return)
            .await
    }

    pub async fn check_test_card_inventory(&self, meta: &CommandMeta, id: &TestCardId) -> Result {
        self.execute::<TestCard>(meta, id, TestCardCommand::CheckInventory)
            .await
    }

    pub async fn report_test_card_lost(
        &self,
        meta: &CommandMeta,
        id: &TestCardId,
        note: &str,
    ) -> Result {
        let note = note.to_owned();
        self.execute::<TestCard>(meta, id, TestCardCommand::ReportLost { note })
            .await
    }
}
