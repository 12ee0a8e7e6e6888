//! Values the server and the clients agree on without configuration, so that
//! `lapwing-server` and `lapwing sub` on one machine work with no flags.

use std::path::PathBuf;

/// UDP port of the QUIC edge.
pub const QUIC_PORT: u16 = 7400;
/// TCP port of the gRPC edge (Bus and Admin services).
pub const GRPC_PORT: u16 = 7401;
/// TCP port of the HTTP endpoint (Prometheus metrics, health).
pub const HTTP_PORT: u16 = 7402;

/// Server certificate (PEM) in the data directory; the CLI trusts it by
/// default when it is present.
pub const CERT_FILE: &str = "cert.pem";
/// Server private key (PEM) in the data directory.
pub const KEY_FILE: &str = "key.pem";

/// The server name a client verifies in the certificate unless told
/// otherwise (the generated dev certificate names `localhost`).
pub const SERVER_NAME: &str = "localhost";

/// Where the server keeps its generated certificate and state:
/// `$LAPWING_DATA_DIR`, else `$XDG_DATA_HOME/lapwing`, else
/// `~/.local/share/lapwing`, else `./lapwing-data`. Empty variables count as
/// unset.
pub fn default_data_dir() -> PathBuf {
    data_dir_from(|name| std::env::var_os(name).filter(|v| !v.is_empty()))
}

/// [`default_data_dir`] with the environment passed in, for tests.
fn data_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dir) = env("LAPWING_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = env("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("lapwing");
    }
    if let Some(home) = env("HOME") {
        return PathBuf::from(home).join(".local/share/lapwing");
    }
    PathBuf::from("lapwing-data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn data_dir_precedence() {
        let all = [
            ("LAPWING_DATA_DIR", "/l"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(data_dir_from(env(&all)), PathBuf::from("/l"));
        assert_eq!(data_dir_from(env(&all[1..])), PathBuf::from("/x/lapwing"));
        assert_eq!(
            data_dir_from(env(&all[2..])),
            PathBuf::from("/h/.local/share/lapwing")
        );
        assert_eq!(data_dir_from(env(&[])), PathBuf::from("lapwing-data"));
    }
}
