//! Alerting: rules evaluated on a ticker from the rollups and the live state, each transition
//! written with its notice and one pending delivery per channel in a single transaction (the
//! outbox), and a deliverer that retries every delivery with backoff until its receiver accepts.
//!
//! The lifecycle itself is pure (`callpulse_core::alerts`); this module gathers observations,
//! stores transitions and talks to the channels.

mod channels;
mod deliver;
mod evaluate;
pub mod rules;

pub use deliver::run_deliverer;
pub use evaluate::{Evaluator, run_evaluator};
pub use rules::AlertConfig;

use anyhow::Context;
use std::path::Path;

/// The `[alerts]` section of the configuration file (absent file or section: the defaults).
pub fn load(config_file: Option<&Path>) -> anyhow::Result<AlertConfig> {
    let table = match config_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        },
    };
    let alerts = match table.as_ref().and_then(|t| t.get("alerts")) {
        None => None,
        Some(toml::Value::Table(t)) => Some(t),
        Some(_) => anyhow::bail!("alerts: must be a table ([alerts])"),
    };
    let config = rules::parse(alerts)
        .with_context(|| format!("alert configuration in {}", display(config_file)))?;
    Ok(config)
}

fn display(path: Option<&Path>) -> String {
    path.map_or_else(|| "(none)".into(), |p| p.display().to_string())
}
