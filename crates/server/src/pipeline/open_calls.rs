//! The event sets of the calls the pipeline is following, kept between passes.
//!
//! A pass rebuilds the CDR of every call its events touch, from the call's whole event set: its
//! own events and its room's. Read from the store each time, those sets cost the pipeline most of
//! its time at full speed (a call is rebuilt in several passes, and a room event touches every
//! leg), all of it reads and JSON decoding of events it had already read. Here a call's set is
//! loaded from the store once and then kept up to date with the events the pipeline follows, in
//! log order, so it is always what [`Store::events_for_calls`] would answer after the same
//! events. A call whose room changes (its first SIP event arrives after others) is dropped and
//! loaded again. The least recently touched calls are dropped past a capacity, and everything
//! when the pipeline loses its lease (another instance may have applied events meanwhile).
//!
//! [`Store::events_for_calls`]: crate::store::Store::events_for_calls

use crate::store::{Room, event_index, room_of};
use callpulse_core::CallEvent;
use std::collections::{HashMap, HashSet};

/// A call's gathered events, as the store gives them.
struct Gathered {
    events: Vec<CallEvent>,
    /// The room of the call's SIP leg (`room_of` its own events), whose events it also holds.
    room: Option<Room>,
    /// When it was last loaded or touched ([`OpenCalls::tick`]).
    touched: u64,
}

/// The event sets of recently touched calls.
pub struct OpenCalls {
    calls: HashMap<String, Gathered>,
    /// Held calls by their room's sid, and by their room's name.
    by_sid: HashMap<String, HashSet<String>>,
    by_name: HashMap<String, HashSet<String>>,
    tick: u64,
    capacity: usize,
    /// Events of the sets loaded from the store so far ([`OpenCalls::hold`]), kept by `clear`.
    loaded: u64,
}

impl OpenCalls {
    /// Holds up to `capacity` calls (at least one).
    pub fn new(capacity: usize) -> OpenCalls {
        OpenCalls {
            calls: HashMap::new(),
            by_sid: HashMap::new(),
            by_name: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
            loaded: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Applies a followed event to every held set it belongs to: its own call's, and those of the
    /// other calls in its room (as the store's room lookup matches: the same sid, or no sid and the
    /// same name).
    pub fn follow(&mut self, event: &CallEvent) {
        let (call_id, sid, name) = event_index(event);
        if let Some(id) = call_id
            && let Some(held) = self.calls.get_mut(id)
        {
            held.events.push(event.clone());
            if room_of(&held.events) != held.room {
                // Its room's events are not held: load the whole set again.
                self.drop_call(id);
            }
        }
        let room_mates: Vec<String> = match (sid, name) {
            (Some(sid), _) => self.by_sid.get(sid),
            (None, Some(name)) => self.by_name.get(name),
            (None, None) => None,
        }
        .into_iter()
        .flatten()
        .filter(|other| Some(other.as_str()) != call_id)
        .cloned()
        .collect();
        for other in room_mates {
            let Some(held) = self.calls.get_mut(&other) else {
                continue;
            };
            let holds = match (sid, &held.room) {
                (Some(theirs), Some(room)) => room.sid.as_deref() == Some(theirs),
                (None, Some(room)) => name.is_some() && room.name.as_deref() == name,
                (_, None) => false,
            };
            if holds {
                held.events.push(event.clone());
            }
        }
    }

    /// The held sets of these calls (touching them), and the calls not held.
    pub fn take(&mut self, call_ids: &[String]) -> (HashMap<String, Vec<CallEvent>>, Vec<String>) {
        self.tick += 1;
        let mut held = HashMap::new();
        let mut missing = Vec::new();
        for id in call_ids {
            match self.calls.get_mut(id) {
                Some(g) => {
                    g.touched = self.tick;
                    held.insert(id.clone(), g.events.clone());
                }
                None => missing.push(id.clone()),
            }
        }
        (held, missing)
    }

    /// Holds the sets of calls just loaded from the store, then drops the least recently touched
    /// calls past the capacity.
    pub fn hold(&mut self, loaded: &HashMap<String, Vec<CallEvent>>) {
        for (id, events) in loaded {
            self.loaded += events.len() as u64;
            self.drop_call(id);
            let room = room_of(events);
            if let Some(room) = &room {
                for (map, key) in [
                    (&mut self.by_sid, &room.sid),
                    (&mut self.by_name, &room.name),
                ] {
                    if let Some(key) = key {
                        map.entry(key.clone()).or_default().insert(id.clone());
                    }
                }
            }
            self.calls.insert(
                id.clone(),
                Gathered {
                    events: events.clone(),
                    room,
                    touched: self.tick,
                },
            );
        }
        if self.calls.len() > self.capacity {
            // Down to 7/8 of the capacity at once, so this sort runs seldom.
            let keep = self.capacity - self.capacity / 8;
            let mut ages: Vec<(u64, String)> = self
                .calls
                .iter()
                .map(|(id, g)| (g.touched, id.clone()))
                .collect();
            ages.sort_unstable();
            for (_, id) in ages.iter().take(self.calls.len() - keep) {
                self.drop_call(id);
            }
        }
    }

    fn drop_call(&mut self, id: &str) {
        let Some(g) = self.calls.remove(id) else {
            return;
        };
        if let Some(room) = g.room {
            for (map, key) in [(&mut self.by_sid, room.sid), (&mut self.by_name, room.name)] {
                let Some(key) = key else { continue };
                if let Some(ids) = map.get_mut(&key) {
                    ids.remove(id);
                    if ids.is_empty() {
                        map.remove(&key);
                    }
                }
            }
        }
    }

    /// How many events the sets loaded from the store have held, in all: the store reads the
    /// kept sets did not save (each call's first sight, and again after it was dropped).
    pub fn events_loaded(&self) -> u64 {
        self.loaded
    }

    /// Forgets every call.
    pub fn clear(&mut self) {
        *self = OpenCalls {
            loaded: self.loaded,
            ..OpenCalls::new(self.capacity)
        };
    }
}
