//! Alert rules, channels and routes from the `[alerts]` section of `callpulse.toml`, with the
//! defaults of METRICS.md §7 built in. Every problem names the rule (or channel) and the field.

use callpulse_core::alerts::Comparison;
use callpulse_core::metrics::Tally;
use chrono::NaiveTime;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A configuration problem, naming where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{place}.{field}: {problem}")]
pub struct RuleError {
    pub place: String,
    pub field: &'static str,
    pub problem: String,
}

/// Metrics over a window of calls (METRICS.md §4): name and the calls behind its value.
pub const WINDOW_METRICS: &[&str] = &[
    "total_calls",
    "inbound_calls",
    "outbound_calls",
    "answered_calls",
    "abandoned_calls",
    "failed_calls",
    "busy_calls",
    "no_answer_calls",
    "answer_rate",
    "avg_handle_time_seconds",
    "abandonment_rate",
    "avg_speed_of_answer_seconds",
    "service_level",
    "transfer_rate",
    "error_rate",
    "connect_rate",
    "p90_speed_of_answer_seconds",
    "p90_handle_time_seconds",
];

/// Metrics of the live state (METRICS.md §5).
pub const LIVE_METRICS: &[&str] = &[
    "agents_available",
    "callers_in_queue",
    "longest_wait_seconds",
    "active_calls",
];

