//! The developer's path as a user takes it, with the real binary: `qod serve` without auth
//! configuration prints a working token; `qod token issue` mints tokens from the same data
//! folder that the running server accepts; `--auth none` is loud.

mod common;

use std::io::BufRead;
use std::process::Command;
use std::time::Duration;

use common::process::{Process, start};

/// The server and what it printed on stdout.
struct Server {
    process: Process,
    stdout: Vec<String>,
}

fn database_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("data").join("qod.db").display())
}

fn serve(dir: &std::path::Path, extra: &[&str]) -> Server {
    let db = database_url(dir);
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--database-url", &db];
    args.extend_from_slice(extra);
    let mut process = start(&args, &dir.join("server.log"));
    let mut stdout = Vec::new();
    if extra.is_empty() {
        // The development token follows the listening line on stdout.
        let out = process.stdout.as_mut().unwrap();
        for _ in 0..2 {
            let mut line = String::new();
            out.read_line(&mut line).expect("token printed");
            stdout.push(line.trim_end().to_owned());
        }
    }
    Server { process, stdout }
}

async fn status_with(server: &Server, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "http://{}/quality-on-demand/v1/retrieve-sessions",
            server.process.addr
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"device": {"phoneNumber": "+33699999999"}}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn issue(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qod"))
        .args(["token", "issue", "--database-url"])
        .arg(database_url(dir))
        .args(args)
        .env_remove("QOD_AUTH")
        .output()
        .unwrap()
}

/// `qod token issue ARGS` succeeds; the token, the last line it printed.
fn issued(dir: &std::path::Path, args: &[&str]) -> String {
    let out = issue(dir, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().to_owned()
}

#[tokio::test]
async fn serve_prints_a_development_token_and_token_issue_mints_more_from_the_same_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    assert!(
        server
            .process
            .head
            .iter()
            .any(|l| l.contains("DEVELOPMENT AUTHENTICATION")),
        "{:?}",
        server.process.head
    );
    let printed = server.stdout.last().unwrap().clone();
    assert_eq!(status_with(&server, &printed).await, 200);

    let token = issued(
        dir.path(),
        &[
            "--client",
            "shop",
            "--scope",
            "quality-on-demand:sessions:read",
            "--ttl",
            "10m",
        ],
    );
    // Valid, but without the retrieve-by-device scope.
    assert_eq!(status_with(&server, &token).await, 403);
    let token = issued(
        dir.path(),
        &[
            "--client",
            "shop",
            "--scope",
            "quality-on-demand:sessions:retrieve-by-device",
        ],
    );
    assert_eq!(status_with(&server, &token).await, 200);
    // A three-legged token names no device in the body: this body does, so 422.
    let token = issued(
        dir.path(),
        &[
            "--client",
            "shop",
            "--scope",
            "all",
            "--device-phone",
            "+33611112222",
        ],
    );
    assert_eq!(status_with(&server, &token).await, 422);
    // Bad input to the command is a clear error.
    let out = issue(
        dir.path(),
        &[
            "--client",
            "shop",
            "--scope",
            "all",
            "--device-phone",
            "0611",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("phoneNumber"));
}

#[test]
fn token_issue_never_creates_a_key_and_names_the_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = issue(dir.path(), &["--client", "shop", "--scope", "all"]);
    assert!(!out.status.success(), "a token from a key no server holds");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
    assert!(out.stdout.is_empty(), "no token printed");
    assert!(
        !dir.path().join("data").exists(),
        "nothing created in the folder"
    );
}

#[tokio::test]
async fn auth_none_is_an_explicit_and_loudly_logged_choice() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--auth", "none"]);
    assert!(
        server
            .process
            .head
            .iter()
            .any(|l| l.contains("AUTHENTICATION IS OFF")),
        "{:?}",
        server.process.head
    );
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/qos-profiles/v1/qos-profiles/QOS_E",
            server.process.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = issue(
        dir.path(),
        &["--client", "x", "--scope", "all", "--auth", "none"],
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn configured_key_files_are_used_never_created_and_shared_by_token_issue() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("shared");
    std::fs::create_dir(&keys).unwrap();
    let (sealing, signing) = (keys.join("sealing.key"), keys.join("signing.key"));
    let (sealing, signing) = (sealing.to_str().unwrap(), signing.to_str().unwrap());
    let flags = [
        "--sealing-key-file",
        sealing,
        "--dev-signing-key-file",
        signing,
    ];

    // A configured key that does not exist is an error naming the way to make one.
    let db = database_url(dir.path());
    let refused = Command::new(env!("CARGO_BIN_EXE_qod"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .args(flags)
        .env_remove("QOD_AUTH")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("qod keys generate --out"), "{said}");

    for key in [sealing, signing] {
        let made = Command::new(env!("CARGO_BIN_EXE_qod"))
            .args(["keys", "generate", "--out", key])
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let again = Command::new(env!("CARGO_BIN_EXE_qod"))
            .args(["keys", "generate", "--out", key])
            .output()
            .unwrap();
        assert!(
            !again.status.success(),
            "an existing key is never overwritten"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(key).unwrap().trim().len(), 64);
    }

    let server = serve(dir.path(), &flags);
    let data = dir.path().join("data");
    assert!(!data.join("qod.key").exists() && !data.join("qod.dev-signing.key").exists());
    let token = issued(
        dir.path(),
        &[
            "--client",
            "shop",
            "--scope",
            "all",
            "--dev-signing-key-file",
            signing,
        ],
    );
    assert_eq!(
        status_with(&server, &token).await,
        200,
        "signed with the shared key"
    );
}
