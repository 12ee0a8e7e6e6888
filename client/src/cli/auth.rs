//! `lapwing auth …`: tools for the server's principals.
//!
//! - `hash` prints the `token_sha256` of a token read from standard input,
//!   so a config file holds a digest instead of the secret (and the token
//!   never appears in a shell history or a process list).
//! - `check --principal NAME ACTION TOPIC` asks the server (Admin API)
//!   which rule decides whether that principal may publish or subscribe to
//!   a topic or pattern.

use std::io::BufRead;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use lapwing_proto::fingerprint::sha256_fingerprint;
use lapwing_proto::v1::CheckPermissionRequest;
use serde_json::json;

use super::admin::{call_error, AdminConn, Printer};
use super::{ConnArgs, Io};

/// `lapwing auth …`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuthCommand,
    /// How to reach the Admin API (for `check`).
    #[command(flatten)]
    pub admin: AdminConn,
}

/// The `auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the token_sha256 of the token on standard input (one line).
    Hash,
    /// Explain whether a principal may publish or subscribe to a topic or
    /// pattern, and which rule decides (asks the server's Admin API).
    Check {
        /// The principal's name.
        #[arg(long)]
        principal: String,
        /// publish or subscribe.
        action: ActionArg,
        /// A topic or a pattern (`*` one token, `>` the rest).
        topic: String,
    },
}

/// What a principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// Publish to it.
    Publish,
    /// Subscribe to it.
    Subscribe,
}

pub(crate) async fn run(conn: &ConnArgs, args: AuthArgs, io: &mut Io<'_>) -> anyhow::Result<()> {
    match args.command {
        AuthCommand::Hash => {
            let mut line = String::new();
            match io.input.take() {
                Some(mut input) => input.read_line(&mut line),
                None => std::io::stdin().lock().read_line(&mut line),
            }
            .context("reading the token from standard input")?;
            let token = line.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                bail!(
                    "no token on standard input (e.g. `printf %s \"$TOKEN\" | lapwing auth hash`)"
                );
            }
            writeln!(io.out, "{}", sha256_fingerprint(token.as_bytes()))?;
            Ok(())
        }
        AuthCommand::Check {
            principal,
            action,
            topic,
        } => {
            let mut client = args.admin.connect(conn).await?;
            let action = match action {
                ActionArg::Publish => "publish",
                ActionArg::Subscribe => "subscribe",
            };
            let r = client
                .check_permission(CheckPermissionRequest {
                    principal,
                    action: action.into(),
                    topic,
                })
                .await
                .map_err(call_error)?
                .into_inner();
            let mut print = Printer {
                out: io.out,
                json: args.admin.json,
            };
            print.show(
                &r,
                |r| json!({"allowed": r.allowed, "explanation": r.explanation}),
                |out, r| writeln!(out, "{}", r.explanation),
            )
        }
    }
}