/// The calls that stand behind a window metric's value (its denominator).
pub fn sample_of(metric: &str, t: &Tally) -> i64 {
    match metric {
        "answer_rate" | "service_level" | "inbound_calls" => t.inbound_calls,
        // Queued calls: inbound calls not failed (METRICS.md §4, §7).
        "abandonment_rate" => t.inbound_calls - t.inbound_failed,
        "avg_speed_of_answer_seconds" | "p90_speed_of_answer_seconds" => t.speed_of_answer_calls,
        "avg_handle_time_seconds" | "p90_handle_time_seconds" => t.handled_calls,
        "transfer_rate" => t.answered_calls,
        "connect_rate" | "outbound_calls" => t.outbound_calls,
        _ => t.total_calls,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Where a rule's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A metric over the calls that started in the last `window_ms`.
    Window(&'static str),
    /// A figure of the live state, now.
    Live(&'static str),
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub source: Source,
    pub comparison: Comparison,
    pub threshold: f64,
    /// The value must get back past this to resolve (hysteresis).
    pub clear: f64,
    pub window_ms: i64,
    pub min_sample: i64,
    pub for_ms: i64,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    /// One alert per trunk.
    pub per_trunk: bool,
    /// Per trunk: also fire after this many failed calls in a row.
    pub consecutive_failures: Option<u32>,
    /// Per trunk: resolve only once this many calls in a row did not fail.
    pub clear_after_successes: Option<u32>,
    /// Live rules: only while callers are waiting (or within `hours`).
    pub while_callers_waiting: bool,
    /// Live rules: also active between these local times.
    pub hours: Option<(NaiveTime, NaiveTime)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    Alertmanager { url: String },
    Slack { url: String },
    PagerDuty { url: String, routing_key: String },
    Webhook { url: String, secret: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

/// Sends alerts matching `severities` (any when empty) and `labels` to `channels`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub channels: Vec<String>,
    pub severities: Vec<Severity>,
    pub labels: BTreeMap<String, String>,
}

/// Everything the alerting needs from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    pub rules: Vec<Rule>,
    pub channels: Vec<Channel>,
    pub routes: Vec<Route>,
    pub dashboard_url: Option<String>,
    pub interval_ms: i64,
}

impl AlertConfig {
    /// The channels an alert of `rule` goes to: those of every matching route, or every channel
    /// when no route is configured.
    pub fn channels_for(&self, rule: &Rule) -> Vec<String> {
        if self.routes.is_empty() {
            return self.channels.iter().map(|c| c.name.clone()).collect();
        }
        let mut out: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.severities.is_empty() || r.severities.contains(&rule.severity))
            .filter(|r| r.labels.iter().all(|(k, v)| rule.labels.get(k) == Some(v)))
            .flat_map(|r| r.channels.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    metric: String,
    op: String,
    threshold: f64,
    clear: Option<f64>,
    window: Option<String>,
    min_sample: Option<i64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    per: Option<String>,
    or_consecutive_failures: Option<u32>,
    clear_after_successes: Option<u32>,
    while_callers_waiting: Option<bool>,
    hours: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelSpec {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    routing_key: Option<String>,
    secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    channels: Vec<String>,
    #[serde(default)]
    severity: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// `15m`, `2m`, `30s`, `1h` as milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let (digits, unit) = s
        .trim()
        .split_at(s.trim().find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * ms)
}

/// The built-in rules of METRICS.md §7.
pub fn default_rules() -> Vec<Rule> {
    let base = |name: &str, source, comparison, threshold, clear| Rule {
        name: name.to_owned(),
        source,
        comparison,
        threshold,
        clear,
        window_ms: 15 * 60_000,
        min_sample: 20,
        for_ms: 2 * 60_000,
        severity: Severity::Critical,
        labels: BTreeMap::new(),
        per_trunk: false,
        consecutive_failures: None,
        clear_after_successes: None,
        while_callers_waiting: false,
        hours: None,
    };
    vec![
        base(
            "high_error_rate",
            Source::Window("error_rate"),
            Comparison::Above,
            0.05,
            0.04,
        ),
        Rule {
            severity: Severity::Warning,
            ..base(
                "high_abandonment",
                Source::Window("abandonment_rate"),
                Comparison::Above,
                0.10,
                0.08,
            )
        },
        Rule {
            window_ms: 0,
            min_sample: 0,
            for_ms: 60_000,
            while_callers_waiting: true,
            ..base(
                "no_agents_available",
                Source::Live("agents_available"),
                Comparison::Below,
                1.0,
                1.0,
            )
        },
        Rule {
            window_ms: 10 * 60_000,
            min_sample: 5,
            for_ms: 0,
            per_trunk: true,
            consecutive_failures: Some(5),
            clear_after_successes: Some(3),
            ..base(
                "trunk_unhealthy",
                Source::Window("error_rate"),
                Comparison::Above,
                0.20,
                0.20,
            )
        },
    ]
}

fn rule_from(place: &str, spec: RuleSpec) -> Result<Rule, RuleError> {
    let err = |field: &'static str, problem: String| RuleError {
        place: place.to_owned(),
        field,
        problem,
    };
    let source = if let Some(m) = WINDOW_METRICS.iter().find(|m| **m == spec.metric) {
        Source::Window(m)
    } else if let Some(m) = LIVE_METRICS.iter().find(|m| **m == spec.metric) {
        Source::Live(m)
    } else {
        return Err(err(
            "metric",
            format!(
                "unknown metric `{}` (known: {}, {})",
                spec.metric,
                WINDOW_METRICS.join(", "),
                LIVE_METRICS.join(", ")
            ),
        ));
    };
    let comparison = Comparison::parse(&spec.op)
        .ok_or_else(|| err("op", format!("`{}` is not one of >, >=, <, <=", spec.op)))?;
    if !spec.threshold.is_finite() {
        return Err(err("threshold", "must be a finite number".into()));
    }
    let clear = spec.clear.unwrap_or(match (&source, comparison) {
        (Source::Live(_), _) => spec.threshold,
        (_, Comparison::Above | Comparison::AtLeast) => spec.threshold * 0.8,
        (_, Comparison::Below | Comparison::AtMost) => spec.threshold * 1.2,
    });
    let wrong_side = match comparison {
        Comparison::Above | Comparison::AtLeast => clear > spec.threshold,
        Comparison::Below | Comparison::AtMost => clear < spec.threshold,
    };
    if wrong_side {
        return Err(err(
            "clear",
            "must be on the safe side of the threshold".into(),
        ));
    }
    let duration = |field: &'static str, v: &Option<String>, default: i64| match v {
        None => Ok(default),
        Some(s) => parse_duration(s).ok_or_else(|| {
            err(
                field,
                format!("`{s}` is not a duration like 30s, 15m or 1h"),
            )
        }),
    };
    let window_ms = duration("window", &spec.window, 15 * 60_000)?;
    if matches!(source, Source::Window(_)) && window_ms <= 0 {
        return Err(err("window", "must be longer than 0".into()));
    }
    let per_trunk = match spec.per.as_deref() {
        None => false,
        Some("trunk") => true,
        Some(other) => return Err(err("per", format!("`{other}`: only `trunk` is supported"))),
    };
    if !per_trunk
        && (spec.or_consecutive_failures.is_some() || spec.clear_after_successes.is_some())
    {
        return Err(err(
            "or_consecutive_failures",
            "needs per = \"trunk\"".into(),
        ));
    }
    if per_trunk && matches!(source, Source::Live(_)) {
        return Err(err("per", "live metrics have no trunk".into()));
    }
    let hours = spec
        .hours
        .as_deref()
        .map(|h| {
            let (a, b) = h.split_once('-').unwrap_or((h, ""));
            let t = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").ok();
            t(a).zip(t(b))
                .ok_or_else(|| err("hours", format!("`{h}` is not like 08:00-18:00")))
        })
        .transpose()?;
    Ok(Rule {
        name: spec.name,
        comparison,
        threshold: spec.threshold,
        clear,
        window_ms,
        min_sample: spec.min_sample.unwrap_or(match source {
            Source::Window(_) => 20,
            Source::Live(_) => 0,
        }),
        for_ms: duration("for", &spec.for_, 0)?,
        severity: match spec.severity.as_deref() {
            None => Severity::Warning,
            Some(s) => Severity::parse(s).ok_or_else(|| {
                err(
                    "severity",
                    format!("`{s}` is not info, warning or critical"),
                )
            })?,
        },
        labels: spec.labels,
        per_trunk,
        consecutive_failures: spec.or_consecutive_failures,
        clear_after_successes: spec.clear_after_successes,
        while_callers_waiting: spec.while_callers_waiting.unwrap_or(false),
        hours,
        source,
    })
}

fn channel_from(place: &str, spec: ChannelSpec) -> Result<Channel, RuleError> {
    let err = |field: &'static str, problem: &str| RuleError {
        place: place.to_owned(),
        field,
        problem: problem.to_owned(),
    };
    let url = |default: Option<&str>| {
        spec.url
            .clone()
            .or(default.map(str::to_owned))
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| err("url", "an http:// or https:// URL is required"))
    };
    let kind = match spec.kind.as_str() {
        "alertmanager" => ChannelKind::Alertmanager { url: url(None)? },
        "slack" => ChannelKind::Slack { url: url(None)? },
        "pagerduty" => ChannelKind::PagerDuty {
            url: url(Some("https://events.pagerduty.com/v2/enqueue"))?,
            routing_key: spec.routing_key.clone().ok_or_else(|| {
                err(
                    "routing_key",
                    "PagerDuty needs the integration's routing key",
                )
            })?,
        },
        "webhook" => ChannelKind::Webhook {
            url: url(None)?,
            secret: spec.secret.clone(),
        },
        _ => {
            return Err(err(
                "type",
                "must be alertmanager, slack, pagerduty or webhook",
            ));
        }
    };
    Ok(Channel {
        name: spec.name,
        kind,
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    place: &str,
    value: &toml::Value,
) -> Result<T, RuleError> {
    value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| RuleError {
            place: place.to_owned(),
            field: "",
            problem: e.message().to_owned(),
        })
}

fn list<'a>(table: &'a toml::Table, key: &'static str) -> Result<&'a [toml::Value], RuleError> {
    match table.get(key) {
        None => Ok(&[]),
        Some(toml::Value::Array(items)) => Ok(items),
        Some(_) => Err(RuleError {
            place: "alerts".into(),
            field: key,
            problem: format!("must be a list of tables ([[alerts.{key}]])"),
        }),
    }
}

/// Reads the `[alerts]` table (absent: the defaults, no channels).
pub fn parse(alerts: Option<&toml::Table>) -> Result<AlertConfig, RuleError> {
    let empty = toml::Table::new();
    let table = alerts.unwrap_or(&empty);
    const KNOWN: &[&str] = &[
        "defaults",
        "dashboard_url",
        "interval_seconds",
        "rules",
        "channels",
        "routes",
    ];
    if let Some(k) = table.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(RuleError {
            place: "alerts".into(),
            field: "",
            problem: format!("unknown setting `{k}` (known: {})", KNOWN.join(", ")),
        });
    }
    let mut rules = match table.get("defaults") {
        None | Some(toml::Value::Boolean(true)) => default_rules(),
        Some(toml::Value::Boolean(false)) => vec![],
        Some(_) => {
            return Err(RuleError {
                place: "alerts".into(),
                field: "defaults",
                problem: "must be true or false".into(),
            });
        }
    };
    for (i, value) in list(table, "rules")?.iter().enumerate() {
        let name = value.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        let place = format!("alerts.rules[{i}] ({name})");
        let rule = rule_from(&place, decode(&place, value)?)?;
        // A rule named like a default replaces it.
        rules.retain(|r| r.name != rule.name);
        rules.push(rule);
    }
    let mut channels: Vec<Channel> = Vec::new();
    for (i, value) in list(table, "channels")?.iter().enumerate() {
        let name = value.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        let place = format!("alerts.channels[{i}] ({name})");
        let channel = channel_from(&place, decode(&place, value)?)?;
        if channels.iter().any(|c| c.name == channel.name) {
            return Err(RuleError {
                place,
                field: "name",
                problem: "another channel has this name".into(),
            });
        }
        channels.push(channel);
    }
    let mut routes = Vec::new();
    for (i, value) in list(table, "routes")?.iter().enumerate() {
        let place = format!("alerts.routes[{i}]");
        let spec: RouteSpec = decode(&place, value)?;
        if let Some(unknown) = spec
            .channels
            .iter()
            .find(|c| !channels.iter().any(|ch| ch.name == **c))
        {
            return Err(RuleError {
                place,
                field: "channels",
                problem: format!("no channel named `{unknown}`"),
            });
        }
        let severities = spec
            .severity
            .iter()
            .map(|s| {
                Severity::parse(s).ok_or_else(|| RuleError {
                    place: place.clone(),
                    field: "severity",
                    problem: format!("`{s}` is not info, warning or critical"),
                })
            })
            .collect::<Result<_, _>>()?;
        routes.push(Route {
            channels: spec.channels,
            severities,
            labels: spec.labels,
        });
    }
    let interval_ms = match table.get("interval_seconds") {
        None => 10_000,
        Some(toml::Value::Integer(n)) if *n >= 1 => n * 1000,
        Some(_) => {
            return Err(RuleError {
                place: "alerts".into(),
                field: "interval_seconds",
                problem: "must be a whole number of seconds, at least 1".into(),
            });
        }
    };
    Ok(AlertConfig {
        rules,
        channels,
        routes,
        dashboard_url: table
            .get("dashboard_url")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        interval_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<AlertConfig, RuleError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        parse(table.get("alerts").and_then(|a| a.as_table()))
    }

    #[test]
    fn defaults_are_the_four_rules_of_the_contract() {
        let config = parse_text("").unwrap();
        let names: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "high_error_rate",
                "high_abandonment",
                "no_agents_available",
                "trunk_unhealthy"
            ]
        );
        let error = &config.rules[0];
        assert_eq!(
            (
                error.threshold,
                error.window_ms,
                error.min_sample,
                error.for_ms
            ),
            (0.05, 900_000, 20, 120_000)
        );
        assert!(config.rules[3].per_trunk);
        assert_eq!(config.interval_ms, 10_000);
    }

    #[test]
    fn a_rule_replaces_the_default_of_its_name_and_routes_pick_channels() {
        let config = parse_text(
            r#"
            [alerts]
            [[alerts.rules]]
            name = "high_error_rate"
            metric = "error_rate"
            op = ">"
            threshold = 0.02
            window = "5m"
            for = "30s"
            severity = "critical"
            labels = { team = "voice" }
            [[alerts.channels]]
            name = "pager"
            type = "pagerduty"
            routing_key = "R0UT1NG"
            [[alerts.channels]]
            name = "chat"
            type = "slack"
            url = "https://hooks.slack.test/x"
            [[alerts.routes]]
            channels = ["pager"]
            severity = ["critical"]
            labels = { team = "voice" }
            [[alerts.routes]]
            channels = ["chat"]
            "#,
        )
        .unwrap();
        assert_eq!(config.rules.len(), 4);
        let rule = config
            .rules
            .iter()
            .find(|r| r.name == "high_error_rate")
            .unwrap();
        assert_eq!(
            (rule.threshold, rule.clear, rule.window_ms, rule.for_ms),
            (0.02, 0.016, 300_000, 30_000)
        );
        assert_eq!(config.channels_for(rule), ["chat", "pager"]);
        let abandonment = &config.rules[0];
        assert_eq!(abandonment.severity, Severity::Warning);
        assert_eq!(config.channels_for(abandonment), ["chat"]);
    }

    #[test]
    fn mistakes_name_the_rule_and_the_field() {
        let err = |text: &str| parse_text(text).unwrap_err().to_string();
        assert_eq!(
            err(
                "[[alerts.rules]]\nname = \"x\"\nmetric = \"happiness\"\nop = \">\"\nthreshold = 1"
            ),
            format!(
                "alerts.rules[0] (x).metric: unknown metric `happiness` (known: {}, {})",
                WINDOW_METRICS.join(", "),
                LIVE_METRICS.join(", ")
            )
        );
        assert!(
            err(
                "[[alerts.rules]]\nname = \"y\"\nmetric = \"error_rate\"\nop = \"~\"\nthreshold = 1"
            )
            .starts_with("alerts.rules[0] (y).op:")
        );
        assert!(
            err("[[alerts.rules]]\nname = \"z\"\nmetric = \"error_rate\"\nop = \">\"\nthreshold = 0.1\nwindow = \"soon\"")
                .starts_with("alerts.rules[0] (z).window:")
        );
        assert!(
            err("[[alerts.rules]]\nname = \"w\"\nmetric = \"error_rate\"\nop = \">\"\nthreshold = 0.1\nclear = 0.2")
                .starts_with("alerts.rules[0] (w).clear:")
        );
        let unknown_field = err(
            "[[alerts.rules]]\nname = \"v\"\nmetric = \"error_rate\"\nop = \">\"\nthreshold = 0.1\nwindoww = \"5m\"",
        );
        assert!(
            unknown_field.starts_with("alerts.rules[0] (v).") && unknown_field.contains("windoww"),
            "{unknown_field}"
        );
        assert!(
            err("[[alerts.channels]]\nname = \"c\"\ntype = \"fax\"")
                .starts_with("alerts.channels[0] (c).type:")
        );
        assert!(
            err("[[alerts.routes]]\nchannels = [\"nowhere\"]")
                .starts_with("alerts.routes[0].channels: no channel named `nowhere`")
        );
    }

    #[test]
    fn durations_read_units() {
        assert_eq!(parse_duration("15m"), Some(900_000));
        assert_eq!(parse_duration("30s"), Some(30_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}
