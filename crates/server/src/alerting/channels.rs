//! One small adapter per channel: a notice in, the HTTP request its receiver expects out.

use super::rules::{Channel, ChannelKind};
use crate::http::dto::rfc3339;
use callpulse_core::Timestamp;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// How long Alertmanager keeps a firing alert without hearing of it again; the deliverer
/// re-asserts firing alerts well within it, so a stopped callpulse lets them lapse.
pub const ALERTMANAGER_HOLD_MS: i64 = 3 * 60_000;

/// An HTTP request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

fn json_request(url: String, body: &Value) -> Request {
    Request {
        url,
        headers: vec![("content-type", "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

/// Alertmanager's `postableAlert`: the labels identify the alert; `endsAt` in the past resolves it.
pub fn alertmanager_alert(notice: &Value, now: Timestamp) -> Value {
    let firing = notice["status"] == "firing";
    let ends_at = if firing {
        rfc3339(Timestamp(now.millis() + ALERTMANAGER_HOLD_MS))
    } else {
        notice["ended_at"].as_str().unwrap_or_default().to_owned()
    };
    let mut annotations = json!({
        "summary": notice["summary"],
        "value": notice["value"].to_string(),
        "threshold": notice["threshold"].to_string(),
        "window_seconds": notice["window_seconds"].to_string(),
        "sample": notice["sample"].to_string(),
    });
    let mut alert = json!({
        "labels": notice["labels"],
        "startsAt": notice["started_at"],
        "endsAt": ends_at,
    });
    if let Some(url) = notice["dashboard_url"].as_str() {
        annotations["dashboard"] = url.into();
        alert["generatorURL"] = url.into();
    }
    alert["annotations"] = annotations;
    alert
}

fn pagerduty_severity(severity: &str) -> &'static str {
    match severity {
        "critical" => "critical",
        "info" => "info",
        _ => "warning",
    }
}

/// The request that delivers `notice` (stored as notice `notice_id`) to `channel`.
pub fn request(channel: &Channel, notice: &Value, notice_id: i64, now: Timestamp) -> Request {
    let firing = notice["status"] == "firing";
    match &channel.kind {
        ChannelKind::Alertmanager { url } => json_request(
            format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            &json!([alertmanager_alert(notice, now)]),
        ),
        ChannelKind::Slack { url } => {
            let mark = if firing {
                ":rotating_light: FIRING"
            } else {
                ":white_check_mark: RESOLVED"
            };
            let mut text = format!(
                "{mark} *{}*",
                notice["summary"].as_str().unwrap_or_default()
            );
            if let Some(link) = notice["dashboard_url"].as_str() {
                text.push_str(&format!(" <{link}|dashboard>"));
            }
            json_request(url.clone(), &json!({"text": text}))
        }
        ChannelKind::PagerDuty { url, routing_key } => {
            let dedup_key = format!(
                "callpulse/{}/{}",
                notice["alert"].as_str().unwrap_or_default(),
                notice["key"].as_str().unwrap_or_default()
            );
            let mut body = json!({
                "routing_key": routing_key,
                "event_action": if firing { "trigger" } else { "resolve" },
                "dedup_key": dedup_key,
            });
            if firing {
                body["payload"] = json!({
                    "summary": notice["summary"],
                    "source": "callpulse",
                    "severity": pagerduty_severity(notice["severity"].as_str().unwrap_or_default()),
                    "timestamp": notice["started_at"],
                    "custom_details": {
                        "value": notice["value"],
                        "threshold": notice["threshold"],
                        "window_seconds": notice["window_seconds"],
                        "sample": notice["sample"],
                        "labels": notice["labels"],
                    },
                });
                if let Some(link) = notice["dashboard_url"].as_str() {
                    body["links"] = json!([{"href": link, "text": "callpulse dashboard"}]);
                }
            }
            json_request(url.clone(), &body)
        }
        ChannelKind::Webhook { url, secret } => {
            let mut body = notice.clone();
            body["notice_id"] = notice_id.into();
            let mut request = json_request(url.clone(), &body);
            if let Some(secret) = secret {
                request
                    .headers
                    .push(("x-callpulse-signature", signature(secret, &request.body)));
            }
            request
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256 over the exact body bytes.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(status: &str) -> Value {
        json!({
            "alert": "trunk_unhealthy", "key": "trunk_id=ST_a", "status": status,
            "severity": "critical",
            "labels": {"alertname": "trunk_unhealthy", "severity": "critical", "trunk_id": "ST_a"},
            "value": 0.3, "threshold": 0.2, "window_seconds": 600, "sample": 10,
            "started_at": "2026-11-23T10:00:00.000Z",
            "ended_at": if status == "resolved" { json!("2026-11-23T10:05:00.000Z") } else { Value::Null },
            "summary": "trunk_unhealthy on ST_a: error_rate 30.0% > 20.0%",
            "dashboard_url": "http://callpulse.test/",
        })
    }

    fn channel(kind: ChannelKind) -> Channel {
        Channel {
            name: "c".into(),
            kind,
        }
    }

    fn body(r: &Request) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn alertmanager_gets_labels_and_an_end_that_resolves() {
        let am = channel(ChannelKind::Alertmanager {
            url: "http://am:9093/".into(),
        });
        let now = Timestamp(1_795_442_400_000);
        let fired = request(&am, &notice("firing"), 1, now);
        assert_eq!(fired.url, "http://am:9093/api/v2/alerts");
        let alert = &body(&fired)[0];
        assert_eq!(alert["labels"]["alertname"], "trunk_unhealthy");
        assert_eq!(alert["labels"]["trunk_id"], "ST_a");
        assert_eq!(alert["startsAt"], "2026-11-23T10:00:00.000Z");
        assert_eq!(
            alert["endsAt"],
            rfc3339(Timestamp(now.millis() + ALERTMANAGER_HOLD_MS))
        );
        assert!(
            alert["annotations"]["value"].is_string(),
            "annotations are strings"
        );
        let resolved = body(&request(&am, &notice("resolved"), 2, now));
        assert_eq!(resolved[0]["endsAt"], "2026-11-23T10:05:00.000Z");
    }

    #[test]
    fn pagerduty_triggers_and_resolves_with_one_dedup_key() {
        let pd = channel(ChannelKind::PagerDuty {
            url: "https://events.pagerduty.com/v2/enqueue".into(),
            routing_key: "R".into(),
        });
        let trigger = body(&request(&pd, &notice("firing"), 1, Timestamp(0)));
        let resolve = body(&request(&pd, &notice("resolved"), 2, Timestamp(0)));
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(
            trigger["dedup_key"],
            "callpulse/trunk_unhealthy/trunk_id=ST_a"
        );
        assert_eq!(trigger["dedup_key"], resolve["dedup_key"]);
        assert_eq!(trigger["payload"]["severity"], "critical");
        assert_eq!(trigger["payload"]["source"], "callpulse");
        assert!(resolve.get("payload").is_none());
    }

    #[test]
    fn webhooks_are_signed_over_the_exact_body() {
        let hook = channel(ChannelKind::Webhook {
            url: "http://hook.test/x".into(),
            secret: Some("s3cret".into()),
        });
        let r = request(&hook, &notice("firing"), 42, Timestamp(0));
        assert_eq!(body(&r)["notice_id"], 42);
        let (_, sig) = r
            .headers
            .iter()
            .find(|(h, _)| *h == "x-callpulse-signature")
            .unwrap();
        assert_eq!(*sig, signature("s3cret", &r.body));
        assert_ne!(*sig, signature("other", &r.body));
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn slack_says_firing_or_resolved() {
        let slack = channel(ChannelKind::Slack {
            url: "https://hooks.slack.test/x".into(),
        });
        let text = |s| body(&request(&slack, &notice(s), 1, Timestamp(0)))["text"].clone();
        assert!(text("firing").as_str().unwrap().contains("FIRING"));
        assert!(text("resolved").as_str().unwrap().contains("RESOLVED"));
    }
}
