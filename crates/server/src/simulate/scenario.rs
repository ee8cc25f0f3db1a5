//! Call scenarios: what LiveKit and the application send for each kind of call, with realistic
//! timing. Times are in simulated milliseconds from the call's start.

use super::wire::{self, Participant, Room};
use livekit_protocol::{DisconnectReason as Reason, participant_info::Kind};
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use std::collections::HashMap;

/// One thing to send.
#[derive(Debug, Clone)]
pub enum Payload {
    Webhook(Vec<u8>),
    App(Value),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub at_ms: i64,
    pub payload: Payload,
}

/// Everything one call sends: the room's ordered queue and the egress's own queue.
#[derive(Debug, Default)]
pub struct CallScript {
    pub room: Vec<Step>,
    pub egress: Vec<Step>,
}

const INBOUND_TRUNKS: &[&str] = &["ST_zUTp5cawibJM", "ST_4kqXoYe9PtRm", "ST_Hn7cWd2sLbVq"];
const OUTBOUND_TRUNKS: &[&str] = &["ST_yRC9oi2w3ZZb", "ST_9zhErcwtRhiC"];
const HUMAN_AGENTS: &[&str] = &["alice", "bob", "carol", "dave", "erin"];
const QUEUES: &[&str] = &["support", "sales", "billing"];

fn phone(rng: &mut impl Rng) -> String {
    format!(
        "+1{}{}555{:04}",
        rng.gen_range(2..10),
        rng.gen_range(10..100),
        rng.gen_range(0..10_000)
    )
}

fn app_event(rng: &mut impl Rng, kind: &str, at_ms: i64, call_id: &str, extra: Value) -> Step {
    let mut e = json!({
        "id": wire::guid(rng, "AE_"),
        "type": kind,
        "at": chrono::DateTime::from_timestamp_millis(at_ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "call_id": call_id,
    });
    if let (Some(map), Value::Object(extra)) = (e.as_object_mut(), extra) {
        map.extend(extra);
    }
    Step {
        at_ms,
        payload: Payload::App(e),
    }
}

struct Builder<'r, R: Rng> {
    rng: &'r mut R,
    script: CallScript,
    room: Room,
    t0: i64,
}

impl<R: Rng> Builder<'_, R> {
    fn hook(&mut self, at_ms: i64, body: Vec<u8>) {
        self.script.room.push(Step {
            at_ms,
            payload: Payload::Webhook(body),
        });
    }
    fn app(&mut self, kind: &str, at_ms: i64, call_id: &str, extra: Value) {
        let step = app_event(self.rng, kind, at_ms, call_id, extra);
        self.script.room.push(step);
    }
    fn sip(&mut self, inbound: bool, at_ms: i64, status: &str) -> (Participant, String) {
        let call_id = wire::guid(self.rng, "SCL_");
        let caller = phone(self.rng);
        let trunk = if inbound {
            INBOUND_TRUNKS
        } else {
            OUTBOUND_TRUNKS
        }
        .choose(self.rng)
        .expect("trunks")
        .to_string();
        let mut attributes = HashMap::from([
            ("sip.callID".to_string(), call_id.clone()),
            ("sip.callStatus".to_string(), status.to_string()),
            ("sip.phoneNumber".to_string(), caller.clone()),
            ("sip.trunkID".to_string(), trunk),
            (
                "sip.trunkPhoneNumber".to_string(),
                "+14155550100".to_string(),
            ),
            (
                "sip.hostname".to_string(),
                if inbound {
                    "198.51.100.23".into()
                } else {
                    "acme.pstn.twilio.com".to_string()
                },
            ),
        ]);
        if inbound {
            attributes.insert("sip.ruleID".into(), "SDR_MA5PmTZmtoGK".into());
        }
        let p = Participant {
            sid: wire::guid(self.rng, "PA_"),
            identity: format!("sip_{caller}"),
            name: if inbound {
                format!("Phone {caller}")
            } else {
                String::new()
            },
            kind: Kind::Sip,
            joined_ms: at_ms,
            attributes,
        };
        let body = wire::participant_joined(self.rng, &self.room, &p);
        self.hook(at_ms, body);
        (p, call_id)
    }
    fn agent(&mut self, at_ms: i64, name: &str) -> Participant {
        let p = Participant {
            sid: wire::guid(self.rng, "PA_"),
            identity: wire::guid(self.rng, "agent-AJ_"),
            name: String::new(),
            kind: Kind::Agent,
            joined_ms: at_ms,
            attributes: HashMap::from([
                ("lk.agent.name".to_string(), name.to_string()),
                ("lk.agent_name".to_string(), name.to_string()),
            ]),
        };
        let body = wire::participant_joined(self.rng, &self.room, &p);
        self.hook(at_ms, body);
        let track_at = at_ms + self.rng.gen_range(300..1500);
        let track = wire::track_published(self.rng, &self.room, &p, track_at);
        self.hook(track_at, track);
        p
    }
    fn leave(&mut self, p: &Participant, at_ms: i64, status: &str, reason: Reason, aborted: bool) {
        let body = wire::participant_left(
            self.rng,
            &self.room,
            p,
            at_ms,
            Some(status),
            reason,
            aborted,
        );
        self.hook(at_ms, body);
    }
    fn finish(&mut self, end_ms: i64, recorded: Option<(&str, i64)>) -> CallScript {
        let body = wire::room_event(self.rng, "room_finished", &self.room, end_ms + 20_000);
        self.hook(end_ms + 20_000, body);
        if let Some((call_id, started)) = recorded {
            // Egress travels on its own queue: it may land before or after room_finished.
            let at = end_ms + self.rng.gen_range(1_000..40_000);
            let body = wire::egress_ended(self.rng, &self.room, call_id, started, end_ms, at);
            self.script.egress.push(Step {
                at_ms: at,
                payload: Payload::Webhook(body),
            });
        }
        self.script.room.sort_by_key(|s| s.at_ms);
        std::mem::take(&mut self.script)
    }
}

