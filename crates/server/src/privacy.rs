//! Phone numbers are personal data. With `--mask-numbers` every number callpulse shows (API,
//! CSV/NDJSON exports, the dashboard and its live feed) keeps only its last four digits; what is
//! stored is unchanged.
//!
//! A number is recognised by shape, wherever it sits in a string: a run of at least seven digits
//! (an optional `+` before it is kept). So `+14155550100`, `sip_+14155550100`,
//! `sip:+14155550100@pbx`, and a room named after its caller are all masked, while ids, which
//! seldom hold seven digits in a row, stay readable.

use callpulse_core::Cdr;
use serde_json::Value;
use std::borrow::Cow;

/// Shortest run of digits taken for a phone number.
const MIN_DIGITS: usize = 7;
/// Digits left visible at the end of a number.
const VISIBLE: usize = 4;
/// Keys whose values are identifiers or times, never numbers to hide.
const ID_KEYS: &[&str] = &[
    "id",
    "sid",
    "call_id",
    "room_sid",
    "trunk_id",
    "agent_id",
    "queue",
    "sip.callID",
    "sip.ruleID",
    "sip.trunkID",
    "lk.sip.inviteTime",
];

/// How phone numbers are shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NumberDisplay {
    #[default]
    Full,
    /// Only the last four digits.
    LastFour,
}

impl NumberDisplay {
    /// The CDR as it may be shown.
    pub fn cdr<'a>(self, cdr: &'a Cdr) -> Cow<'a, Cdr> {
        match self {
            NumberDisplay::Full => Cow::Borrowed(cdr),
            NumberDisplay::LastFour => Cow::Owned(masked_cdr(cdr)),
        }
    }

    /// Masks the numbers in every string of `value` (identifier keys excepted).
    pub fn json(self, value: &mut Value) {
        if self == NumberDisplay::LastFour {
            mask_json(value);
        }
    }
}

/// `text` with every phone number reduced to its last four digits (the others become `*`).
pub fn mask_numbers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i - start >= MIN_DIGITS {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..start]);
            out.extend(std::iter::repeat_n('*', i - start - VISIBLE));
            out.push_str(&text[i - VISIBLE..i]);
            copied = i;
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

fn mask_option(value: &Option<String>) -> Option<String> {
    value.as_deref().map(|v| mask_numbers(v).into_owned())
}

fn masked_cdr(cdr: &Cdr) -> Cdr {
    let mut metadata = cdr.metadata.clone().map(Value::Object);
    if let Some(m) = &mut metadata {
        mask_json(m);
    }
    Cdr {
        caller_number: mask_option(&cdr.caller_number),
        callee_number: mask_option(&cdr.callee_number),
        room_name: mask_option(&cdr.room_name),
        transfer_target: mask_option(&cdr.transfer_target),
        recording_url: mask_option(&cdr.recording_url),
        metadata: metadata.and_then(|m| match m {
            Value::Object(m) => Some(m),
            _ => None,
        }),
        ..cdr.clone()
    }
}

fn mask_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(masked) = mask_numbers(s) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if !ID_KEYS.contains(&key.as_str()) {
                    mask_json(v);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_last_four_digits_wherever_they_sit() {
        assert_eq!(mask_numbers("+14155550100"), "+*******0100");
        assert_eq!(mask_numbers("sip_+14155550100"), "sip_+*******0100");
        assert_eq!(
            mask_numbers("sip:+33612345678@pbx.example, then 0612345678"),
            "sip:+*******5678@pbx.example, then ******5678"
        );
        assert_eq!(
            mask_numbers("call-_+14155550100_x7Ab"),
            "call-_+*******0100_x7Ab"
        );
    }

    #[test]
    fn short_digit_runs_and_text_without_numbers_are_untouched() {
        assert!(matches!(mask_numbers("SCL_8piqEvbFWiyq"), Cow::Borrowed(_)));
        assert_eq!(mask_numbers("agent 42, ext 123456"), "agent 42, ext 123456");
        assert_eq!(mask_numbers(""), "");
    }

    #[test]
    fn json_is_masked_except_under_identifier_keys() {
        let mut v = serde_json::json!({
            "identity": "sip_+14155550100",
            "attributes": {"sip.phoneNumber": "+14155550100", "sip.callID": "SCL_12345678"},
            "call_id": "SCL_99999999",
            "joined_at": 1795442530000i64,
            "legs": ["+442071234567"],
        });
        NumberDisplay::LastFour.json(&mut v);
        assert_eq!(v["identity"], "sip_+*******0100");
        assert_eq!(v["attributes"]["sip.phoneNumber"], "+*******0100");
        assert_eq!(v["attributes"]["sip.callID"], "SCL_12345678");
        assert_eq!(v["call_id"], "SCL_99999999");
        assert_eq!(v["joined_at"], 1795442530000i64);
        assert_eq!(v["legs"][0], "+********4567");
        let mut full = serde_json::json!({"identity": "sip_+14155550100"});
        NumberDisplay::Full.json(&mut full);
        assert_eq!(full["identity"], "sip_+14155550100");
    }
}
