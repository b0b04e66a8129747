//! The server side: auditor endpoints and credentials, signed checkpoints, their keys and
//! rotation, the append-only tables, the periodic and CLI signers.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_endpoints_refuse_expired_and_role_less_credentials_and_page() {
    let s = server().await;
    for (token, status, code) in [
        (s.expired.as_str(), 401, "CREDENTIAL_EXPIRED"),
        (s.operator.as_str(), 403, "ROLE_REQUIRED"),
        ("", 401, "OPERATOR_UNAUTHORIZED"),
        ("not-a-token", 401, "OPERATOR_UNAUTHORIZED"),
    ] {
        for path in ["/v1/audit/checkpoints", "/v1/audit/checkpoint-keys"] {
            let (got, body) = s.call("GET", path, token).await;
            assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{path}");
        }
    }
    // Signing on demand: auditor or operator; an expired credential is still refused.
    let (got, body) = s.call("POST", "/v1/audit/checkpoints", &s.expired).await;
    assert_eq!(
        (got, body["code"].as_str()),
        (401, Some("CREDENTIAL_EXPIRED"))
    );
    let (got, body) = s.call("POST", "/v1/audit/checkpoints", &s.operator).await;
    assert_eq!(got, 201, "{body}");
    assert_eq!(body["size"], N);
    s.sign().await;
    s.sign().await;
    // The operator endpoints answer the same codes; an auditor-only credential never
    // reaches them.
    for (token, status, code) in [
        (s.auditor.as_str(), 403, "ROLE_REQUIRED"),
        (s.expired.as_str(), 401, "CREDENTIAL_EXPIRED"),
        ("not-a-token", 401, "OPERATOR_UNAUTHORIZED"),
    ] {
        let (got, body) = s
            .call("POST", "/v1/operator/signing-keys/rotate", token)
            .await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)));
    }

    let (got, page1) = s
        .call("GET", "/v1/audit/checkpoints?limit=2", &s.auditor)
        .await;
    assert_eq!(got, 200, "{page1}");
    assert_eq!(page1["items"].as_array().map(Vec::len), Some(2));
    let cursor = page1["next_cursor"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "{page1}");
    let (_, page2) = s
        .call(
            "GET",
            &format!("/v1/audit/checkpoints?limit=2&cursor={cursor}"),
            &s.auditor,
        )
        .await;
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=501", "cursor=nope", "colour=blue"] {
        let (got, body) = s
            .call("GET", &format!("/v1/audit/checkpoints?{bad}"), &s.auditor)
            .await;
        assert_eq!(
            (got, body["code"].as_str()),
            (400, Some("INVALID_QUERY")),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_verifies_independently_and_survives_key_rotation() {
    let s = server().await;
    let note = s.sign().await;
    let keys = s.verifier_keys().await;
    assert_eq!(keys.len(), 1);

    // An independent path: split the note and the verifier key by hand, recompute the C2SP
    // key id with SHA-256, and verify with ring's UnparsedPublicKey.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts = keys[0].splitn(3, '+');
    let (name, id_hex, key_b64) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    assert_eq!(name, "mykey.test/log");
    let raw_key = b64.decode(key_b64).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((raw_key[0], raw_key.len()), (0x01, 33));
    let mut id_input = format!("{name}\n").into_bytes();
    id_input.extend_from_slice(&raw_key);
    let digest = ring::digest::digest(&ring::digest::SHA256, &id_input);
    assert_eq!(hex_of(&digest.as_ref()[..4]), id_hex);
    let split = note.rfind("\n\n").unwrap_or_else(|| panic!("{note}"));
    let (text, sig_line) = (&note[..split + 1], &note[split + 2..]);
    let sig_b64 = sig_line
        .strip_prefix(&format!("\u{2014} {name} "))
        .and_then(|l| l.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{sig_line}"));
    let sig = b64.decode(sig_b64).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex_of(&sig[..4]), id_hex);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &raw_key[1..])
        .verify(text.as_bytes(), &sig[4..])
        .unwrap_or_else(|_| panic!("the signature does not verify"));
    // The text: origin, size = head, base64 of the hash at the head, time.
    let head = s
        .store
        .read_all(N, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    let (size, hash) = (N.to_string(), b64.encode(head[0].hash.0));
    assert_eq!(lines[..3], [name, size.as_str(), hash.as_str()]);
    assert!(lines[3].starts_with("time "), "{text}");

    // Rotation: a new key signs from now on; the old one stays listed with its end, and the
    // old checkpoint still opens with it.
    let signer =
        mykey_api::audit::CheckpointSigner::start(s.db.config(), "mykey.test/log".into(), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    signer.rotate().await.unwrap_or_else(|e| panic!("{e}"));
    let newer = s.sign().await;
    let (_, listed) = s.call("GET", "/v1/audit/checkpoint-keys", &s.auditor).await;
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{listed}");
    assert!(items[0]["valid_until"].is_string() && items[1]["valid_until"].is_null());
    let all: Vec<_> = s
        .verifier_keys()
        .await
        .iter()
        .map(|k| mykey_store::checkpoint::VerifierKey::parse(k).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    for n in [&note, &newer] {
        mykey_store::checkpoint::open(n, &all).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        mykey_store::checkpoint::open(&newer, &all[..1]).is_err(),
        "the new checkpoint is not signed by the old key"
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_their_keys_are_append_only() {
    let s = server().await;
    s.sign().await;
    let client = s.db.client().await;
    for table in ["audit_checkpoint", "audit_checkpoint_key"] {
        for sql in [
            format!("UPDATE {table} SET id = id"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table} CASCADE"),
        ] {
            let err = client
                .batch_execute(&sql)
                .await
                .err()
                .unwrap_or_else(|| panic!("{sql} was allowed"));
            assert!(
                err.to_string().contains("append-only")
                    || format!("{err:?}").contains("append-only"),
                "{sql}: {err:?}"
            );
        }
    }
    let (_, body) = s.call("GET", "/v1/audit/checkpoints", &s.auditor).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_signs_a_grown_log_at_start_and_the_cli_signs_on_demand() {
    let s = server().await;
    // A second server on the same database, signing periodically: its first round runs at
    // start and finds the log grown since the last checkpoint (none).
    let env = [
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_CHECKPOINT_INTERVAL_SECS", "10".to_owned()),
        ("MYKEY_CHECKPOINT_ORIGIN", "mykey.test/log".to_owned()),
    ];
    let settings = Settings::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let app = Application::build(&settings, s.db.config())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(app.run_until_stopped());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let items = loop {
        let (_, body) = s.call("GET", "/v1/audit/checkpoints", &s.auditor).await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() || std::time::Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["size"], N);

    // `mykey-server sign-checkpoint` and `rotate-checkpoint-key`.
    let signed = mykey_api::audit::run_cli(&settings, &s.db.config(), "sign-checkpoint")
        .await
        .unwrap_or_else(|| panic!("not a checkpoint command"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(signed["size"], N);
    let rotated = mykey_api::audit::run_cli(&settings, &s.db.config(), "rotate-checkpoint-key")
        .await
        .unwrap_or_else(|| panic!("not a checkpoint command"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rotated["keys"].as_array().map(Vec::len),
        Some(2),
        "{rotated}"
    );
    assert!(
        mykey_api::audit::run_cli(&settings, &s.db.config(), "load-crl")
            .await
            .is_none()
    );
    // new-operator-token with roles and expiry (no database needed).
    let args: Vec<String> = [
        "new-operator-token",
        "--id",
        "audrey",
        "--roles",
        "auditor",
        "--expires",
        "2999-01-01",
    ]
    .map(str::to_owned)
    .to_vec();
    assert!(matches!(mykey_api::cli::run_offline(&args), Some(Ok(()))));
    let bad: Vec<String> = ["new-operator-token", "--id", "audrey", "--roles", "root"]
        .map(str::to_owned)
        .to_vec();
    assert!(matches!(mykey_api::cli::run_offline(&bad), Some(Err(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_encryption_key_the_checkpoint_key_is_stored_sealed() {
    let s = server().await;
    let kek = s.path("kek");
    mykey_api::auth::keywrap::KeyWrap::create_file(&kek).unwrap_or_else(|e| panic!("{e}"));
    let origin = "sealed.test/log".to_owned();
    let sealed =
        mykey_api::audit::CheckpointSigner::start(s.db.config(), origin.clone(), Some(&kek))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let cp = sealed.sign_now().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cp.size, N);
    let row =
        s.db.client()
            .await
            .query_one(
                "SELECT private_pkcs8 FROM audit_checkpoint_key WHERE name = $1",
                &[&origin],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let stored: Vec<u8> = row.get(0);
    assert!(stored.starts_with(b"mykey-kw1"), "not sealed");
    // Without the KEK the sealed key does not open, and the signer refuses to start rather
    // than sign with a key of its own making.
    let err = mykey_api::audit::CheckpointSigner::start(s.db.config(), origin, None)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("MYKEY_KEY_ENCRYPTION_KEY_FILE"), "{err}");
}
