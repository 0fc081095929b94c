//! The `host` binary: parses the command line, sets up logging, and hands over to
//! [`ingest_host::cli`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ingest_host::cli::LogFormat;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of the C library's allocator: with the C library's, a run's peak
/// memory grows with the rows it moves, as batches of a few MiB are allocated and freed
/// on different threads and fragment its per-thread heaps (decision 0008).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` still overrides them).
/// `oversize_threshold:0` keeps allocations of 8 MiB and more (batches lifted out of a
/// plugin, decompressed pages) in the ordinary arenas, which reuse freed memory for 10 s,
/// instead of a dedicated arena that returns it to the system at once and faults fresh
/// zeroed pages in for the next one (decision 0008, update of 2026-12-05).
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 21] = b"oversize_threshold:0\0";

fn main() -> ExitCode {
    let cli = ingest_host::cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ingest_host::secrets::RedactingStderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    ingest_host::cli::main(cli)
}
