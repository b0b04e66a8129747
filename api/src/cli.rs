//! Operator subcommands of `mykey-server`, run against the same `DATABASE_URL` as the server:
//!
//! ```text
//! mykey-server register-rp --id ID --kind KIND --code CODE --name NAME --jwk FILE
//! mykey-server rotate-rp-key --id ID --jwk FILE
//! mykey-server suspend-rp --id ID        (also resume-rp, retire-rp)
//! mykey-server load-crl --file CRL.der
//! mykey-server import-renewals --file LINKS.csv
//! mykey-server rotate-signing-key
//! mykey-server new-operator-token --id ID [--roles operator,approver,auditor] [--expires YYYY-MM-DD]
//! mykey-server sign-checkpoint | rotate-checkpoint-key
//! mykey-server new-key-encryption-key --file PATH
//! ```
//!
//! They call the same code as the operator endpoints; a running server picks up CRLs and
//! signing keys within [`crate::auth::MAINTENANCE_INTERVAL_SECS`].

use crate::auth::identity::{Actor, RpStatus};
use crate::auth::jws::VerifyKey;
use crate::auth::Auth;
use crate::config::Settings;
use std::collections::HashMap;
use std::path::Path;

pub const USAGE: &str = "usage: mykey-server [COMMAND]
  (no command)                                         run the server
  register-rp --id ID --kind KIND --code CODE --name NAME --jwk FILE
  rotate-rp-key --id ID --jwk FILE
  suspend-rp --id ID | resume-rp --id ID | retire-rp --id ID
  load-crl --file CRL.der
  import-renewals --file LINKS.csv                     lines: issuer,old serial,new serial
  rotate-signing-key
  new-operator-token --id ID [--roles R,R] [--expires YYYY-MM-DD]
                                                       a token for ID and its MYKEY_OPERATOR_TOKENS_FILE line
                                                       (default role operator, expiry in 90 days)
  sign-checkpoint                                      sign the log's head now (C2SP signed note)
  rotate-checkpoint-key                                a new checkpoint key; old ones stay listed
  new-key-encryption-key --file PATH                  a MYKEY_KEY_ENCRYPTION_KEY_FILE (mode 0600)";

/// Commands this module handles.
pub const COMMANDS: &[&str] = &[
    "register-rp",
    "rotate-rp-key",
    "suspend-rp",
    "resume-rp",
    "retire-rp",
    "load-crl",
    "import-renewals",
    "rotate-signing-key",
    "sign-checkpoint",
    "rotate-checkpoint-key",
];

type BoxError = Box<dyn std::error::Error>;

fn flags(args: &[String]) -> Result<HashMap<String, String>, BoxError> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {a:?}\n{USAGE}"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        out.insert(name.to_owned(), value.clone());
    }
    Ok(out)
}

fn need<'a>(f: &'a HashMap<String, String>, name: &str) -> Result<&'a str, BoxError> {
    f.get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("--{name} is required\n{USAGE}").into())
}

fn read_jwk(path: &str) -> Result<serde_json::Value, BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let jwk: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    VerifyKey::from_jwk(&jwk).map_err(|e| format!("{path}: {e}"))?;
    Ok(jwk)
}

fn problem(p: crate::errors::Problem) -> BoxError {
    format!("{}: {}", p.code, p.detail.unwrap_or(p.title)).into()
}

fn actor() -> Actor {
    Actor {
        actor_id: std::env::var("USER").unwrap_or_else(|_| "operator-cli".to_owned()),
        role: "operator".to_owned(),
        correlation_id: uuid::Uuid::new_v4(),
        client_addr: None,
    }
}

/// Runs `args` if it is a command that needs no database (making credentials); `None` when it
/// is not one. The server binary tries these before it starts or connects to PostgreSQL.
pub fn run_offline(args: &[String]) -> Option<Result<(), BoxError>> {
    let (cmd, rest) = args.split_first()?;
    let out = match cmd.as_str() {
        "new-operator-token" => (|| {
            let f = flags(rest)?;
            Ok(crate::auth::operators::new_operator_token_command(
                need(&f, "id")?,
                f.get("roles").map(String::as_str),
                f.get("expires").map(String::as_str),
                chrono::Utc::now().date_naive(),
            )?)
        })(),
        "new-key-encryption-key" => (|| {
            let f = flags(rest)?;
            let path = need(&f, "file")?;
            crate::auth::keywrap::KeyWrap::create_file(Path::new(path))?;
            Ok(serde_json::json!({ "key_encryption_key_file": path }))
        })(),
        _ => return None,
    };
    Some(out.map(|v: serde_json::Value| println!("{v}")))
}

/// Runs one subcommand (`args[0]` is the command). Prints a JSON result on success.
pub async fn run(
    settings: &Settings,
    pg: tokio_postgres::Config,
    args: &[String],
) -> Result<(), BoxError> {
    let (cmd, rest) = args.split_first().ok_or(USAGE)?;
    let f = flags(rest)?;
    if let Some(out) = crate::audit::run_cli(settings, &pg, cmd).await {
        println!("{}", out?);
        return Ok(());
    }
    let store = mykey_store::pg::PgEventStore::connect(pg.clone(), Default::default()).await?;
    let identity = crate::auth::identity::default_identity(&store);
    let auth = Auth::build(settings.auth.clone(), pg, identity).await?;
    let who = actor();
    let out = match cmd.as_str() {
        "register-rp" => {
            let jwk = read_jwk(need(&f, "jwk")?)?;
            let id = need(&f, "id")?;
            auth.identity
                .register_relying_party(
                    id,
                    need(&f, "kind")?,
                    need(&f, "code")?,
                    need(&f, "name")?,
                    jwk,
                    &who,
                )
                .await?;
            serde_json::json!({ "registered": id })
        }
        "rotate-rp-key" => {
            let jwk = read_jwk(need(&f, "jwk")?)?;
            let id = need(&f, "id")?;
            auth.identity
                .rotate_relying_party_key(id, jwk, &who)
                .await?;
            serde_json::json!({ "rotated": id })
        }
        "suspend-rp" | "resume-rp" | "retire-rp" => {
            let status = match cmd.as_str() {
                "suspend-rp" => RpStatus::Suspended,
                "resume-rp" => RpStatus::Active,
                _ => RpStatus::Retired,
            };
            let id = need(&f, "id")?;
            auth.identity
                .set_relying_party_status(id, status, &who)
                .await?;
            serde_json::json!({ "relying_party": id, "status": format!("{status:?}") })
        }
        "load-crl" => {
            let path = need(&f, "file")?;
            let der = std::fs::read(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
            serde_json::to_value(auth.load_crl(&der, &who).await.map_err(problem)?)?
        }
        "import-renewals" => {
            let path = need(&f, "file")?;
            let csv = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            serde_json::to_value(auth.import_renewals(&csv, &who).await.map_err(problem)?)?
        }
        "rotate-signing-key" => {
            let kid = auth.rotate_signing_key().await.map_err(problem)?;
            serde_json::json!({ "kid": kid })
        }
        other => return Err(format!("unknown command {other:?}\n{USAGE}").into()),
    };
    println!("{out}");
    Ok(())
}
