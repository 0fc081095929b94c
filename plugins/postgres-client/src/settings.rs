//! The connection settings every Postgres plugin's config has (host, port, user, database,
//! the name of the password's secret, the TLS mode), validated into [`ConnectParams`].

use ingest_sdk::{Error, Result};

use crate::conn::{ConnectParams, Connection};
use crate::tls::Tls;

/// Where the server is, as the config gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    /// The name of the granted secret holding the password; none for trust or peer auth.
    pub password_secret: Option<String>,
    /// How the connection is protected.
    pub tls: Tls,
}

/// The default port.
pub const DEFAULT_PORT: u16 = 5432;

/// The TLS mode from `sslmode` and `sslrootcert`; problems are added to `problems`.
pub fn tls(sslmode: Option<&str>, sslrootcert: Option<&str>, problems: &mut Vec<String>) -> Tls {
    let tls = match sslmode {
        None | Some("disable") => Tls::Disable,
        Some("require") => Tls::Require,
        Some("verify-full") => match sslrootcert {
            Some(path) if !path.is_empty() => Tls::VerifyFull {
                root_cert: path.to_string(),
            },
            _ => {
                problems.push(
                    "`sslmode = \"verify-full\"` needs `sslrootcert`: a PEM file of the CA certificates to trust, in a directory the plugin's `fs` grants".into(),
                );
                Tls::Disable
            }
        },
        Some(other @ ("verify-ca" | "prefer" | "allow")) => {
            problems.push(format!(
                "`sslmode = {other:?}` is not offered: `prefer` and `allow` may fall back to plain text, and `verify-ca` skips the host name check; use `require` or `verify-full`"
            ));
            Tls::Disable
        }
        Some(other) => {
            problems.push(format!(
                "`sslmode = {other:?}` is not a TLS mode; accepted: disable, require, verify-full"
            ));
            Tls::Disable
        }
    };
    if sslrootcert.is_some() && !matches!(tls, Tls::VerifyFull { .. }) && problems.is_empty() {
        problems.push("`sslrootcert` is used only with `sslmode = \"verify-full\"`".into());
    }
    tls
}

impl Settings {
    /// Connect as `application_name`, reading the password from the granted secret.
    pub fn connect(&self, application_name: &str) -> Result<Connection> {
        self.open(application_name, false)
    }

    /// Open a logical replication (walsender) session as `application_name`.
    pub fn connect_replication(&self, application_name: &str) -> Result<Connection> {
        self.open(application_name, true)
    }

    fn open(&self, application_name: &str, replication: bool) -> Result<Connection> {
        let password = match &self.password_secret {
            Some(name) => Some(
                ingest_sdk::host::secret(name)
                    .map_err(|e| e.context(format_args!("the password secret `{name}`")))?,
            ),
            None => None,
        };
        let params = ConnectParams {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: self.database.clone(),
            password,
            application_name: application_name.to_string(),
            tls: self.tls.clone(),
            replication,
        };
        Connection::connect(&params).map_err(|e| {
            e.into_plugin_error(format_args!(
                "postgres {} (database `{}`, user `{}`)",
                params.address(),
                self.database,
                self.user
            ))
        })
    }

    /// Validate the parts; problems are added to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.host.is_empty() {
            problems.push("`host` is empty; give the server's name or address".into());
        }
        if self.user.is_empty() {
            problems.push("`user` is empty".into());
        }
        if self.database.is_empty() {
            problems.push("`database` is empty".into());
        }
        if self.port == 0 {
            problems.push("`port` is 0; the default is 5432".into());
        }
    }
}

/// An error for a list of config problems, or none.
pub fn problems_to_error(problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::config(problems.join("; ")))
    }
}