/// A random call starting at `t0` (epoch ms), by the traffic mix of a contact centre.
pub fn random_call(rng: &mut impl Rng, t0: i64) -> CallScript {
    let inbound = rng.gen_bool(0.75);
    call(rng, t0, inbound, false)
}

/// An outbound call that the trunk fails (a 503), as during a carrier outage.
pub fn trunk_failure_call(rng: &mut impl Rng, t0: i64) -> CallScript {
    call(rng, t0, false, true)
}

fn call(rng: &mut impl Rng, t0: i64, inbound: bool, trunk_fails: bool) -> CallScript {
    let room = Room {
        sid: wire::guid(rng, "RM_"),
        name: if inbound {
            wire::guid(rng, "call-_")
        } else {
            wire::guid(rng, "outbound-")
        },
        created_ms: t0,
    };
    let mut b = Builder {
        rng,
        script: CallScript::default(),
        room,
        t0,
    };
    let started = wire::room_event(b.rng, "room_started", &b.room, t0);
    b.hook(t0, started);
    if inbound {
        inbound_call(&mut b)
    } else {
        outbound_call(&mut b, trunk_fails)
    }
}

fn inbound_call<R: Rng>(b: &mut Builder<'_, R>) -> CallScript {
    let t0 = b.t0;
    let join = t0 + b.rng.gen_range(200..700);
    let (sip, call_id) = b.sip(true, join, "ringing");
    let roll: f64 = b.rng.gen_range(0.0..1.0);
    if roll < 0.14 {
        // Abandoned while ringing; a third of them within 5 s.
        let wait = if b.rng.gen_bool(0.33) {
            b.rng.gen_range(1_000..4_500)
        } else {
            b.rng.gen_range(6_000..45_000)
        };
        b.leave(&sip, join + wait, "hangup", Reason::ClientInitiated, false);
        return b.finish(join + wait, None);
    }
    if roll < 0.18 {
        b.leave(
            &sip,
            join + 180_000,
            "ringing",
            Reason::ClientInitiated,
            false,
        );
        return b.finish(join + 180_000, None);
    }
    if roll < 0.21 {
        let at = join + b.rng.gen_range(500..3_000);
        let aborted = b.rng.gen_bool(0.5);
        b.leave(&sip, at, "ringing", Reason::MediaFailure, aborted);
        return b.finish(at, None);
    }
    let agent_at = join + b.rng.gen_range(400..2_500);
    b.agent(agent_at, "inbound-receptionist");
    let answered = agent_at + 1_500;
    let mut end = answered + b.rng.gen_range(20_000..240_000);
    if roll < 0.45 {
        // Handed to a human through a queue.
        let queue = *QUEUES.choose(b.rng).expect("queues");
        let human = *HUMAN_AGENTS.choose(b.rng).expect("agents");
        let entered = answered + b.rng.gen_range(10_000..40_000);
        let left = entered + b.rng.gen_range(3_000..120_000);
        b.app("queue_entered", entered, &call_id, json!({"queue": queue}));
        b.app(
            "queue_left",
            left,
            &call_id,
            json!({"queue": queue, "reason": "answered"}),
        );
        b.app("agent_assigned", left, &call_id, json!({"agent_id": human}));
        b.app(
            "agent_state",
            left,
            &call_id,
            json!({"agent_id": human, "state": "busy"}),
        );
        end = left + b.rng.gen_range(30_000..400_000);
        let wrap_up: u32 = b.rng.gen_range(5..90);
        b.app(
            "wrap_up",
            end + 1_000,
            &call_id,
            json!({"seconds": wrap_up, "agent_id": human}),
        );
        b.app(
            "agent_state",
            end + 60_000,
            &call_id,
            json!({"agent_id": human, "state": "available"}),
        );
    } else if roll < 0.52 {
        let target = format!("tel:{}", phone(b.rng));
        b.app(
            "transfer",
            end - 1_000,
            &call_id,
            json!({"transfer_type": "cold", "target": target}),
        );
    } else if roll < 0.56 {
        // Warm transfer: the agent dials a human into the room, then leaves the caller with them.
        let dial = answered + b.rng.gen_range(20_000..60_000);
        let (human, human_call) = b.sip(false, dial, "dialing");
        b.app("call_answered", dial + 8_000, &human_call, json!({}));
        b.app(
            "transfer",
            dial + 30_000,
            &call_id,
            json!({"transfer_type": "warm", "target": "sip:human@pbx.example.com"}),
        );
        end = dial + b.rng.gen_range(60_000..300_000);
        b.leave(&human, end + 500, "hangup", Reason::ClientInitiated, false);
    }
    b.leave(&sip, end, "hangup", Reason::ClientInitiated, false);
    let recorded = b.rng.gen_bool(0.6).then_some((call_id.as_str(), answered));
    b.finish(end, recorded)
}

