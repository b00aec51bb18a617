//! `qod history export`: the stored history as a file (see `format`).

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::format::{Header, Line};
use crate::locks::lock;
use crate::store::{HistoryFilter, SharedStore};

/// Rows between two progress lines.
const PROGRESS_EVERY: u64 = 100_000;

/// Writes the header and every row `filter` selects to `out` (through a temporary file
/// beside it, renamed at the end: a failed export leaves no half file); returns the rows.
pub async fn export(
    store: &SharedStore,
    filter: HistoryFilter,
    header: &Header,
    out: &Path,
) -> anyhow::Result<u64> {
    let partial = out.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let writer = Arc::new(Mutex::new(std::io::BufWriter::new(file)));
    {
        let mut w = lock(&writer);
        serde_json::to_writer(&mut *w, header)?;
        w.write_all(b"\n")?;
    }
    let sink = writer.clone();
    let mut written = 0u64;
    let read = store
        .read_history(
            filter,
            Box::new(move |row| {
                let line = Line::of_row(row)?;
                let mut w = lock(&sink);
                serde_json::to_writer(&mut *w, &line)?;
                w.write_all(b"\n")?;
                written += 1;
                if written.is_multiple_of(PROGRESS_EVERY) {
                    eprintln!("history export: {written} lines written");
                }
                Ok(())
            }),
        )
        .await;
    let finished = read.and_then(|read| {
        let mut w = lock(&writer);
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(read)
    });
    match finished {
        Ok(read) => {
            std::fs::rename(&partial, out)
                .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
            Ok(read)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
