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
    replace_numbers(text, |plus, digits| {
        let hidden = "*".repeat(digits.len() - VISIBLE);
        let sign = if plus { "+" } else { "" };
        Some(format!(
            "{sign}{hidden}{}",
            &digits[digits.len() - VISIBLE..]
        ))
    })
}

/// Replaces each run of at least [`MIN_DIGITS`] digits (with the `+` before it, if any) by what
/// `replace(has_plus, digits)` returns; `None` leaves the run.
fn replace_numbers(
    text: &str,
    mut replace: impl FnMut(bool, &str) -> Option<String>,
) -> Cow<'_, str> {
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
        if i - start < MIN_DIGITS {
            continue;
        }
        let plus = start > 0 && bytes[start - 1] == b'+';
        if let Some(with) = replace(plus, &text[start..i]) {
            let from = if plus { start - 1 } else { start };
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..from]);
            out.push_str(&with);
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
    for_each_string(value, None, &mut |_, s| {
        if let Cow::Owned(masked) = mask_numbers(s) {
            *s = masked;
        }
    });
}

/// Calls `f(key, string)` for every string in `value` not under an identifier key; `key` is the
/// nearest object key above the string.
fn for_each_string(
    value: &mut Value,
    key: Option<&str>,
    f: &mut impl FnMut(Option<&str>, &mut String),
) {
    match value {
        Value::String(s) => f(key, s),
        Value::Array(items) => {
            for item in items {
                for_each_string(item, key, f);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if !ID_KEYS.contains(&k.as_str()) {
                    for_each_string(v, Some(k), f);
                }
            }
        }
        _ => {}
    }
}

/// Keys whose values are phone numbers even without a `+` (LiveKit's SIP attributes, the
/// application events' fields).
const NUMBER_KEYS: &[&str] = &[
    "sip.phoneNumber",
    "sip.trunkPhoneNumber",
    "identity",
    "name",
    "caller_number",
    "callee_number",
    "phone_number",
    "number",
    "from",
    "to",
    "target",
];

/// Why `--hash-numbers` cannot start.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HashKeyError {
    #[error("--hash-numbers needs a key of at least 16 characters in CALLPULSE_NUMBER_HASH_KEY")]
    TooShort,
}

/// `--hash-numbers`: before anything is stored, every phone number in an incoming body becomes a
/// keyed hash (HMAC-SHA-256 of its digits under the configured key), written `~` and 16 letters.
/// The same number always gives the same token, so a caller stays recognisable (repeat callers,
/// per-number filters); without the key the number cannot be recovered, or confirmed by trying
/// candidates. A number counts when it is `+` and seven or more digits anywhere in a string, or
/// seven or more digits under a number-holding key (`sip.phoneNumber`, `identity`, ...).
#[derive(Clone)]
pub struct NumberHasher {
    key: std::sync::Arc<[u8]>,
}

impl NumberHasher {
    pub fn new(key: &str) -> Result<NumberHasher, HashKeyError> {
        if key.len() < 16 {
            return Err(HashKeyError::TooShort);
        }
        Ok(NumberHasher {
            key: key.as_bytes().into(),
        })
    }

    /// The token that stands for a number's digits.
    pub fn token(&self, digits: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(digits.as_bytes());
        let tag = mac.finalize().into_bytes();
        std::iter::once('~')
            .chain(tag.iter().take(16).map(|b| char::from(b'a' + b % 26)))
            .collect()
    }

    /// The body to store: JSON with its numbers hashed (re-serialised), other text with its
    /// `+`-numbers hashed, anything else unchanged.
    pub fn rewrite(&self, body: Vec<u8>) -> Vec<u8> {
        if let Ok(mut value) = serde_json::from_slice::<Value>(&body) {
            for_each_string(&mut value, None, &mut |key, s| {
                let any = key.is_some_and(|k| NUMBER_KEYS.contains(&k));
                if let Cow::Owned(hashed) =
                    replace_numbers(s, |plus, digits| (plus || any).then(|| self.token(digits)))
                {
                    *s = hashed;
                }
            });
            return serde_json::to_vec(&value).unwrap_or(body);
        }
        match std::str::from_utf8(&body) {
            Ok(text) => match replace_numbers(text, |plus, d| plus.then(|| self.token(d))) {
                Cow::Owned(hashed) => hashed.into_bytes(),
                Cow::Borrowed(_) => body,
            },
            Err(_) => body,
        }
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

    #[test]
    fn hashed_numbers_are_stable_per_key_and_hide_the_digits() {
        let a = NumberHasher::new("key-one-0123456789").unwrap();
        let b = NumberHasher::new("key-two-0123456789").unwrap();
        assert_eq!(a.token("14155550100"), a.token("14155550100"));
        assert_ne!(a.token("14155550100"), a.token("14155550101"));
        assert_ne!(a.token("14155550100"), b.token("14155550100"));
        let body =
            br#"{"id":"EV_1","createdAt":"1795442530","participant":{"identity":"sip_+14155550100",
            "attributes":{"sip.phoneNumber":"14155550100","sip.callID":"SCL_12345678"}}}"#;
        let stored = String::from_utf8(a.rewrite(body.to_vec())).unwrap();
        let v: Value = serde_json::from_str(&stored).unwrap();
        let token = a.token("14155550100");
        assert_eq!(v["participant"]["identity"], format!("sip_{token}"));
        assert_eq!(v["participant"]["attributes"]["sip.phoneNumber"], token);
        assert_eq!(v["participant"]["attributes"]["sip.callID"], "SCL_12345678");
        assert_eq!(
            v["createdAt"], "1795442530",
            "times are not numbers to hide"
        );
        assert!(!stored.contains("5550100"));
        let text = a.rewrite(b"not json, from +14155550100".to_vec());
        assert_eq!(text, format!("not json, from {token}").into_bytes());
        assert_eq!(
            NumberHasher::new("short").err(),
            Some(HashKeyError::TooShort)
        );
    }
}