fn outbound_call<R: Rng>(b: &mut Builder<'_, R>, trunk_fails: bool) -> CallScript {
    let t0 = b.t0;
    let agent_at = t0 + 300;
    b.agent(agent_at, "outbound-caller");
    let join = agent_at + b.rng.gen_range(500..1_500);
    let (sip, call_id) = b.sip(false, join, "dialing");
    let roll: f64 = if trunk_fails {
        0.27
    } else {
        b.rng.gen_range(0.0..1.0)
    };
    let (end, status, reason) = if roll < 0.12 {
        b.app(
            "sip_error",
            join + 2_500,
            &call_id,
            json!({"sip_status_code": 486, "reason": "Busy Here"}),
        );
        (join + 3_000, "dialing", Reason::UserRejected)
    } else if roll < 0.24 {
        (join + 30_000, "ringing", Reason::UserUnavailable)
    } else if roll < 0.30 {
        b.app(
            "sip_error",
            join + 1_500,
            &call_id,
            json!({"sip_status_code": 503, "reason": "Service Unavailable"}),
        );
        (join + 2_000, "dialing", Reason::ClientInitiated)
    } else {
        let answered = join + b.rng.gen_range(4_000..20_000);
        b.app("call_answered", answered, &call_id, json!({}));
        (
            answered + b.rng.gen_range(15_000..200_000),
            "hangup",
            Reason::ClientInitiated,
        )
    };
    b.leave(&sip, end, status, reason, false);
    b.finish(end, None)
}
