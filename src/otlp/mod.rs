//! OTLP/HTTP export of the request and job spans (`--otlp-endpoint`): the spans already carry
//! their W3C ids (`crate::trace`), so a small layer turns each closed one into an OTLP span
//! (JSON encoding, hex ids, the job's link to the span that enqueued it) and a task posts them
//! in batches to `{endpoint}/v1/traces`. Exporting never holds the server up: a full buffer
//! drops spans (counted, and said in the log), a collector that fails is retried a few times
//! and then skipped.

mod encode;
mod export;
mod fresh;
mod layer;

pub use export::{Exporter, Shutdown};
pub use fresh::Fresh;
pub use layer::{OtlpLayer, interest};

/// Where spans go: the collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT` names it) with
/// `/v1/traces` appended, or a URL that already ends in it.
pub fn traces_url(endpoint: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(endpoint.trim())
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?} is not a URL: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.host().is_some(),
        "--otlp-endpoint {endpoint:?} must be an http:// or https:// URL of an OTLP/HTTP collector"
    );
    if url.path().trim_end_matches('/').ends_with("/v1/traces") {
        return Ok(url);
    }
    let base = url.as_str().trim_end_matches('/').to_owned();
    Ok(reqwest::Url::parse(&format!("{base}/v1/traces"))?)
}

/// The layer that collects spans and the exporter that sends them, for `endpoint`.
pub fn start(endpoint: &str) -> anyhow::Result<(OtlpLayer, Exporter)> {
    let url = traces_url(endpoint)?;
    let (sender, exporter) = Exporter::new(url)?;
    Ok((OtlpLayer::new(sender), exporter))
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_appended_once_and_other_schemes_are_refused() {
        let url = |e| traces_url(e).map(|u| u.to_string());
        assert_eq!(
            url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url("http://c:4318/otlp/").unwrap(),
            "http://c:4318/otlp/v1/traces"
        );
        assert_eq!(url("https://c/v1/traces").unwrap(), "https://c/v1/traces");
        assert!(url("grpc://c:4317").is_err());
        assert!(url("collector:4318").is_err());
        assert!(url("").is_err());
    }
}
