//! Live state (METRICS.md §5): the calls in progress, the agents' states and the last finished
//! calls, kept current from CDRs as the pipeline writes them.
//!
//! `LiveBoard::apply_cdr` takes any CDR, in any order and any number of times, and answers what
//! changed, so an adapter can push one small delta per change instead of the whole board.

use crate::cdr::{Cdr, Direction, Outcome};
use crate::event::{AgentState, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// How many finished calls the board remembers.
pub const RECENT_CALLS: usize = 10;

/// Where a call in progress stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallPhase {
    /// Not answered and not in a reported queue (outbound: dialing or ringing).
    Ringing,
    /// Inbound, not answered, with a reported `queue_entered`.
    Queued,
    /// Answered.
    Talking,
}

impl CallPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            CallPhase::Ringing => "ringing",
            CallPhase::Queued => "queued",
            CallPhase::Talking => "talking",
        }
    }
}

/// A call in progress, as the live panel shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCall {
    pub call_id: String,
    pub direction: Direction,
    pub phase: CallPhase,
    pub caller_number: Option<String>,
    pub callee_number: Option<String>,
    pub trunk_id: Option<String>,
    pub room_name: Option<String>,
    pub queue: Option<String>,
    pub agent_id: Option<String>,
    pub start_time: Timestamp,
    pub answer_time: Option<Timestamp>,
}

impl LiveCall {
    /// The live view of a CDR; `None` once the call has ended.
    pub fn of(cdr: &Cdr) -> Option<LiveCall> {
        if cdr.outcome != Outcome::InProgress {
            return None;
        }
        let phase = if cdr.answer_time.is_some() {
            CallPhase::Talking
        } else if cdr.direction == Direction::Inbound && cdr.queue.is_some() {
            CallPhase::Queued
        } else {
            CallPhase::Ringing
        };
        Some(LiveCall {
            call_id: cdr.call_id.clone(),
            direction: cdr.direction,
            phase,
            caller_number: cdr.caller_number.clone(),
            callee_number: cdr.callee_number.clone(),
            trunk_id: cdr.trunk_id.clone(),
            room_name: cdr.room_name.clone(),
            queue: cdr.queue.clone(),
            agent_id: cdr.agent_id.clone(),
            start_time: cdr.start_time,
            answer_time: cdr.answer_time,
        })
    }

    /// An inbound caller nobody has answered yet (METRICS.md §5 `callers_in_queue`).
    pub fn is_waiting(&self) -> bool {
        self.direction == Direction::Inbound && self.answer_time.is_none()
    }
}

/// An agent's last reported state and when it was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedState {
    pub state: AgentState,
    pub at: Timestamp,
}

/// The figures of the live panel.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LiveSummary {
    pub active_calls: u64,
    pub ringing_calls: u64,
    pub callers_in_queue: u64,
    pub longest_wait_seconds: f64,
    pub agents_available: u64,
    pub agents_busy: u64,
    pub agents_away: u64,
    pub agents_offline: u64,
}

/// What one CDR changed on the board.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BoardChange {
    /// A call now in progress, new or changed.
    pub call: Option<LiveCall>,
    /// A call that was in progress and has ended.
    pub ended: Option<String>,
    /// The CDR entered (or changed within) the recent finished calls.
    pub recent: bool,
    /// Agents whose effective state changed.
    pub agents: Vec<String>,
}

impl BoardChange {
    pub fn is_empty(&self) -> bool {
        self.call.is_none() && self.ended.is_none() && !self.recent && self.agents.is_empty()
    }
}

/// The live state of the whole system.
#[derive(Debug, Clone, Default)]
pub struct LiveBoard {
    calls: BTreeMap<String, LiveCall>,
    reported: BTreeMap<String, ReportedState>,
    /// How many calls in progress each agent is on (an agent in a room counts as busy).
    on_calls: BTreeMap<String, u32>,
    /// The last finished calls, newest end first.
    recent: Vec<Cdr>,
}

impl LiveBoard {
    /// Applies a CDR as written by the pipeline.
    pub fn apply_cdr(&mut self, cdr: &Cdr) -> BoardChange {
        let mut change = BoardChange::default();
        let before: BTreeSet<String> = self.agent_of(&cdr.call_id).into_iter().collect();
        match LiveCall::of(cdr) {
            Some(call) => {
                if self.calls.get(&call.call_id) != Some(&call) {
                    self.set_call(call.clone());
                    change.call = Some(call);
                }
            }
            None => {
                if self.remove_call(&cdr.call_id) {
                    change.ended = Some(cdr.call_id.clone());
                }
                change.recent = self.remember_finished(cdr);
            }
        }
        let after: BTreeSet<String> = self.agent_of(&cdr.call_id).into_iter().collect();
        change.agents = before.symmetric_difference(&after).cloned().collect();
        change
    }

