#![forbid(unsafe_code)]

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        qod::cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        qod::cli::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .init(),
    }
    match qod::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
