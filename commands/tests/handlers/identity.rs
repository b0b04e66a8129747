//! Certificates, subjects and PPIDs through the handlers the login endpoint calls.

use crate::support::*;
use mykey_commands::{CertificateRef, CommandError, RpKind};
use mykey_domain::ppid::{PpidStatus, RevokedBy};
use mykey_domain::ErrorCode;
use mykey_store::EventStore;

fn cert(serial: &str) -> CertificateRef {
    match CertificateRef::new("jpki-ca-2023", serial) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: Result<T, CommandError>, code: ErrorCode) {
    match r {
        Err(CommandError::Domain(e)) => assert_eq!(e.code, code, "{e}"),
        other => panic!("expected {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn first_login_creates_subject_and_ppid_atomically_and_later_logins_reuse_it() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let before = cmds.store().head().await.unwrap_or(0);
    let first = cmds.register_login(&system(), &cert("0a01"), &rp).await;
    let first = first.unwrap_or_else(|e| panic!("{e}"));
    assert!(first.newly_issued);
    let after = cmds.store().all_events();
    // certificate + subject(created, assigned) + ppid = 4 events, one command.
    assert_eq!(after.len() as u64 - before, 4);
    let new: Vec<_> = after.iter().skip(before as usize).collect();
    assert!(new
        .iter()
        .all(|e| e.metadata.command_id == new[0].metadata.command_id));
    let again = cmds
        .register_login(&system(), &cert("0A:01"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (again.subject, &again.ppid, again.newly_issued),
        (first.subject, &first.ppid, false)
    );
    assert_eq!(
        cmds.resolve_certificate(&cert("a01")).await.ok().flatten(),
        Some(first.subject)
    );
    assert_eq!(
        cmds.active_ppid(first.subject, &rp).await.ok().flatten(),
        Some(first.ppid)
    );
}

#[tokio::test]
async fn ppids_differ_per_relying_party_and_are_not_derived_from_the_certificate() {
    let (cmds, _) = setup();
    let a = chiyoda(&cmds).await;
    let b = register_rp(&cmds, "library-1", "lib1", RpKind::LibrarySystem).await;
    let pa = cmds
        .register_login(&system(), &cert("01"), &a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pb = cmds
        .register_login(&system(), &cert("01"), &b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pa.subject, pb.subject);
    assert_ne!(pa.ppid, pb.ppid);
    // The same certificate at the same RP on another platform (another id stream): another
    // PPID, so a PPID is drawn at random, not computed from the certificate and the RP.
    let (other, _) = mykey_commands::testing::test_commands_with_ids_from(new_store(), 500_000);
    let a_there = chiyoda(&other).await;
    let there = other
        .register_login(&system(), &cert("01"), &a_there)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a_there, a);
    assert_ne!(there.ppid, pa.ppid);
}

#[tokio::test]
async fn repeating_a_login_command_id_is_idempotent() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let meta = system();
    let a = cmds
        .register_login(&meta, &cert("02"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = cmds.store().all_events().len();
    let b = cmds
        .register_login(&meta, &cert("02"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.ppid, b.ppid);
    assert_eq!(cmds.store().all_events().len(), n);
}

#[tokio::test]
async fn login_is_refused_for_revoked_certificates_and_inactive_relying_parties() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    cmds.mark_certificate_revoked(&system(), &cert("03"), "keyCompromise")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_code(
        cmds.register_login(&system(), &cert("03"), &rp).await,
        ErrorCode::CERTIFICATE_REVOKED,
    );
    assert_code(
        cmds.mark_certificate_revoked(&system(), &cert("03"), "again")
            .await,
        ErrorCode::CERTIFICATE_ALREADY_REVOKED,
    );

    cmds.suspend_relying_party(&operator("op-1"), &rp, "audit")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_code(
        cmds.register_login(&system(), &cert("04"), &rp).await,
        ErrorCode::RP_SUSPENDED,
    );
    cmds.resume_relying_party(&operator("op-1"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cmds
        .register_login(&system(), &cert("04"), &rp)
        .await
        .is_ok());
    cmds.retire_relying_party(&operator("op-1"), &rp, "merged")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_code(
        cmds.register_login(&system(), &cert("04"), &rp).await,
        ErrorCode::RP_RETIRED,
    );
    assert_code(
        cmds.register_login(&system(), &cert("04"), &rp_id("nobody"))
            .await,
        ErrorCode::RP_NOT_FOUND,
    );
}

#[tokio::test]
async fn operators_and_other_relying_parties_cannot_log_in() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let other = register_rp(&cmds, "shop-1", "shop1", RpKind::PrivateBusiness).await;
    assert_code(
        cmds.register_login(&operator("op-1"), &cert("05"), &rp)
            .await,
        ErrorCode::NOT_AUTHORISED,
    );
    assert_code(
        cmds.register_login(&as_rp(&other), &cert("05"), &rp).await,
        ErrorCode::NOT_AUTHORISED,
    );
    assert!(cmds
        .register_login(&as_rp(&rp), &cert("05"), &rp)
        .await
        .is_ok());
}

#[tokio::test]
async fn renewal_keeps_the_subject_and_its_ppids() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let old = cmds
        .register_login(&system(), &cert("10"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = cmds
        .link_renewal(&system(), &cert("10"), &cert("11"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.subject, old.subject);
    let new = cmds
        .register_login(&system(), &cert("11"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (new.subject, new.ppid, new.newly_issued),
        (old.subject, old.ppid, false)
    );
    // Repeating the link is a no-op, not an error.
    let n = cmds.store().all_events().len();
    assert!(cmds
        .link_renewal(&system(), &cert("10"), &cert("11"))
        .await
        .is_ok());
    assert_eq!(cmds.store().all_events().len(), n);
    let state = cmds
        .load_certificate(&cert("11"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.renewed_from, Some(cert("10")));
    assert_eq!(
        cmds.load_subject(old.subject)
            .await
            .map(|s| s.certificates.len())
            .ok(),
        Some(2)
    );
}

#[tokio::test]
async fn renewal_rejections() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    assert_code(
        cmds.link_renewal(&system(), &cert("20"), &cert("21")).await,
        ErrorCode::CERTIFICATE_NOT_LINKED,
    );
    cmds.register_login(&system(), &cert("20"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cmds.register_login(&system(), &cert("22"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // 22 already belongs to another subject: no silent merge.
    assert_code(
        cmds.link_renewal(&system(), &cert("20"), &cert("22")).await,
        ErrorCode::CERTIFICATE_ALREADY_LINKED,
    );
    assert_code(
        cmds.link_renewal(&as_rp(&rp), &cert("20"), &cert("23"))
            .await,
        ErrorCode::NOT_AUTHORISED,
    );
    cmds.link_renewal(&system(), &cert("20"), &cert("23"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_code(
        cmds.link_renewal(&system(), &cert("20"), &cert("24")).await,
        ErrorCode::CERTIFICATE_ALREADY_RENEWED,
    );
    assert_code(
        cmds.link_renewal(&system(), &cert("20"), &cert("20")).await,
        ErrorCode::INVALID_INPUT,
    );
}

#[tokio::test]
async fn a_revoked_ppid_is_replaced_by_a_new_one_on_the_next_registration() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let first = cmds
        .register_login(&system(), &cert("30"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cmds.revoke_ppid(&as_citizen(first.subject), &first.ppid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cmds.active_ppid(first.subject, &rp).await.ok().flatten(),
        None
    );
    let rec = cmds
        .load_ppid(&first.ppid)
        .await
        .ok()
        .flatten()
        .map(|p| p.status);
    assert_eq!(
        rec,
        Some(PpidStatus::Revoked {
            by: RevokedBy::Citizen
        })
    );
    assert_code(
        cmds.revoke_ppid(&as_rp(&rp), &first.ppid).await,
        ErrorCode::PPID_ALREADY_REVOKED,
    );
    let second = cmds
        .register_login(&system(), &cert("30"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(second.newly_issued);
    assert_eq!(second.subject, first.subject);
    assert_ne!(second.ppid, first.ppid);
    cmds.revoke_ppid(&as_rp(&rp), &second.ppid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn only_the_ppids_own_relying_party_or_citizen_may_revoke_it() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let other = register_rp(&cmds, "shop-2", "shop2", RpKind::PrivateBusiness).await;
    let l = cmds
        .register_login(&system(), &cert("40"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stranger = mykey_domain::SubjectId(uuid::Uuid::from_u128(7));
    assert_code(
        cmds.revoke_ppid(&as_rp(&other), &l.ppid).await,
        ErrorCode::NOT_AUTHORISED,
    );
    assert_code(
        cmds.revoke_ppid(&as_citizen(stranger), &l.ppid).await,
        ErrorCode::NOT_AUTHORISED,
    );
    assert_code(
        cmds.revoke_ppid(&operator("op-1"), &l.ppid).await,
        ErrorCode::NOT_AUTHORISED,
    );
    // A suspended RP can do nothing, including revoking its own PPIDs.
    cmds.suspend_relying_party(&operator("op-1"), &rp, "audit")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_code(
        cmds.revoke_ppid(&as_rp(&rp), &l.ppid).await,
        ErrorCode::RP_SUSPENDED,
    );
}

#[tokio::test]
async fn events_carry_the_command_metadata() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let meta = system()
        .caused_by(uuid::Uuid::from_u128(77), uuid::Uuid::from_u128(78))
        .from_addr("192.0.2.1");
    cmds.register_login(&meta, &cert("50"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events = cmds.store().all_events();
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.metadata.command_id == meta.command_id)
        .collect();
    assert_eq!(mine.len(), 4);
    for e in mine {
        assert_eq!(e.metadata, meta.event_metadata(None));
        assert_eq!(e.metadata.actor_role, "system");
    }
}

#[tokio::test]
async fn a_citizen_role_cannot_record_a_login() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let s = mykey_domain::SubjectId(uuid::Uuid::from_u128(8));
    assert_code(
        cmds.register_login(&as_citizen(s), &cert("60"), &rp).await,
        ErrorCode::NOT_AUTHORISED,
    );
}

#[tokio::test]
async fn repeating_a_ppid_revocation_with_the_same_command_id_is_a_no_op() {
    let (cmds, _) = setup();
    let rp = chiyoda(&cmds).await;
    let l = cmds
        .register_login(&system(), &cert("61"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let meta = as_rp(&rp);
    let first = cmds
        .revoke_ppid(&meta, &l.ppid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = cmds.store().all_events().len();
    // The PPID's and the subject's events: the position is the last of them.
    assert_eq!(first, n as u64);
    cmds.register_login(&system(), &cert("62"), &rp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = cmds.store().all_events().len();
    let again = cmds
        .revoke_ppid(&meta, &l.ppid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cmds.store().all_events().len(), n);
    assert_eq!(again, first, "a repeat answers the first position");
    assert_code(
        cmds.revoke_ppid(&as_rp(&rp), &l.ppid).await,
        ErrorCode::PPID_ALREADY_REVOKED,
    );
}
