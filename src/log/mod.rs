//! Traffic log: one JSON object per line, EVE-like field names.
//!
//! Records are built as `serde_json` values from the data plane's
//! [`FlowRecord`](tlsinspect_pipeline::api::FlowRecord) so the field names
//! live in one place ([`record`]) and tooling that reads Suricata's EVE
//! output (jq scripts, log shippers) reads ours without a mapping. The
//! file sink ([`file`]) appends whole lines under one lock and rotates by
//! size; [`query`] is what `tlsinspect logs` runs.

pub mod file;
pub mod query;
pub mod record;

pub use file::{JsonLog, Rotation};
pub use query::{Filter, QueryError};
