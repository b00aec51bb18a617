//! `qod token issue`: access tokens for development and tests, signed with the key the server
//! verifies (the development key in the data folder, or the configured HS256 secret), found
//! from the same flags and `QOD_*` variables as `qod serve`.

use std::time::Duration;

use clap::Subcommand;

use crate::api::auth::read_shared_secret;
use crate::auth::mint::{TokenRequest, mint_hs256};
use crate::auth::scopes;
use crate::clock::{Clock, SystemClock};
use crate::config::{AuthKeys, ServeArgs, ServerLocation};
use crate::{secrets, store};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new token (alone on the last line of the output).
    Issue {
        /// The API client the token is for: it owns the sessions it creates.
        #[arg(long)]
        client: String,
        /// Scopes to grant (repeatable, or space-separated); `all` for every scope.
        #[arg(long = "scope", num_args = 1.., required = true)]
        scopes: Vec<String>,
        /// Make the token three-legged: it speaks for this device (E.164 number) only.
        #[arg(long)]
        device_phone: Option<String>,
        /// Lifetime, e.g. `90s`, `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = crate::span::parse_positive)]
        ttl: Duration,
        #[command(flatten)]
        server: ServerLocation,
        /// The server's development signing key file, when it was given one.
        #[arg(long, env = "QOD_DEV_SIGNING_KEY_FILE")]
        dev_signing_key_file: Option<std::path::PathBuf>,
        /// The server's HS256 secret file, when it verifies tokens with one.
        #[arg(long, env = "QOD_AUTH_HS256_SECRET_FILE")]
        auth_hs256_secret_file: Option<std::path::PathBuf>,
        /// The `iss` the server requires.
        #[arg(long, env = "QOD_AUTH_ISSUER")]
        auth_issuer: Option<String>,
        /// The `aud` the server requires.
        #[arg(long, env = "QOD_AUTH_AUDIENCE")]
        auth_audience: Option<String>,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let Command::Issue {
        client,
        scopes: requested,
        device_phone,
        ttl,
        server,
        dev_signing_key_file,
        auth_hs256_secret_file,
        auth_issuer,
        auth_audience,
    } = cmd;
    let settings = server.settings(ServeArgs {
        dev_signing_key_file,
        auth_hs256_secret_file,
        auth_issuer,
        auth_audience,
        ..ServeArgs::default()
    })?;
    let secret = match &settings.auth.keys {
        AuthKeys::Development => {
            // Never a new key: a token signed with a key no server holds is refused (401).
            let file = store::dev_signing_key_path(&settings)?;
            let path = file.path();
            if !path.exists() {
                anyhow::bail!(
                    "no development signing key at {} (database {}): give the \
                     --database-url of the running server, or start `qod serve` with this one \
                     first; it creates the key",
                    path.display(),
                    settings.database_url
                );
            }
            secrets::key_file(path, "the development token-signing key")?
        }
        AuthKeys::SharedSecretFile(path) => read_shared_secret(path)?,
        AuthKeys::Jwks { .. } => anyhow::bail!(
            "this server verifies tokens with the identity provider's keys; get tokens there"
        ),
        AuthKeys::Disabled => {
            anyhow::bail!("this server runs without authentication (--auth none)")
        }
    };
    let mut granted: Vec<String> = Vec::new();
    for scope in requested.iter().flat_map(|s| s.split_whitespace()) {
        if scope == "all" {
            granted.extend(scopes::ALL.iter().map(|s| (*s).to_owned()));
        } else {
            if !scopes::ALL.contains(&scope) {
                eprintln!(
                    "warning: {scope} is not a scope this server checks; the token grants \
                     nothing with it (scopes: {}, or all)",
                    scopes::ALL.join(", ")
                );
            }
            granted.push(scope.to_owned());
        }
    }
    granted.sort();
    granted.dedup();
    let request = TokenRequest {
        client,
        scopes: granted,
        device_phone,
        ttl,
    };
    let token = mint_hs256(&secret, &settings.auth.rules, &request, SystemClock.now())?;
    eprintln!(
        "token for client {} ({} scopes, valid {} s{})",
        request.client,
        request.scopes.len(),
        ttl.as_secs(),
        request
            .device_phone
            .as_deref()
            .map(|p| format!(", device {p}"))
            .unwrap_or_default()
    );
    println!("{token}");
    Ok(())
}
