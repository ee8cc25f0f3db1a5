//! callpulse server: the adapters around the pure core. LiveKit webhooks and application events
//! come in through `http` and `ingest`, are appended to the event log in `store`, and the
//! `pipeline` turns them into CDRs with the core's builder.

pub mod alerting;
pub mod app;
pub mod charts;
pub mod config;
pub mod http;
pub mod ingest;
pub mod leader;
pub mod live;
pub mod maintenance;
pub mod metrics;
pub mod pipeline;
pub mod privacy;
pub mod prometheus;
pub mod rebuild;
pub mod simulate;
pub mod store;
