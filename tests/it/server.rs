//! The server as a whole: startup, migrations, health endpoints.

use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_tests::TestDb;

async fn spawn_app(db: &TestDb) -> String {
    let settings =
        Settings::from_lookup(|k| (k == "MYKEY_LISTEN").then(|| "127.0.0.1:0".to_owned()))
            .unwrap_or_else(|e| panic!("{e}"));
    let app = Application::build(&settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    base
}

#[tokio::test]
async fn health_and_readiness_answer_after_migrations() {
    let db = TestDb::create().await;
    let base = spawn_app(&db).await;
    let client = reqwest::Client::new();
    for (path, field, want) in [
        ("/healthz", "status", serde_json::json!("ok")),
        ("/readyz", "log_head", serde_json::json!(0)),
    ] {
        let resp = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(body[field], want, "{path}");
    }
}
