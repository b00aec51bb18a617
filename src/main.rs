#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How long the last spans may take to reach the collector once the command is done.
const OTLP_FLUSH: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = qod::cli::parse();
    // A replay runs a whole server whose failures are the history's (synthetic outages,
    // failing sinks): only errors are news there.
    let default = if cli.runs_a_history() {
        "error"
    } else {
        "info,apalis_core=warn,sqlx::postgres::notice=warn"
    };
    let filter = EnvFilter::try_from_env("QOD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Each layer filters for itself (the logs' filter does not decide what is exported); see
    // `otlp::Fresh` for why no filter's answer is cached.
    let filter = qod::otlp::Fresh(filter);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match cli.log_format {
        qod::cli::LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        qod::cli::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_filter(filter)
            .boxed(),
    };
    let (traces, exporter) = match cli.otlp_endpoint.as_deref().map(qod::otlp::start) {
        None => (None, None),
        Some(Ok((layer, exporter))) => (
            Some(layer.with_filter(qod::otlp::interest())),
            Some(exporter),
        ),
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    let exporting = exporter.map(qod::otlp::Exporter::spawn);
    let outcome = qod::cli::run(cli).await;
    if let Some(exporting) = exporting {
        exporting.flush(OTLP_FLUSH).await;
    }
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
