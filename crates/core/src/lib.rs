//! callpulse's pure domain core: call events in, Call Detail Records out, and the metric math.
//!
//! Nothing here does I/O or reads the clock; the current time comes in as a parameter. Adapters
//! (HTTP, storage, LiveKit decoding) live in the server crate and convert to and from these types.

pub mod alerts;
pub mod cdr;
pub mod event;
pub mod live;
pub mod metrics;

pub use cdr::{Anomaly, AnswerSource, BuildParams, Cdr, Direction, EndedBy, Outcome, build};
pub use event::{CallEvent, EventBody, Scope, Source, Timestamp};
