//! The operator's register of test cards lent to vendors and municipalities.
//! Stream `test_card-<id>`.

use crate::{check_text, Context, DomainError, ErrorCode, TestCardId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorrowerKind {
    Vendor,
    Municipality,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Borrower {
    pub kind: BorrowerKind,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardStatus {
    InStock,
    Lent(Borrower),
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCardState {
    pub id: TestCardId,
    pub label: String,
    pub status: CardStatus,
    pub last_checked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestCardCommand {
    Register { id: TestCardId, label: String },
    Lend { borrower: Borrower },
    Return,
    CheckInventory,
    ReportLost { note: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestCardEvent {
    Registered { id: TestCardId, label: String },
    Lent { borrower: Borrower },
    Returned,
    InventoryChecked { checked_at: DateTime<Utc> },
    ReportedLost { note: String },
}

#[derive(Debug)]
pub struct TestCard;

fn usable(state: &Option<TestCardState>) -> Result<&TestCardState, DomainError> {
    let c = state
        .as_ref()
        .ok_or_else(|| DomainError::new(ErrorCode::CARD_NOT_FOUND, "no such test card"))?;
    if c.status == CardStatus::Lost {
        return Err(DomainError::new(
            ErrorCode::CARD_LOST,
            format!("test card {} is reported lost", c.id),
        ));
    }
    Ok(c)
}

pub fn decide(
    state: &Option<TestCardState>,
    command: TestCardCommand,
    ctx: &Context<'_>,
) -> Result<Vec<TestCardEvent>, DomainError> {
    ctx.require_operator()?;
    match command {
        TestCardCommand::Register { id, label } => {
            if state.is_some() {
                return Err(DomainError::new(
                    ErrorCode::CARD_ALREADY_REGISTERED,
                    format!("test card {id} is already registered"),
                ));
            }
            check_text("label", &label)?;
            Ok(vec![TestCardEvent::Registered { id, label }])
        }
        TestCardCommand::Lend { borrower } => {
            let c = usable(state)?;
            if let CardStatus::Lent(b) = &c.status {
                return Err(DomainError::new(
                    ErrorCode::CARD_ALREADY_LENT,
                    format!("test card {} is lent to {}", c.id, b.name),
                ));
            }
            check_text("borrower name", &borrower.name)?;
            Ok(vec![TestCardEvent::Lent { borrower }])
        }
        TestCardCommand::Return => {
            let c = usable(state)?;
            if !matches!(c.status, CardStatus::Lent(_)) {
                return Err(DomainError::new(
                    ErrorCode::CARD_NOT_LENT,
                    format!("test card {} is not lent", c.id),
                ));
            }
            Ok(vec![TestCardEvent::Returned])
        }
        TestCardCommand::CheckInventory => {
            usable(state)?;
            Ok(vec![TestCardEvent::InventoryChecked {
                checked_at: ctx.now,
            }])
        }
        TestCardCommand::ReportLost { note } => {
            usable(state)?;
            check_text("note", &note)?;
            Ok(vec![TestCardEvent::ReportedLost { note }])
        }
    }
}

pub fn evolve(state: Option<TestCardState>, event: &TestCardEvent) -> Option<TestCardState> {
    use TestCardEvent as E;
    match (state, event) {
        (_, E::Registered { id, label }) => Some(TestCardState {
            id: id.clone(),
            label: label.clone(),
            status: CardStatus::InStock,
            last_checked_at: None,
        }),
        (Some(mut c), E::Lent { borrower }) => {
            c.status = CardStatus::Lent(borrower.clone());
            Some(c)
        }
        (Some(mut c), E::Returned) => {
            c.status = CardStatus::InStock;
            Some(c)
        }
        (Some(mut c), E::InventoryChecked { checked_at }) => {
            c.last_checked_at = Some(*checked_at);
            Some(c)
        }
        (Some(mut c), E::ReportedLost { .. }) => {
            c.status = CardStatus::Lost;
            Some(c)
        }
        (None, _) => None,
    }
}

crate::aggregate!(
    TestCard,
    "test_card",
    Option<TestCardState>,
    TestCardCommand,
    TestCardEvent
);
