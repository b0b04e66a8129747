//! Maintenance notices as an RFC 5545 calendar, built with the `icalendar` crate (never string
//! templates: it folds long lines and escapes text as the RFC requires).

use chrono::{DateTime, Utc};
use icalendar::{Calendar, Component, Event, EventLike, EventStatus};
use mykey_projections::models::notices::NoticeView;

/// The calendar's name as subscribing calendars show it.
pub const CALENDAR_NAME: &str = "MyKey Platform maintenance";
/// How often a subscribed calendar should refresh the feed (`REFRESH-INTERVAL`/`X-PUBLISHED-TTL`).
pub const REFRESH: chrono::Duration = chrono::Duration::hours(1);
/// `UID` domain: a notice's UID is stable across its updates, so calendars update in place.
pub const UID_DOMAIN: &str = "mykey.platform";

/// One VEVENT per notice: UID stable, SEQUENCE its revision, cancelled ones `STATUS:CANCELLED`.
pub fn feed(notices: &[NoticeView], now: DateTime<Utc>) -> String {
    let mut cal = Calendar::new();
    cal.name(CALENDAR_NAME).ttl(&REFRESH);
    for n in notices {
        let mut e = Event::new();
        e.uid(&format!("{}@{UID_DOMAIN}", n.id))
            .timestamp(now)
            .sequence(u32::try_from(n.revision).unwrap_or(u32::MAX))
            .summary(&n.message_en)
            .description(&format!(
                "{}\n\n{}\n\nAffected: {}",
                n.message_ja,
                n.message_en,
                n.affected_services.join(", ")
            ))
            .starts(n.starts_at)
            .ends(n.ends_at)
            .last_modified(n.changed_at)
            .status(if n.cancelled {
                EventStatus::Cancelled
            } else {
                EventStatus::Confirmed
            });
        cal.push(e.done());
    }
    cal.done().to_string()
}
