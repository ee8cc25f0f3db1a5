//! API tests: each starts the real server on port 0 with its own SQLite file (or PostgreSQL
//! database).

mod alerts;
mod auth;
mod cdrs;
mod crash;
mod demo;
mod events;
mod faults;
mod grafana;
mod helpers;
#[path = "../support/cdr.rs"]
mod inputs;
mod instances;
mod limits;
mod live;
mod livekit_sdk;
mod metrics;
#[path = "../support/postgres.rs"]
mod pg;
mod privacy;
mod prometheus;
mod rebuild;
mod webhooks;
