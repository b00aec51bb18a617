#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::time::Duration;

use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

// The server allocates and frees many small, short-lived objects on every request and job
// (JSON bodies, SQL rows, futures): glibc's malloc took a fifth of a replay's profile and
// fragmented its heap; on mimalloc's per-thread free lists the replay ran 6% faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the last spans may take to reach the collector once the command is done.
const OTLP_FLUSH: Duration = Duration::from_secs(5);

/// The log lines on stderr, as `--log-format` says.
fn log_layer<S>(format: qod::cli::LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        qod::cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        qod::cli::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .boxed(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = qod::cli::parse();
    // A history runs in virtual time, one instant after another: each instant's work is a
    // chain of tasks handing over to each other, and across threads every hand-over is a
    // wake-up that costs more than the step it hands over. On one thread it is a queue push.
    let runtime = if cli.runs_a_history() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: qod::cli::Cli) -> std::process::ExitCode {
    // A replay runs a whole server whose failures are the history's (synthetic outages,
    // failing sinks): only errors are news there.
    let default = if cli.runs_a_history() {
        "error"
    } else {
        "info,apalis_core=warn,sqlx::postgres::notice=warn"
    };
    let filter = EnvFilter::try_from_env("QOD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let exporter = match cli.otlp_endpoint.as_deref().map(qod::otlp::start) {
        None => {
            // One filter for everything: no per-layer filtering to pay for.
            tracing_subscriber::registry()
                .with(filter)
                .with(log_layer(cli.log_format))
                .init();
            None
        }
        Some(Ok((traces, exporter))) => {
            // Each layer filters for itself, so that the logs' filter does not decide what is
            // exported; see `otlp::Fresh` for why neither filter's answer is cached.
            tracing_subscriber::registry()
                .with(log_layer(cli.log_format).with_filter(qod::otlp::Fresh(filter)))
                .with(traces.with_filter(qod::otlp::Fresh(qod::otlp::interest())))
                .init();
            Some(exporter.spawn())
        }
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = qod::cli::run(cli).await;
    if let Some(exporting) = exporter {
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
