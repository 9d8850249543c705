//! Logs for administrators: journald under systemd (JOURNAL_STREAM set),
//! otherwise plain lines on stderr; and [`error_chain`], how errors are
//! written in them. Imports nothing of connectd.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// An error with its causes, as one line: transport errors hide the useful
/// part ("No such file or directory", "connection refused") in their
/// sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `level` is `[Logging] ServiceLogLevel`; `RUST_LOG` overrides it.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.to_ascii_lowercase()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry
                .with(journald.with_syslog_identifier("connectd".into()))
                .try_init();
            return;
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn an_error_reads_with_its_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("discovery failed")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("timed out"));
        assert_eq!(error_chain(&e), "discovery failed: timed out");
    }
}
