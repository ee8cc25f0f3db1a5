//! The calls a rebuild builds as one sequential scan of the call events passes them.
//!
//! Gathering each call's events by lookups (`Store::events_for_calls`) made the rebuild read the
//! call events a second time in random order, through three indexes, on the cores that also
//! decode, build and write. Here the call events are read once more in log order instead: a
//! call's set is complete once the scan has passed the last event of the call and of its room,
//! positions [`Horizons`] noted while the events were first written. The window then holds only
//! the calls whose events overlap in the log, not the whole log.
//!
//! The sets are those `Store::events_for_calls` gives: the call's own events, and its room's
//! events (room events and the other legs' SIP events) with the same sid, or with no sid and the
//! same name (application events name only the room). A lookup by name finds such events wherever
//! they lie in the log, so they are kept until the scan has passed every event naming that room,
//! with or without a sid: any call in a room of that name is met by then.

use crate::store::{Room, event_index, room_of};
use callpulse_core::CallEvent;
use callpulse_core::event::{EventBody, Scope};
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};

/// The last log position of each call, each room sid, each room name of events without a sid,
/// and each room name of any event. Keys are kept as 64-bit hashes, so a log of ten million events costs tens of MiB here: two
/// keys that share a hash share the later position, which only keeps a call waiting longer.
#[derive(Debug, Default)]
pub struct Horizons {
    calls: HashMap<u64, i64>,
    sids: HashMap<u64, i64>,
    names: HashMap<u64, i64>,
    any_names: HashMap<u64, i64>,
}

fn hashed(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

fn raise(map: &mut HashMap<u64, i64>, key: &str, seq: i64) {
    let at = map.entry(hashed(key)).or_insert(seq);
    *at = (*at).max(seq);
}

fn last(map: &HashMap<u64, i64>, key: Option<&str>) -> i64 {
    key.and_then(|k| map.get(&hashed(k)).copied())
        .unwrap_or(i64::MIN)
}

impl Horizons {
    /// Notes a call event at log position `seq`.
    pub fn note(&mut self, seq: i64, event: &CallEvent) {
        let (call_id, sid, name) = event_index(event);
        if let Some(id) = call_id {
            raise(&mut self.calls, id, seq);
        }
        match (sid, name) {
            (Some(sid), _) => raise(&mut self.sids, sid, seq),
            (None, Some(name)) => raise(&mut self.names, name, seq),
            (None, None) => {}
        }
        if let Some(name) = name {
            raise(&mut self.any_names, name, seq);
        }
    }

    /// The last position of the events kept under a room key.
    fn of_room_key(&self, key: &RoomKey) -> i64 {
        match key {
            RoomKey::Sid(sid) => last(&self.sids, Some(sid)),
            RoomKey::Name(name) => last(&self.any_names, Some(name)),
        }
    }

    /// The last position of a call's events or of its room's.
    fn of_call(&self, call_id: &str, room: Option<&Room>) -> i64 {
        let own = last(&self.calls, Some(call_id));
        room.map_or(own, |room| {
            own.max(last(&self.sids, room.sid.as_deref()))
                .max(last(&self.names, room.name.as_deref()))
        })
    }
}

/// A call the scan has met and not yet given out.
struct Pending {
    events: Vec<CallEvent>,
    /// The room of its SIP leg, from its first SIP event met.
    room: Option<Room>,
}

/// Where room events are kept: by sid, or by name for events without a sid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum RoomKey {
    Sid(String),
    Name(String),
}

impl RoomKey {
    /// The keys whose events a call in `room` gathers.
    fn of(room: &Room) -> impl Iterator<Item = RoomKey> {
        let sid = room.sid.clone().map(RoomKey::Sid);
        sid.into_iter().chain(room.name.clone().map(RoomKey::Name))
    }
}

/// The events kept under one room key, each with its call (if a leg's), and how many pending
/// calls will gather them.
#[derive(Default)]
struct RoomEvents {
    events: Vec<(Option<String>, CallEvent)>,
    waiting: usize,
}

/// The calls met so far whose sets are not yet complete, and the room events they may need.
pub struct Window<'h> {
    horizons: &'h Horizons,
    calls: HashMap<String, Pending>,
    /// Pending calls by the position after which they may be complete.
    calls_due: BinaryHeap<Reverse<(i64, String)>>,
    rooms: HashMap<RoomKey, RoomEvents>,
    /// Room keys by the position after which no call can want their events any more.
    rooms_due: BinaryHeap<Reverse<(i64, RoomKey)>>,
    /// The position the scan has passed.
    scanned: i64,
}

impl<'h> Window<'h> {
    pub fn new(horizons: &'h Horizons) -> Window<'h> {
        Window {
            horizons,
            calls: HashMap::new(),
            calls_due: BinaryHeap::new(),
            rooms: HashMap::new(),
            rooms_due: BinaryHeap::new(),
            scanned: i64::MIN,
        }
    }

    /// The calls and the room keys held now.
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        (self.calls.len(), self.rooms.len())
    }

