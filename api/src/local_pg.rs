//! A private PostgreSQL cluster under `./var/`, so the server runs with no configuration.
//!
//! It uses the machine's PostgreSQL binaries (`initdb`, `pg_ctl`), listens only on a Unix
//! socket inside the data directory (no TCP port to collide with), and trusts local
//! connections (the socket directory is private to the cluster's owner). `initdb` and
//! `postgres` refuse to run as root, so when we are root the cluster is owned by and run as
//! the unprivileged `postgres` system account.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The database inside the private cluster, and its owner role (the cluster's bootstrap
/// superuser, named by `initdb -U`): it runs the migrations and nothing else.
pub const LOCAL_DB: &str = "mykey";

/// The login role the server serves requests as: a member of the group role `mykey_runtime`
/// (store migration 0003), which may only read and append to the append-only tables.
pub const LOCAL_RUNTIME_ROLE: &str = "mykey_app";

/// Unix socket port number (part of the socket file name only; nothing listens on TCP).
const LOCAL_PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error("no PostgreSQL server binaries found (looked for pg_ctl in PATH, `pg_config --bindir` and /usr/lib/postgresql/*/bin); install PostgreSQL or set DATABASE_URL")]
    NoBinaries,
    #[error("running as root but there is no unprivileged `postgres` account to own the private cluster; create one or set DATABASE_URL")]
    NoUnprivilegedUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
}

/// A running private cluster; [`LocalPostgres::stop`] shuts it down.
#[derive(Debug)]
pub struct LocalPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// False when the cluster was already running (e.g. a CLI command next to a running
    /// server): then [`LocalPostgres::stop`] leaves it running for its owner.
    started_here: bool,
}

