//! Reloading `[[principals]]` while the server runs: on SIGHUP (the
//! binary) and through `Admin.ReloadPrincipals`.
//!
//! A reload reads the config file the server was started with again,
//! validates all of it, and only if it is valid puts its principals in
//! force (a broken file keeps the old rules and reports every error at
//! once). Only principals change: listeners, limits and the `auth.tokens`
//! and admin token of the start stay as they were, so a token given by a
//! flag or an environment variable at start keeps working. Connections and
//! subscriptions already open follow the new rules (see
//! `permissions::Guard`): a subscription whose permission was withdrawn
//! ends with PERMISSION_DENIED.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use crate::auth::{Auth, Directory};
use crate::config::{ConfigError, ConfigErrors};
use crate::Config;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was started without `--config`.
    #[error("the server was started without a config file (--config / LAPWING_CONFIG): nothing to reload")]
    NoConfigFile,
    /// The file could not be read or is invalid; the old rules stay.
    #[error("the old principals stay in force: {0}")]
    Invalid(#[from] ConfigErrors),
}

/// See the module docs.
#[derive(Debug)]
pub struct Reloader {
    source: Option<PathBuf>,
    start: Config,
    directory: Arc<Directory>,
}

impl Reloader {
    /// Reloads into `directory` from the file `start` was read from.
    pub fn new(start: &Config, directory: Arc<Directory>) -> Reloader {
        Reloader {
            source: start.source.clone(),
            start: start.clone(),
            directory,
        }
    }

    /// Reads the file again and puts its principals in force; returns how
    /// many tokens name a principal now.
    pub fn reload(&self) -> Result<usize, ReloadError> {
        let path = self.source.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let read = Config::from_file(path).map_err(|e| ConfigErrors(vec![e]))?;
        read.validate()?;
        let mut next = self.start.clone();
        next.principals = read.principals;
        let auth = Auth::from_config(&next).map_err(|reason| {
            ConfigErrors(vec![ConfigError::Invalid {
                key: "principals".into(),
                reason,
            }])
        })?;
        let count = auth.len();
        self.directory.replace(auth);
        info!(file = %path.display(), principals = next.principals.len(), "principals reloaded");
        Ok(count)
    }
}
