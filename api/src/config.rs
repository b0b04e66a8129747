//! Configuration from the environment. Secrets are never printed: `Debug` of [`Settings`]
//! redacts the database URL's password.

use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Clone)]
pub struct Settings {
    /// `MYKEY_LISTEN`, default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// `MYKEY_METRICS_LISTEN`: when set, `/metrics` is served only there (e.g. an internal
    /// address), not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `DATABASE_URL`, the server's runtime connection (a login role in the group role
    /// `mykey_runtime`); when absent a private cluster under `var_dir` is used.
    pub database_url: Option<String>,
    /// `MYKEY_OWNER_DATABASE_URL`, the role that owns the tables and runs the migrations.
    /// Used only at start-up; the server never serves requests over it.
    pub owner_database_url: Option<String>,
    /// `MYKEY_VAR_DIR`, default `./var`.
    pub var_dir: PathBuf,
    /// Citizen-card login (`MYKEY_TRUST_ANCHORS`, `MYKEY_ISSUER`, ...).
    pub auth: crate::auth::config::AuthSettings,
    /// Signed checkpoints (`MYKEY_CHECKPOINT_INTERVAL_SECS`, `MYKEY_CHECKPOINT_ORIGIN`).
    pub audit: crate::audit::AuditSettings,
    /// `KAFKA_BROKERS` and the other `KAFKA_*`; `None`: no Kafka at all.
    pub kafka: Option<mykey_projections::kafka::KafkaSettings>,
    /// The citizen door (`MYKEY_CITIZEN_RP`).
    pub citizen: crate::routes::citizen::CitizenSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field(
                "owner_database_url",
                &self.owner_database_url.as_ref().map(|_| "<set>"),
            )
            .field("var_dir", &self.var_dir)
            .field("auth", &self.auth)
            .field("audit", &self.audit)
            .field("kafka", &self.kafka)
            .field("citizen", &self.citizen)
            .finish()
    }
}

pub use mykey_login::config::ConfigError;

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let listen_raw = get("MYKEY_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen =
            listen_raw
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                    name: "MYKEY_LISTEN",
                    value: listen_raw.clone(),
                    reason: e.to_string(),
                })?;
        let metrics_listen =
            match get("MYKEY_METRICS_LISTEN").filter(|s| !s.trim().is_empty()) {
                None => None,
                Some(raw) => Some(raw.parse().map_err(|e: std::net::AddrParseError| {
                    ConfigError::Invalid {
                        name: "MYKEY_METRICS_LISTEN",
                        value: raw.clone(),
                        reason: e.to_string(),
                    }
                })?),
            };
        let url = |name: &'static str| -> Result<Option<String>, ConfigError> {
            let value = get(name).filter(|s| !s.trim().is_empty());
            if let Some(url) = &value {
                url.parse::<tokio_postgres::Config>()
                    .map_err(|e| ConfigError::Invalid {
                        name,
                        value: "<redacted>".to_owned(),
                        reason: e.to_string(),
                    })?;
            }
            Ok(value)
        };
        let database_url = url("DATABASE_URL")?;
        let owner_database_url = url("MYKEY_OWNER_DATABASE_URL")?;
        let var_dir = PathBuf::from(get("MYKEY_VAR_DIR").unwrap_or_else(|| "./var".to_owned()));
        let auth = crate::auth::config::AuthSettings::from_lookup(&get)?;
        let audit = crate::audit::AuditSettings::from_lookup(&get, &auth.issuer)?;
        let kafka = mykey_projections::kafka::KafkaSettings::from_lookup(&get).map_err(|e| {
            ConfigError::Invalid {
                name: e.name,
                value: e.value,
                reason: e.reason,
            }
        })?;
        let citizen = crate::routes::citizen::CitizenSettings::from_lookup(&get)?;
        Ok(Settings {
            citizen,
            listen,
            metrics_listen,
            database_url,
            owner_database_url,
            var_dir,
            auth,
            audit,
            kafka,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_rejections() {
        let s = Settings::from_lookup(|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert!(s.database_url.is_none());
        let bad = Settings::from_lookup(|k| (k == "MYKEY_LISTEN").then(|| "nope".to_owned()));
        assert!(matches!(
            bad,
            Err(ConfigError::Invalid {
                name: "MYKEY_LISTEN",
                ..
            })
        ));
        let bad = Settings::from_lookup(|k| {
            (k == "DATABASE_URL").then(|| "postgres://a:b@h:notaport/x".to_owned())
        });
        assert!(matches!(
            bad,
            Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                ..
            })
        ));
    }

    #[test]
    fn metrics_listener_and_rate_limits() {
        let s = Settings::from_lookup(|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.metrics_listen.is_none());
        assert_eq!(
            s.auth.rate_limit,
            crate::auth::ratelimit::RateLimitSettings::default()
        );
        let s = Settings::from_lookup(|k| match k {
            "MYKEY_METRICS_LISTEN" => Some("10.0.0.1:9100".to_owned()),
            "MYKEY_RATE_LIMIT_BURST" => Some("0".to_owned()),
            "MYKEY_RATE_LIMIT_PER_MINUTE" => Some("5".to_owned()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.metrics_listen.map(|a| a.port()), Some(9100));
        assert_eq!(
            (s.auth.rate_limit.burst, s.auth.rate_limit.per_minute),
            (0, 5)
        );
        for (name, value) in [
            ("MYKEY_METRICS_LISTEN", "nowhere"),
            ("MYKEY_RATE_LIMIT_BURST", "-1"),
            ("MYKEY_RATE_LIMIT_PER_MINUTE", "lots"),
        ] {
            let bad = Settings::from_lookup(|k| (k == name).then(|| value.to_owned()));
            assert!(
                matches!(bad, Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn kafka_settings_come_from_kafka_variables() {
        let s = Settings::from_lookup(|k| (k == "KAFKA_BROKERS").then(|| "k:9092".to_owned()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.kafka.map(|k| k.brokers), Some("k:9092".to_owned()));
        let bad = Settings::from_lookup(|k| match k {
            "KAFKA_BROKERS" => Some("k:9092".to_owned()),
            "KAFKA_PARTITIONS" => Some("0".to_owned()),
            _ => None,
        });
        assert!(matches!(
            bad,
            Err(ConfigError::Invalid {
                name: "KAFKA_PARTITIONS",
                ..
            })
        ));
    }

    #[test]
    fn debug_never_prints_the_database_url() {
        let s = Settings::from_lookup(|k| {
            (k == "DATABASE_URL").then(|| "postgres://u:secret@h/db".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{s:?}").contains("secret"));
        let s = Settings::from_lookup(|k| {
            (k == "MYKEY_OWNER_DATABASE_URL").then(|| "postgres://o:hidden@h/db".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.owner_database_url.is_some());
        assert!(!format!("{s:?}").contains("hidden"));
        let bad = Settings::from_lookup(|k| {
            (k == "MYKEY_OWNER_DATABASE_URL").then(|| "postgres://a:b@h:x/y".to_owned())
        });
        assert!(matches!(
            bad,
            Err(ConfigError::Invalid {
                name: "MYKEY_OWNER_DATABASE_URL",
                ..
            })
        ));
    }
}