    /// Takes in the next call event of the scan, at log position `seq` (increasing).
    pub fn feed(&mut self, seq: i64, event: CallEvent) {
        self.scanned = self.scanned.max(seq);
        let (call_id, sid, name) = event_index(&event);
        let call_id = call_id.map(str::to_owned);
        let key = match (sid, name) {
            (Some(sid), _) => Some(RoomKey::Sid(sid.to_owned())),
            (None, Some(name)) => Some(RoomKey::Name(name.to_owned())),
            (None, None) => None,
        };
        if let Some(key) = key {
            self.room(key).events.push((call_id.clone(), event.clone()));
        }
        let Some(call_id) = call_id else { return };
        let horizons = self.horizons;
        let pending = self.calls.entry(call_id.clone()).or_insert_with(|| {
            let due = horizons.of_call(&call_id, None);
            self.calls_due.push(Reverse((due, call_id.clone())));
            Pending {
                events: Vec::new(),
                room: None,
            }
        });
        let joins_room = pending.room.is_none() && is_leg_event(&event);
        pending.events.push(event);
        if joins_room && let Some(room) = room_of(&pending.events) {
            pending.room = Some(room.clone());
            for key in RoomKey::of(&room) {
                self.room(key).waiting += 1;
            }
        }
    }

    /// The events kept under a room key, made when first met.
    fn room(&mut self, key: RoomKey) -> &mut RoomEvents {
        let horizons = self.horizons;
        let rooms_due = &mut self.rooms_due;
        self.rooms.entry(key).or_insert_with_key(|key| {
            rooms_due.push(Reverse((horizons.of_room_key(key), key.clone())));
            RoomEvents::default()
        })
    }

    /// Gives out every call whose set is complete at the position scanned, with its set.
    pub fn complete(&mut self) -> Vec<(String, Vec<CallEvent>)> {
        self.take_due(self.scanned)
    }

    /// Gives out every call still held: the scan has ended, so no set can grow.
    pub fn finish(&mut self) -> Vec<(String, Vec<CallEvent>)> {
        self.take_due(i64::MAX)
    }

    fn take_due(&mut self, scanned: i64) -> Vec<(String, Vec<CallEvent>)> {
        let mut out = Vec::new();
        while let Some(Reverse((due, _))) = self.calls_due.peek()
            && *due <= scanned
        {
            let Reverse((_, id)) = self.calls_due.pop().expect("just peeked");
            let room = self.calls[&id].room.clone();
            let due = self.horizons.of_call(&id, room.as_ref());
            if due > scanned {
                self.calls_due.push(Reverse((due, id)));
                continue;
            }
            let mut pending = self.calls.remove(&id).expect("a due call is held");
            for key in room.iter().flat_map(RoomKey::of) {
                let of_key = self.rooms.get_mut(&key).expect("a waited-for room is held");
                pending.events.extend(
                    of_key
                        .events
                        .iter()
                        .filter(|(owner, _)| owner.as_deref() != Some(id.as_str()))
                        .map(|(_, e)| e.clone()),
                );
                of_key.waiting -= 1;
                if of_key.waiting == 0 && self.horizons.of_room_key(&key) <= scanned {
                    self.rooms.remove(&key);
                }
            }
            out.push((id, pending.events));
        }
        while let Some(Reverse((due, _))) = self.rooms_due.peek()
            && *due <= scanned
        {
            let Reverse((_, key)) = self.rooms_due.pop().expect("just peeked");
            if self.rooms.get(&key).is_some_and(|r| r.waiting == 0) {
                self.rooms.remove(&key);
            }
        }
        out
    }
}

/// Whether an event is a SIP leg's join or leave, which names the leg's room.
fn is_leg_event(event: &CallEvent) -> bool {
    matches!(
        (&event.scope, &event.body),
        (
            Scope::Call { .. },
            EventBody::SipJoined { .. } | EventBody::SipLeft { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::entries;
    use crate::store::LogPosition;
    use rand::{Rng, SeedableRng};

    /// Every call's set from the window, fed in log order in pages of any size, is the set the
    /// store's lookups give (room events matched by sid, or by name where they have no sid), and
    /// each call is given out once.
    #[tokio::test]
    async fn window_gives_each_call_the_set_the_store_gives() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = crate::store::open(&url, Default::default()).await.unwrap();
        let mut logged = entries(200, 5);
        // Some room events name only the room, as application events do.
        for (i, entry) in logged.iter_mut().enumerate() {
            if let Some(CallEvent {
                scope: Scope::Room { sid, .. },
                ..
            }) = &mut entry.call_event
                && i % 3 == 0
            {
                *sid = None;
            }
        }
        store.append(&logged).await.unwrap();
        let logged = store
            .call_events_after(LogPosition::default(), 1_000_000)
            .await
            .unwrap();
        store.index_followed(&logged).await.unwrap();
        let ids = store.all_call_ids().await.unwrap();
        let expected = store.events_for_calls(&ids).await.unwrap();

        let mut horizons = Horizons::default();
        for (at, event) in &logged {
            horizons.note(at.seq, event);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut window = Window::new(&horizons);
        let mut given = Vec::new();
        let mut most_held = 0;
        let mut rest = logged.as_slice();
        while !rest.is_empty() {
            let (page, after) = rest.split_at(rng.gen_range(1..=40).min(rest.len()));
            rest = after;
            for (at, event) in page {
                window.feed(at.seq, event.clone());
            }
            given.extend(window.complete());
            most_held = most_held.max(window.held().0);
        }
        given.extend(window.finish());
        assert_eq!(window.held(), (0, 0));

        let sorted = |events: &[CallEvent]| {
            let mut json: Vec<String> = events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect();
            json.sort();
            json
        };
        assert_eq!(given.len(), ids.len(), "each call given out once");
        for (id, events) in &given {
            assert_eq!(sorted(events), sorted(&expected[id]), "call {id}");
        }
        // These entries move events anywhere in the log, so a call may wait for most others.
        assert!(most_held > 0 && most_held < ids.len());
    }
}
