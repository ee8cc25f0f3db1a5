//! API tests: each starts the real server on port 0 with its own SQLite file.

mod alerts;
mod cdrs;
mod demo;
mod events;
mod helpers;
mod live;
mod livekit_sdk;
mod metrics;
mod prometheus;
mod rebuild;
mod webhooks;
