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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{digest, hex};

    fn principal(name: &str) -> String {
        format!(
            "[[principals]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n",
            hex(&digest(name))
        )
    }

    #[test]
    fn a_reload_reads_the_principals_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lapwing.toml");
        let principals = dir.path().join("principals.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nprincipals_file = \"principals.toml\"\n{}",
                principal("inline")
            ),
        )
        .unwrap();
        std::fs::write(&principals, principal("one")).unwrap();
        let start = Config::from_file(&config).unwrap();
        start.validate().unwrap();
        let names: Vec<_> = start.principals.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["inline", "one"],
            "the file's own first, then the file"
        );
        let directory = Directory::new(Auth::from_config(&start).unwrap());
        assert!(directory.current().check("two").is_err());
        let reloader = Reloader::new(&start, directory.clone());

        std::fs::write(&principals, principal("one") + &principal("two")).unwrap();
        assert_eq!(reloader.reload().unwrap(), 3);
        assert_eq!(directory.current().check("two").unwrap().name(), "two");

        // A broken principals file changes nothing, and says which file.
        std::fs::write(&principals, "[[principals]]\nname = 1\n").unwrap();
        let err = reloader.reload().unwrap_err().to_string();
        assert!(err.contains("principals.toml"), "{err}");
        std::fs::write(&principals, "[limits]\nmax_topics = 1\n").unwrap();
        assert!(
            reloader.reload().is_err(),
            "only [[principals]] belong there"
        );
        std::fs::remove_file(&principals).unwrap();
        let err = reloader.reload().unwrap_err().to_string();
        assert!(err.contains("principals.toml"), "{err}");
        assert_eq!(directory.current().check("two").unwrap().name(), "two");
    }
}