impl LocalPostgres {
    /// Initialises (first time) and starts the cluster in `<var_dir>/postgres`. Blocking; call
    /// [`LocalPostgres::ensure_database`] next.
    pub fn start(var_dir: &Path) -> Result<LocalPostgres, LocalPgError> {
        let bin_dir = find_bin_dir().ok_or(LocalPgError::NoBinaries)?;
        let run_as = if is_root() {
            Some(lookup_user("postgres").ok_or(LocalPgError::NoUnprivilegedUser)?)
        } else {
            None
        };
        std::fs::create_dir_all(var_dir).map_err(|e| step("create var dir", e))?;
        let var_dir = var_dir
            .canonicalize()
            .map_err(|e| step("resolve var dir", e))?;
        let data_dir = var_dir.join("postgres");
        let mut pg = LocalPostgres {
            bin_dir,
            data_dir,
            run_as,
            started_here: false,
        };
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.init()?;
        }
        if !pg.is_running() {
            pg.started_here = true;
            pg.run_tool(
                "pg_ctl start",
                Command::new(pg.bin_dir.join("pg_ctl"))
                    .arg("-D")
                    .arg(&pg.data_dir)
                    .arg("-l")
                    .arg(pg.data_dir.join("server.log"))
                    .arg("-w")
                    .arg("-t")
                    .arg("60")
                    .arg("-o")
                    .arg(format!(
                        "-c listen_addresses='' -k {} -p {LOCAL_PORT}",
                        pg.data_dir.display()
                    ))
                    .arg("start"),
            )?;
        }
        Ok(pg)
    }

    /// Stops whatever cluster runs in `<var_dir>/postgres`, whoever started it: for clean-up
    /// after a crashed server (or a failed test) left it running.
    pub fn stop_leftover(var_dir: &Path) -> Result<(), LocalPgError> {
        let data_dir = var_dir.join("postgres");
        if !data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let run_as = if is_root() {
            Some(lookup_user("postgres").ok_or(LocalPgError::NoUnprivilegedUser)?)
        } else {
            None
        };
        let pg = LocalPostgres {
            bin_dir: find_bin_dir().ok_or(LocalPgError::NoBinaries)?,
            data_dir,
            run_as,
            started_here: true,
        };
        pg.stop()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection settings for the runtime role ([`LOCAL_RUNTIME_ROLE`]).
    pub fn runtime_config(&self) -> tokio_postgres::Config {
        let mut c = self.config();
        c.user(LOCAL_RUNTIME_ROLE);
        c
    }

    /// Connection settings for the owner role (migrations).
    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.data_dir)
            .port(LOCAL_PORT)
            .user(LOCAL_DB)
            .dbname(LOCAL_DB)
            .application_name("mykey-server");
        c
    }

    /// Fast shutdown (open transactions are rolled back, committed data is safe) — only if
    /// this process started the cluster.
    pub fn stop(&self) -> Result<(), LocalPgError> {
        if !self.started_here {
            return Ok(());
        }
        self.run_tool(
            "pg_ctl stop",
            Command::new(self.bin_dir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-m")
                .arg("fast")
                .arg("-w")
                .arg("stop"),
        )
    }

    fn init(&self) -> Result<(), LocalPgError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| step("create data dir", e))?;
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| step("chmod data dir", e))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&self.data_dir, uid, gid)?;
        }
        self.run_tool(
            "initdb",
            Command::new(self.bin_dir.join("initdb"))
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-U")
                .arg(LOCAL_DB)
                .arg("--auth=trust")
                .arg("--encoding=UTF8")
                .arg("--locale=C"),
        )
    }

    fn is_running(&self) -> bool {
        Command::new(self.bin_dir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data_dir)
            .arg("status")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .as_user(self.run_as)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Creates the server's database on first start, and the runtime login role and its group
    /// role whenever missing (over the Unix socket, as the cluster's superuser role, which
    /// `initdb -U` named like the database).
    pub async fn ensure_database(&self) -> Result<(), LocalPgError> {
        let mut admin = self.config();
        admin.dbname("postgres");
        let (client, connection) =
            admin
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| LocalPgError::Step {
                    step: "connect to the private cluster",
                    detail: e.to_string(),
                })?;
        let conn = tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&LOCAL_DB])
            .await
            .map_err(|e| LocalPgError::Step {
                step: "look up the database",
                detail: e.to_string(),
            })?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {LOCAL_DB}"))
                .await
                .map_err(|e| LocalPgError::Step {
                    step: "create the database",
                    detail: e.to_string(),
                })?;
        }
        // Migration 0003 creates the group role too; creating it here as well lets the login
        // role exist before the first migration. One process owns this cluster, so no race.
        client
            .batch_execute(&format!(
                "DO $$ BEGIN
                    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mykey_runtime') THEN
                        CREATE ROLE mykey_runtime NOLOGIN;
                    END IF;
                    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LOCAL_RUNTIME_ROLE}') THEN
                        CREATE ROLE {LOCAL_RUNTIME_ROLE} LOGIN IN ROLE mykey_runtime;
                    END IF;
                END $$"
            ))
            .await
            .map_err(|e| LocalPgError::Step {
                step: "create the runtime role",
                detail: e.to_string(),
            })?;
        drop(client);
        let _ = conn.await;
        Ok(())
    }

    fn run_tool(&self, name: &'static str, cmd: &mut Command) -> Result<(), LocalPgError> {
        let out = cmd
            .as_user(self.run_as)
            .output()
            .map_err(|e| step(name, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(LocalPgError::Step {
                step: name,
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            })
        }
    }
}

trait AsUser {
    fn as_user(&mut self, ids: Option<(u32, u32)>) -> &mut Self;
}

impl AsUser for Command {
    fn as_user(&mut self, ids: Option<(u32, u32)>) -> &mut Self {
        if let Some((uid, gid)) = ids {
            // The unprivileged account may not be able to read our working directory.
            self.uid(uid).gid(gid).current_dir("/");
        }
        self
    }
}

fn step(step: &'static str, e: std::io::Error) -> LocalPgError {
    LocalPgError::Step {
        step,
        detail: e.to_string(),
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), LocalPgError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| step("chown data dir", e))
}

fn is_root() -> bool {
    // Without libc: the owner of a file we just created is our effective uid.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("pg_ctl").is_file() && d.join("initdb").is_file();
    if let Ok(path) = std::env::var("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_tools(d)) {
            return Some(d);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&d) {
            return Some(d);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has_tools(d))
        .collect();
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}
