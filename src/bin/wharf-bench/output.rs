//! How a run reports (`--json`), and what it is called there (`--label`, `--scenario`):
//! flags of every measuring mode, read by `report`.

use clap::Args;

/// How a run reports, and what it is called in the report.
#[derive(Args, Debug, Clone)]
pub struct Output {
    /// Print one JSON object per run on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// A name for the server under test, carried into the JSON (e.g. wharf, tokio).
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// A name for the scenario, carried into the JSON (used by `summary` to group runs).
    #[arg(long, value_name = "NAME")]
    pub scenario: Option<String>,
}
