//! Traffic log: Suricata EVE records (JSON lines) to Suricata's outputs.
//!
//! Records are built as `serde_json` values from the data plane's
//! [`FlowRecord`](tlsinspect_pipeline::api::FlowRecord) so the field names
//! live in one place ([`record`]), and the tools that read Suricata's EVE
//! output (Filebeat, Evebox, Arkime, jq) read ours without a mapping.
//! [`output`] takes each record through a bounded queue to every configured
//! output; [`query`] is what `tlsinspect logs` runs.

pub mod keylog;
pub mod output;
pub mod query;
pub mod record;

pub use output::{EveLog, OutputKind, OutputSpec, Rotation};
pub use query::{Filter, QueryError};