    /// Applies an agent's reported state; a report older than the one known is ignored.
    /// Returns whether the agent's state changed.
    pub fn apply_agent_state(&mut self, agent_id: &str, reported: ReportedState) -> bool {
        match self.reported.get(agent_id) {
            Some(known) if known.at > reported.at || *known == reported => false,
            _ => {
                let before = self.agent_state(agent_id);
                self.reported.insert(agent_id.to_owned(), reported);
                before != self.agent_state(agent_id)
            }
        }
    }

    fn agent_of(&self, call_id: &str) -> Option<String> {
        self.calls.get(call_id).and_then(|c| c.agent_id.clone())
    }

    fn set_call(&mut self, call: LiveCall) {
        self.remove_call(&call.call_id);
        if let Some(agent) = &call.agent_id {
            *self.on_calls.entry(agent.clone()).or_default() += 1;
        }
        self.calls.insert(call.call_id.clone(), call);
    }

    fn remove_call(&mut self, call_id: &str) -> bool {
        let Some(old) = self.calls.remove(call_id) else {
            return false;
        };
        if let Some(agent) = old.agent_id
            && let Some(n) = self.on_calls.get_mut(&agent)
        {
            *n -= 1;
            if *n == 0 {
                self.on_calls.remove(&agent);
            }
        }
        true
    }

    /// Keeps the finished calls with the latest ends; returns whether the list changed.
    fn remember_finished(&mut self, cdr: &Cdr) -> bool {
        let old = self.recent.iter().position(|c| c.call_id == cdr.call_id);
        if let Some(i) = old {
            if self.recent[i] == *cdr {
                return false;
            }
            self.recent.remove(i);
        }
        let key = |c: &Cdr| (c.end_time, c.call_id.clone());
        let at = self
            .recent
            .iter()
            .position(|c| key(c) < key(cdr))
            .unwrap_or(self.recent.len());
        if at >= RECENT_CALLS {
            return old.is_some();
        }
        self.recent.insert(at, cdr.clone());
        self.recent.truncate(RECENT_CALLS);
        true
    }

    /// An agent's effective state: busy while on a call in progress, else as last reported.
    pub fn agent_state(&self, agent_id: &str) -> Option<AgentState> {
        if self.on_calls.contains_key(agent_id) {
            return Some(AgentState::Busy);
        }
        self.reported.get(agent_id).map(|r| r.state)
    }

    /// Every known agent with its effective state and the time of its last report.
    pub fn agents(&self) -> Vec<(String, AgentState, Option<Timestamp>)> {
        let names: BTreeSet<&String> = self.reported.keys().chain(self.on_calls.keys()).collect();
        names
            .into_iter()
            .filter_map(|a| {
                let state = self.agent_state(a)?;
                Some((a.clone(), state, self.reported.get(a).map(|r| r.at)))
            })
            .collect()
    }

    /// The calls in progress, oldest start first.
    pub fn calls(&self) -> Vec<&LiveCall> {
        let mut calls: Vec<&LiveCall> = self.calls.values().collect();
        calls.sort_by(|a, b| (a.start_time, &a.call_id).cmp(&(b.start_time, &b.call_id)));
        calls
    }

    /// The last finished calls, newest end first.
    pub fn recent(&self) -> &[Cdr] {
        &self.recent
    }

    /// The panel's figures at `now`.
    pub fn summary(&self, now: Timestamp) -> LiveSummary {
        let mut s = LiveSummary {
            active_calls: self.calls.len() as u64,
            ..LiveSummary::default()
        };
        for call in self.calls.values() {
            if call.phase == CallPhase::Ringing {
                s.ringing_calls += 1;
            }
            if call.is_waiting() {
                s.callers_in_queue += 1;
                let waited = (now.millis() - call.start_time.millis()).max(0) as f64 / 1000.0;
                s.longest_wait_seconds = s.longest_wait_seconds.max(waited);
            }
        }
        for (_, state, _) in self.agents() {
            match state {
                AgentState::Available => s.agents_available += 1,
                AgentState::Busy => s.agents_busy += 1,
                AgentState::Away => s.agents_away += 1,
                AgentState::Offline => s.agents_offline += 1,
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
