//! Maintenance notices: planned outages that citizens see and municipal systems read.
//! Stream `maintenance-<id>`.

use crate::{check_text, Context, DomainError, ErrorCode, NoticeId};
use chrono::{DateTime, Utc};

/// Most services one notice may name (they are short service labels).
pub const MAX_AFFECTED_SERVICES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeDetails {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub affected_services: Vec<String>,
    pub message_ja: String,
    pub message_en: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeState {
    pub id: NoticeId,
    pub details: NoticeDetails,
    pub cancelled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MaintenanceCommand {
    Schedule {
        id: NoticeId,
        details: NoticeDetails,
    },
    Update {
        details: NoticeDetails,
    },
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceEvent {
    Scheduled {
        id: NoticeId,
        details: NoticeDetails,
    },
    Updated {
        details: NoticeDetails,
    },
    Cancelled {
        reason: String,
    },
}

#[derive(Debug)]
pub struct Maintenance;

fn check_details(d: &NoticeDetails, now: DateTime<Utc>) -> Result<(), DomainError> {
    if d.end <= d.start {
        return Err(DomainError::new(
            ErrorCode::MAINTENANCE_END_BEFORE_START,
            "a maintenance window must end after it starts",
        ));
    }
    if d.start < now {
        return Err(DomainError::new(
            ErrorCode::MAINTENANCE_IN_PAST,
            "a maintenance window cannot start in the past",
        ));
    }
    if d.affected_services.is_empty() || d.affected_services.len() > MAX_AFFECTED_SERVICES {
        return Err(DomainError::new(
            ErrorCode::INVALID_INPUT,
            format!("name 1..={MAX_AFFECTED_SERVICES} affected services"),
        ));
    }
    for s in &d.affected_services {
        check_text("affected service", s)?;
    }
    check_text("message_ja", &d.message_ja)?;
    check_text("message_en", &d.message_en)
}

fn live(state: &Option<NoticeState>) -> Result<&NoticeState, DomainError> {
    let n = state
        .as_ref()
        .ok_or_else(|| DomainError::new(ErrorCode::NOTICE_NOT_FOUND, "no such notice"))?;
    if n.cancelled {
        return Err(DomainError::new(
            ErrorCode::NOTICE_CANCELLED,
            format!("notice {} was cancelled", n.id),
        ));
    }
    Ok(n)
}

pub fn decide(
    state: &Option<NoticeState>,
    command: MaintenanceCommand,
    ctx: &Context<'_>,
) -> Result<Vec<MaintenanceEvent>, DomainError> {
    ctx.require_operator()?;
    match command {
        MaintenanceCommand::Schedule { id, details } => {
            if state.is_some() {
                return Err(DomainError::new(
                    ErrorCode::NOTICE_ALREADY_SCHEDULED,
                    format!("notice {id} already exists"),
                ));
            }
            check_details(&details, ctx.now)?;
            Ok(vec![MaintenanceEvent::Scheduled { id, details }])
        }
        MaintenanceCommand::Update { details } => {
            live(state)?;
            check_details(&details, ctx.now)?;
            Ok(vec![MaintenanceEvent::Updated { details }])
        }
        MaintenanceCommand::Cancel { reason } => {
            live(state)?;
            check_text("reason", &reason)?;
            Ok(vec![MaintenanceEvent::Cancelled { reason }])
        }
    }
}

pub fn evolve(state: Option<NoticeState>, event: &MaintenanceEvent) -> Option<NoticeState> {
    match (state, event) {
        (_, MaintenanceEvent::Scheduled { id, details }) => Some(NoticeState {
            id: id.clone(),
            details: details.clone(),
            cancelled: false,
        }),
        (Some(mut n), MaintenanceEvent::Updated { details }) => {
            n.details = details.clone();
            Some(n)
        }
        (Some(mut n), MaintenanceEvent::Cancelled { .. }) => {
            n.cancelled = true;
            Some(n)
        }
        (None, _) => None,
    }
}

crate::aggregate!(
    Maintenance,
    "maintenance",
    Option<NoticeState>,
    MaintenanceCommand,
    MaintenanceEvent
);
