//! Fuzz targets, run as property tests so they run on stable Rust in every CI run, for a bounded
//! number of cases (`CALLPULSE_FUZZ_CASES`, default 3000 per target):
//!
//! - **webhook decoding**: arbitrary bytes, byte-level mutations of the LiveKit samples, and
//!   structure-aware mutations (any JSON node of a sample replaced by arbitrary JSON);
//! - **application-event decoding**: the same over valid application-event batches;
//! - **the CDR builder**: events decoded from mutated samples (times, statuses, reasons, ids
//!   replaced), in any order and with repeats.
//!
//! Each must never panic; a decoded webhook keeps its id; the builder gives the same CDR whatever
//! the order and however often an event repeats. The corpus is the LiveKit samples
//! (`tests/fixtures/livekit`) plus `tests/fuzz-corpus/`, where inputs that once broke something
//! are kept (a shrunk failure is added there by hand, and `the_corpus_decodes_cleanly` replays
//! each one every run).

use callpulse_core::{BuildParams, CallEvent, Timestamp, build, event::Scope};
use callpulse_server::ingest::{app_events, livekit};
use proptest::prelude::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/livekit");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-corpus");

fn cases() -> u32 {
    std::env::var("CALLPULSE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn files(dir: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The LiveKit samples, then the kept inputs.
fn corpus() -> Vec<Vec<u8>> {
    let mut all = files(FIXTURES);
    all.extend(files(CORPUS));
    all
}

fn samples() -> Vec<Value> {
    files(FIXTURES)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect()
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        "[0-9]{1,20}".prop_map(Value::from),
        prop_oneof![
            Just("ringing"),
            Just("active"),
            Just("hangup"),
            Just("CLIENT_INITIATED"),
            Just("SIP_TRUNK_FAILURE"),
            Just("EGRESS_COMPLETE"),
            Just("SIP"),
            Just("STANDARD"),
            Just("-9223372036854775808"),
            Just("9223372036854775807"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z.]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every node of `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

/// `sample` with the node chosen by `pick` replaced by `with` (or removed when `with` is None).
fn mutate(sample: &Value, pick: usize, with: Option<Value>) -> Value {
    let mut v = sample.clone();
    let mut all = Vec::new();
    pointers(&v, String::new(), &mut all);
    if all.is_empty() {
        return v;
    }
    let pointer = &all[pick % all.len()];
    match with {
        Some(new) => {
            if let Some(node) = v.pointer_mut(pointer) {
                *node = new;
            }
        }
        None => {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match v.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        items.remove(i);
                    }
                }
                _ => {}
            }
        }
    }
    v
}

/// Byte-level mutations: (position, new byte or deletion) pairs.
fn byte_edits() -> impl Strategy<Value = Vec<(usize, Option<u8>)>> {
    prop::collection::vec((any::<usize>(), any::<Option<u8>>()), 1..8)
}

fn edit_bytes(mut bytes: Vec<u8>, edits: &[(usize, Option<u8>)]) -> Vec<u8> {
    for (at, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte.unwrap_or(b'{'));
            continue;
        }
        let at = at % bytes.len();
        match byte {
            Some(b) => bytes[at] = *b,
            None => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

/// Decodes a body as the webhook handler does; a decoded event keeps the body's id.
fn check_webhook(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(decoded) = livekit::decode(body, Timestamp(1_795_442_530_000)) {
        prop_assert!(!decoded.event_name.is_empty());
        if let Ok(v) = serde_json::from_slice::<Value>(body)
            && let Some(id) = v["id"].as_str().filter(|id| !id.is_empty())
        {
            prop_assert_eq!(&decoded.event_id, id);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn webhook_decoding_survives_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_webhook(&body)?;
    }

    #[test]
    fn webhook_decoding_survives_byte_mutations_of_the_corpus(
        which in any::<prop::sample::Index>(),
        edits in byte_edits(),
    ) {
        let corpus = corpus();
        let body = edit_bytes(which.get(&corpus).clone(), &edits);
        check_webhook(&body)?;
    }

    #[test]
    fn webhook_decoding_survives_any_node_replaced(
        which in any::<prop::sample::Index>(),
        pick in any::<usize>(),
        with in prop::option::weighted(0.85, any_json()),
    ) {
        let samples = samples();
        let body = serde_json::to_vec(&mutate(which.get(&samples), pick, with)).unwrap();
        check_webhook(&body)?;
    }

    #[test]
    fn application_event_decoding_survives_any_node_replaced(
        which in 0usize..4,
        pick in any::<usize>(),
        with in prop::option::weighted(0.85, any_json()),
    ) {
        let batch = app_batch(which);
        let mutated = mutate(&batch, pick, with);
        if let Ok(events) = app_events::parse_batch(&mutated) {
            prop_assert_eq!(events.len(), mutated.as_array().map_or(1, Vec::len));
        }
    }

    #[test]
    fn the_cdr_builder_survives_mutated_events_in_any_order(
        mutations in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<usize>(), prop::option::weighted(0.9, any_json())),
            0..6,
        ),
        order in any::<u64>(),
        repeat in any::<prop::sample::Index>(),
    ) {
        let samples = samples();
        let mut bodies: Vec<Value> = samples.clone();
        for (which, pick, with) in mutations {
            bodies.push(mutate(which.get(&samples), pick, with));
        }
        let events: Vec<CallEvent> = bodies
            .iter()
            .filter_map(|b| {
                let bytes = serde_json::to_vec(b).ok()?;
                livekit::decode(&bytes, Timestamp(1_795_442_530_000)).ok()?.call_event
            })
            .collect();
        prop_assume!(!events.is_empty());
        let params = BuildParams { now: Timestamp(1_795_450_000_000), ..BuildParams::default() };
        let mut shuffled = events.clone();
        shuffle(&mut shuffled, order);
        shuffled.push(repeat.get(&events).clone());
        for call_id in call_ids(&events) {
            let reference = build(&call_id, &events, &params);
            prop_assert_eq!(build(&call_id, &shuffled, &params), reference);
        }
    }
}

fn call_ids(events: &[CallEvent]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.scope {
            Scope::Call { call_id } => Some(call_id.clone()),
            Scope::Room { .. } => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A deterministic Fisher–Yates shuffle driven by `seed`.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

/// Valid application-event batches, one of each kind.
fn app_batch(which: usize) -> Value {
    let at = "2026-11-24T10:00:00.000Z";
    let event = match which {
        0 => serde_json::json!({"id": "AE_1", "type": "call_answered", "at": at,
            "call_id": "SCL_1"}),
        1 => serde_json::json!({"id": "AE_2", "type": "queue_entered", "at": at,
            "call_id": "SCL_1", "queue": "support"}),
        2 => serde_json::json!({"id": "AE_3", "type": "transfer", "at": at,
            "call_id": "SCL_1", "transfer_type": "cold", "target": "+14155550100"}),
        _ => serde_json::json!({"id": "AE_4", "type": "agent_state", "at": at,
            "agent_id": "alice", "state": "available"}),
    };
    Value::Array(vec![event])
}

/// The fuzzed application batches start valid, so mutations explore the accepting paths too.
#[test]
fn the_application_seeds_are_valid() {
    for which in 0..4 {
        let batch = app_batch(which);
        assert!(app_events::parse_batch(&batch).is_ok(), "{batch}");
    }
}

/// Every kept input, unmutated, passes the webhook checks.
#[test]
fn the_corpus_decodes_cleanly() {
    for (i, body) in corpus().iter().enumerate() {
        if let Err(e) = check_webhook(body) {
            panic!("corpus input {i}: {e}");
        }
    }
}
