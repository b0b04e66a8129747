//! `mykey-replay`: export, verify (file and PostgreSQL) with each tampering at its position,
//! history, usage errors.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verifies_and_each_tampering_of_the_file_is_found_at_its_position() {
    let s = server().await;
    let note = s.sign().await;
    let keys = s.verifier_keys().await;
    let file = s.export("log.ndjson").await;

    // Round trip: the export verifies against its manifest's signed checkpoint.
    let v = verify(&file_args(&file, &keys)).await;
    assert!(v.intact, "{v:?}");
    assert_eq!((v.report.verified, v.checkpoints_matched), (N, 1));
    assert_eq!(v.manifest_checkpoint_verified, Some(true));

    // Each tampering, at the exact position (line k holds position k).
    let edited = tampered(&file, "edited.ndjson", |l| {
        let mut e = envelope(&l[6]);
        e.payload = "{\"points\":1000000}".into();
        l[6] = serde_json::to_string(&e).unwrap_or_default();
    });
    let v = verify(&file_args(&edited, &keys)).await;
    assert!(matches!(
        broken_at(&v),
        (7, ChainBreakKind::HashMismatch { .. })
    ));
    assert_eq!(v.line, Some(7));

    let deleted = tampered(&file, "deleted.ndjson", |l| {
        l.remove(4);
    });
    let v = verify(&file_args(&deleted, &keys)).await;
    assert_eq!(
        broken_at(&v),
        (5, ChainBreakKind::Missing { found: Some(6) })
    );

    let swapped = tampered(&file, "swapped.ndjson", |l| l.swap(9, 10));
    let v = verify(&file_args(&swapped, &keys)).await;
    assert_eq!(broken_at(&v), (10, ChainBreakKind::Reordered { found: 11 }));

    let duplicated = tampered(&file, "duplicated.ndjson", |l| {
        let copy = l[2].clone();
        l.insert(3, copy);
    });
    let v = verify(&file_args(&duplicated, &keys)).await;
    assert_eq!(
        broken_at(&v),
        (3, ChainBreakKind::Duplicated { repeated_at: 4 })
    );

    // The tail cut off: the manifest sees it ...
    let truncated = tampered(&file, "truncated.ndjson", |l| l.truncate(l.len() - 2));
    let v = verify(&file_args(&truncated, &keys)).await;
    assert_eq!(
        broken_at(&v),
        (N - 1, ChainBreakKind::Truncated { expected_last: N })
    );
    // ... and without the manifest, a saved checkpoint sees it.
    let saved = s.save("checkpoint.txt", &note);
    let mut args = file_args(&truncated, &keys);
    args.no_manifest = true;
    args.checkpoints = vec![saved.clone()];
    let v = verify(&args).await;
    assert_eq!(
        broken_at(&v),
        (N - 1, ChainBreakKind::Truncated { expected_last: N })
    );

    // The newest events rewritten with every hash recomputed, the manifest's counts and hashes
    // adjusted to match: the chain alone is fooled, the signed checkpoint is not.
    let forged = tampered(&file, "forged.ndjson", |l| {
        let mut events: Vec<EventEnvelope> = l.iter().map(|x| envelope(x)).collect();
        forge_tail(&mut events, l.len() - 3);
        *l = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
    });
    let mpath = mykey_replay::manifest::Manifest::path_for(&forged);
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    let last = envelope(
        lines_of(&forged)
            .last()
            .map(String::as_str)
            .unwrap_or_default(),
    );
    manifest["last_hash"] = Value::String(last.hash.to_hex());
    std::fs::write(&mpath, manifest.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut no_checkpoint = file_args(&forged, &[]);
    no_checkpoint.no_manifest = true;
    assert!(
        verify(&no_checkpoint).await.intact,
        "a chain alone cannot see it"
    );
    let v = verify(&file_args(&forged, &keys)).await;
    assert!(
        matches!(broken_at(&v), (p, ChainBreakKind::CheckpointMismatch { .. }) if p == N),
        "{v:?}"
    );

    // A forged manifest: its checkpoint note altered (claims a longer log).
    let forged_manifest = tampered(&file, "forged-manifest.ndjson", |_| {});
    let mpath = mykey_replay::manifest::Manifest::path_for(&forged_manifest);
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    let note_text = manifest["checkpoint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    manifest["checkpoint"] =
        Value::String(note_text.replacen(&format!("\n{N}\n"), &format!("\n{}\n", N + 5), 1));
    std::fs::write(&mpath, manifest.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let v = verify(&file_args(&forged_manifest, &keys)).await;
    assert!(!v.intact);
    assert_eq!(v.manifest_checkpoint_verified, Some(false));
    assert!(
        v.problem
            .as_deref()
            .unwrap_or_default()
            .contains("forged or altered"),
        "{v:?}"
    );

    // A corrupt line is reported with its number.
    let corrupt = tampered(&file, "corrupt.ndjson", |l| l[2] = "{\"half\": ".into());
    let v = verify(&file_args(&corrupt, &keys)).await;
    assert_eq!(v.line, Some(3));
    assert!(
        v.problem
            .as_deref()
            .unwrap_or_default()
            .starts_with("line 3:"),
        "{v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_from_postgres_against_a_saved_checkpoint_catches_rewritten_and_cut_tails() {
    let s = server().await;
    let note = s.sign().await;
    let keys = s.verifier_keys().await;
    let saved = s.save("checkpoint.txt", &note);
    let db_args = |checkpoints: Vec<PathBuf>| VerifyArgs {
        database_url: Some(s.db.url()),
        file: None,
        kafka: None,
        topic_prefix: mykey_projections::kafka::DEFAULT_TOPIC_PREFIX.into(),
        manifest: None,
        no_manifest: false,
        checkpoints,
        public_keys: keys.clone(),
        from: None,
        to: None,
        json: false,
    };
    let v = verify(&db_args(vec![saved.clone()])).await;
    assert!(v.intact && v.checkpoints_matched == 1, "{v:?}");

    // Someone with database credentials rewrites the newest three events and recomputes every
    // hash after them.
    let mut events = s
        .store
        .read_all(1, N as usize)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    forge_tail(&mut events, (N - 3) as usize);
    let client = s.db.client().await;
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for e in &events[(N - 3) as usize..] {
        client
            .execute(
                "UPDATE events SET payload = $1, prev_hash = $2, hash = $3 WHERE global_position = $4",
                &[
                    &e.payload,
                    &e.prev_hash.0.as_slice(),
                    &e.hash.0.as_slice(),
                    &(e.global_position as i64),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        verify(&db_args(vec![])).await.intact,
        "the chain alone is fooled"
    );
    let v = verify(&db_args(vec![saved.clone()])).await;
    assert!(
        matches!(broken_at(&v), (p, ChainBreakKind::CheckpointMismatch { since: 1, .. }) if p == N),
        "{v:?}"
    );

    // The tail deleted: the saved checkpoint says the log reached N.
    client
        .execute(
            "DELETE FROM events WHERE global_position > $1",
            &[&((N - 2) as i64)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v = verify(&db_args(vec![saved])).await;
    assert_eq!(
        broken_at(&v),
        (N - 1, ChainBreakKind::Truncated { expected_last: N })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_a_stream_with_compensating_events_marked() {
    let s = server().await;
    let stream = StreamId::new("audit", 0).unwrap_or_else(|e| panic!("{e}"));
    let patch = uuid::Uuid::new_v4();
    let mut req = single(&stream, ExpectedVersion::Exact(EVENTS_PER_STREAM as u64), 1);
    req.metadata.patch_id = Some(patch);
    s.store.append(req).await.unwrap_or_else(|e| panic!("{e}"));
    let file = s.export("history.ndjson").await;
    for source in ["--database-url", "--file"] {
        let value = if source == "--file" {
            file.display().to_string()
        } else {
            s.db.url()
        };
        for json in [false, true] {
            let mut argv = vec![
                "mykey-replay",
                "history",
                "--stream",
                stream.as_str(),
                source,
                &value,
            ];
            if json {
                argv.push("--json");
            }
            let cli = mykey_replay::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
            let mut out = Vec::new();
            let outcome = mykey_replay::run(cli, &mut out)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(outcome, mykey_replay::Outcome::Done);
            let text = String::from_utf8(out).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            // The export was taken before the last checkpoint only if one existed; none was
            // signed here, so it runs to the head and holds the compensating event too.
            assert_eq!(
                lines.len(),
                EVENTS_PER_STREAM + 1,
                "{source} {json}: {text}"
            );
            if json {
                let last: Value =
                    serde_json::from_str(lines[EVENTS_PER_STREAM]).unwrap_or_default();
                assert_eq!(last["compensating"], true);
                assert_eq!(last["patch_id"], patch.to_string());
                assert_eq!(last["actor_role"], "operator");
            } else {
                assert!(
                    lines[EVENTS_PER_STREAM].contains(&format!("[compensating, patch {patch}]"))
                );
                assert!(!lines[0].contains("compensating"), "{text}");
            }
        }
    }
}

#[tokio::test]
async fn bad_arguments_are_usage_errors() {
    for argv in [
        vec!["mykey-replay"],
        vec!["mykey-replay", "verify"],
        vec![
            "mykey-replay",
            "verify",
            "--file",
            "x",
            "--database-url",
            "y",
        ],
        vec!["mykey-replay", "export", "--output", "x"],
        vec!["mykey-replay", "verify", "--file", "x", "--from", "0"],
        vec!["mykey-replay", "frobnicate"],
    ] {
        assert!(
            mykey_replay::Cli::try_parse_from(&argv).is_err(),
            "{argv:?}"
        );
    }
    // replay and diff: tests/it/replay_projections.rs.
    // A checkpoint without a key to check it is refused before anything is read.
    let cli = mykey_replay::Cli::try_parse_from([
        "mykey-replay",
        "verify",
        "--file",
        "x",
        "--checkpoint",
        "c",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let err = mykey_replay::run(cli, &mut Vec::new()).await;
    assert!(
        matches!(err, Err(mykey_replay::ToolError::Usage(_))),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_envelope_cannot_hold_fails_verification_at_its_position() {
    let s = server().await;
    s.db.client()
        .await
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE events SET stream_id = 'Not A Stream' WHERE global_position = 3",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let args = VerifyArgs {
        database_url: Some(s.db.url()),
        file: None,
        kafka: None,
        topic_prefix: mykey_projections::kafka::DEFAULT_TOPIC_PREFIX.into(),
        manifest: None,
        no_manifest: false,
        checkpoints: vec![],
        public_keys: vec![],
        from: None,
        to: None,
        json: true,
    };
    let mut out = Vec::new();
    let v = mykey_replay::verify::run(&args, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.outcome(), mykey_replay::Outcome::Failed);
    let report: Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["intact"], false);
    assert!(
        report["problem"]
            .as_str()
            .unwrap_or_default()
            .starts_with("the row at position 3 is unreadable"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_chosen_streams_checks_each_event_and_says_it_cannot_prove_completeness() {
    let s = server().await;
    let output = s.path("stream.ndjson");
    let db = mykey_replay::db::Db::connect(&s.db.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stream = StreamId::new("audit", 2).unwrap_or_else(|e| panic!("{e}"));
    let manifest = mykey_replay::export::export(
        &db,
        &ExportArgs {
            database_url: s.db.url(),
            from: 1,
            to: None,
            streams: vec![stream.to_string()],
            categories: vec![],
            output: output.clone(),
            manifest: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.count, EVENTS_PER_STREAM as u64);
    assert!(manifest.checkpoint.is_none());
    assert!(lines_of(&output)
        .iter()
        .all(|l| envelope(l).stream_id == stream));
    let v = verify(&file_args(&output, &[])).await;
    assert!(v.intact, "{v:?}");
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("completeness cannot be proven")),
        "{v:?}"
    );

    let edited = tampered(&output, "stream-edited.ndjson", |l| {
        let mut e = envelope(&l[1]);
        e.metadata.actor_id = "someone-else".into();
        l[1] = serde_json::to_string(&e).unwrap_or_default();
    });
    let v = verify(&file_args(&edited, &[])).await;
    let position = envelope(&lines_of(&output)[1]).global_position;
    assert!(
        matches!(broken_at(&v), (p, ChainBreakKind::HashMismatch { .. }) if p == position),
        "{v:?}"
    );
    let cut = tampered(&output, "stream-cut.ndjson", |l| l.truncate(2));
    let v = verify(&file_args(&cut, &[])).await;
    assert!(
        matches!(broken_at(&v), (_, ChainBreakKind::Truncated { expected_last }) if Some(expected_last) == manifest.last_position),
        "{v:?}"
    );
    // Bad selections are usage errors.
    for (streams, categories) in [
        (vec!["Not A Stream".to_owned()], vec![]),
        (vec![], vec!["Bad-Cat".to_owned()]),
    ] {
        let err = mykey_replay::export::export(
            &db,
            &ExportArgs {
                database_url: s.db.url(),
                from: 1,
                to: None,
                streams,
                categories,
                output: s.path("never.ndjson"),
                manifest: None,
            },
        )
        .await;
        assert!(
            matches!(err, Err(mykey_replay::ToolError::Usage(_))),
            "{err:?}"
        );
    }
}
