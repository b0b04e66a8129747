//! Configuration from the environment. Secrets are never printed: `Debug` of [`Settings`]
//! redacts the database URL's password.

use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Clone)]
pub struct Settings {
    /// `MYKEY_LISTEN`, default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// `DATABASE_URL`; when absent a private cluster under `var_dir` is used.
    pub database_url: Option<String>,
    /// `MYKEY_VAR_DIR`, default `./var`.
    pub var_dir: PathBuf,
    /// Citizen-card login (`MYKEY_TRUST_ANCHORS`, `MYKEY_ISSUER`, ...).
    pub auth: crate::auth::config::AuthSettings,
    /// `KAFKA_BROKERS` and the other `KAFKA_*`; `None`: no Kafka at all.
    pub kafka: Option<mykey_projections::kafka::KafkaSettings>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("var_dir", &self.var_dir)
            .field("auth", &self.auth)
            .field("kafka", &self.kafka)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

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
        let database_url = get("DATABASE_URL").filter(|s| !s.trim().is_empty());
        if let Some(url) = &database_url {
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| ConfigError::Invalid {
                    name: "DATABASE_URL",
                    value: "<redacted>".to_owned(),
                    reason: e.to_string(),
                })?;
        }
        let var_dir = PathBuf::from(get("MYKEY_VAR_DIR").unwrap_or_else(|| "./var".to_owned()));
        let auth = crate::auth::config::AuthSettings::from_lookup(&get)?;
        let kafka = mykey_projections::kafka::KafkaSettings::from_lookup(&get).map_err(|e| {
            ConfigError::Invalid {
                name: e.name,
                value: e.value,
                reason: e.reason,
            }
        })?;
        Ok(Settings {
            listen,
            database_url,
            var_dir,
            auth,
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
    }
}
