//! One session before the load: a bench whose every request fails would otherwise run its whole
//! duration and report nothing useful. The probe stops it with the reason and what to change.

use anyhow::bail;
use serde_json::json;

/// Creates one session with the bench's sink and deletes it again; an error says why the
/// load could not work.
pub async fn one_session(
    client: &reqwest::Client,
    target: &str,
    token: Option<&str>,
    sink_url: &str,
) -> anyhow::Result<()> {
    let body = json!({
        "device": {"phoneNumber": "+40000000000"},
        "applicationServer": {"ipv4Address": "198.51.100.10"},
        "qosProfile": "QOS_E",
        "duration": 1,
        "sink": sink_url,
    });
    let sessions = format!("{target}/quality-on-demand/v1/sessions");
    let authorised = |req: reqwest::RequestBuilder| match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = match authorised(client.post(&sessions).json(&body)).send().await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => {
            bail!("no server answers at {target}: start `qod serve` first, or give --target")
        }
        Err(e) => bail!("the probe request to {target} failed: {e}"),
    };
    let status = resp.status().as_u16();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    if status == 201 {
        if let Some(id) = answer["sessionId"].as_str() {
            // Best effort: it would otherwise expire in a second by itself.
            let _ = authorised(client.delete(format!("{sessions}/{id}")))
                .send()
                .await;
        }
        return Ok(());
    }
    let code = answer["code"].as_str().unwrap_or("");
    let message = answer["message"].as_str().unwrap_or("");
    let hint = match (status, code) {
        (401, _) => {
            "give --token (or QOD_BENCH_TOKEN): the last line `qod serve` prints, or one from \
             `qod token issue --client bench --scope all`"
        }
        (403, _) => "the token lacks the scope to create sessions: issue one with --scope all",
        (400, "INVALID_SINK" | "QUALITY_ON_DEMAND.INVALID_SINK") => {
            "the server refuses the bench's plain-http sink on loopback: start it with \
             --allow-insecure-sinks --allow-private-sinks"
        }
        (429, _) => {
            "the server limits this client: start it with --client-rate-limit 0 \
             --client-max-active-sessions 0 for a load test"
        }
        (404, _) => "is --target a qod server?",
        _ => "see the server's log",
    };
    bail!("the probe session was refused: {status} {code} {message}\n  hint: {hint}")
}
