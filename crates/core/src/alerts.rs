//! Alert lifecycle (METRICS.md §7): inactive → pending → firing → resolved, decided from one
//! observation per evaluation.
//!
//! An observation says whether the condition holds, whether it has cleared (the hysteresis: a
//! value must get back past a clear threshold, not just under the firing one), and whether enough
//! calls stand behind it. Too few calls neither starts nor resolves an alert, so a quiet night
//! never pages anyone and a quiet hour after an incident does not pretend it is over, unless
//! nothing at all was seen (no data), which resolves. The transitions a caller must notify are
//! returned; everything else is silent.

use crate::event::Timestamp;

/// Where an alert stands for one rule and one key (a trunk, or the whole system).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlertState {
    Inactive,
    /// The condition has held since `since`, not yet for the rule's `for` duration.
    Pending {
        since: Timestamp,
    },
    /// Fired at `since`.
    Firing {
        since: Timestamp,
    },
}

impl AlertState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending { .. } => "pending",
            AlertState::Firing { .. } => "firing",
        }
    }
}

/// One evaluation's reading of a rule's condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// Nothing was seen in the window (no calls, no data).
    NoData,
    /// Some calls, but fewer than the rule's minimum sample.
    TooFew,
    /// Enough calls: whether the firing condition holds, and whether the clear condition holds.
    Judged { breached: bool, cleared: bool },
}

/// A transition to notify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Fired { at: Timestamp },
    Resolved { fired_at: Timestamp, at: Timestamp },
}

/// Advances `state` by one observation at `now`; `for_ms` is how long the condition must hold
/// before the alert fires. Returns the new state and the transition to notify, if any.
pub fn step(
    state: AlertState,
    observation: Observation,
    for_ms: i64,
    now: Timestamp,
) -> (AlertState, Option<Transition>) {
    use AlertState::*;
    use Observation::*;
    match (state, observation) {
        (Inactive, Judged { breached: true, .. }) if for_ms <= 0 => {
            (Firing { since: now }, Some(Transition::Fired { at: now }))
        }
        (Inactive, Judged { breached: true, .. }) => (Pending { since: now }, None),
        (Inactive, _) => (Inactive, None),
        (Pending { since }, Judged { breached: true, .. }) => {
            if now.millis() - since.millis() >= for_ms {
                (Firing { since: now }, Some(Transition::Fired { at: now }))
            } else {
                (state, None)
            }
        }
        // A pending alert needs the condition to hold throughout.
        (Pending { .. }, _) => (Inactive, None),
        (Firing { since }, NoData | Judged { cleared: true, .. }) => (
            Inactive,
            Some(Transition::Resolved {
                fired_at: since,
                at: now,
            }),
        ),
        (Firing { .. }, TooFew | Judged { cleared: false, .. }) => (state, None),
    }
}

/// How a value is compared with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl Comparison {
    pub fn parse(s: &str) -> Option<Comparison> {
        match s {
            ">" => Some(Comparison::Above),
            ">=" => Some(Comparison::AtLeast),
            "<" => Some(Comparison::Below),
            "<=" => Some(Comparison::AtMost),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    /// Whether a value is back on the safe side of `clear` (strictly, for a firing `>` rule:
    /// at or under `clear`; for a `<` rule: at or over it).
    pub fn cleared(self, value: f64, clear: f64) -> bool {
        match self {
            Comparison::Above | Comparison::AtLeast => value <= clear,
            Comparison::Below | Comparison::AtMost => value >= clear,
        }
    }
}

/// Judges a value against a threshold and its clear threshold, given the sample behind it.
pub fn observe(
    value: Option<f64>,
    sample: i64,
    min_sample: i64,
    comparison: Comparison,
    threshold: f64,
    clear: f64,
) -> Observation {
    match value {
        _ if sample == 0 => Observation::NoData,
        None => Observation::NoData,
        Some(_) if sample < min_sample => Observation::TooFew,
        Some(v) => Observation::Judged {
            breached: comparison.holds(v, threshold),
            cleared: comparison.cleared(v, clear),
        },
    }
}

#[cfg(test)]
mod tests;
