//! Today against last week (METRICS.md §6): red when a metric breaks its target, amber when it is
//! worse than last week by more than a margin, grey when too few calls stand behind it.

use super::Metrics;

/// Which way is better for a metric, and its target if it has one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    HigherIsBetter,
    LowerIsBetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Bad,
    Insufficient,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Bad => "bad",
            Status::Insufficient => "insufficient",
        }
    }
}

/// Targets and margins for the judged metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    pub answer_rate: f64,
    pub abandonment_rate: f64,
    pub avg_speed_of_answer_seconds: f64,
    pub service_level: f64,
    pub error_rate: f64,
    /// Amber when a ratio is worse than last week by more than this many points.
    pub warn_margin_points: f64,
    /// Amber when a duration is worse than last week by more than this fraction.
    pub warn_margin_ratio: f64,
    /// Fewer calls than this behind a metric: `insufficient`.
    pub min_calls: i64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            answer_rate: 0.95,
            abandonment_rate: 0.05,
            avg_speed_of_answer_seconds: 30.0,
            service_level: 0.80,
            error_rate: 0.01,
            warn_margin_points: 0.05,
            warn_margin_ratio: 0.2,
            min_calls: 10,
        }
    }
}

/// One judged metric: its name, how to read it from `Metrics`, its goal, the calls behind it,
/// and whether it is a ratio (margins in points) or a duration (margins as a fraction).
pub struct Judged {
    pub name: &'static str,
    pub value: fn(&Metrics) -> Option<f64>,
    pub goal: Goal,
    pub sample: fn(&Metrics) -> i64,
    pub is_ratio: bool,
}

impl Targets {
    /// The metrics the summary judges, with their goals.
    pub fn judged(&self) -> Vec<Judged> {
        vec![
            Judged {
                name: "total_calls",
                value: |m| Some(m.total_calls as f64),
                goal: Goal::HigherIsBetter,
                sample: |m| m.total_calls,
                is_ratio: false,
            },
            Judged {
                name: "answer_rate",
                value: |m| m.answer_rate,
                goal: Goal::AtLeast(self.answer_rate),
                sample: |m| m.inbound_calls,
                is_ratio: true,
            },
            Judged {
                name: "avg_handle_time_seconds",
                value: |m| m.avg_handle_time_seconds,
                goal: Goal::LowerIsBetter,
                sample: |m| m.answered_calls,
                is_ratio: false,
            },
            Judged {
                name: "abandonment_rate",
                value: |m| m.abandonment_rate,
                goal: Goal::AtMost(self.abandonment_rate),
                sample: |m| m.inbound_calls,
                is_ratio: true,
            },
            Judged {
                name: "avg_speed_of_answer_seconds",
                value: |m| m.avg_speed_of_answer_seconds,
                goal: Goal::AtMost(self.avg_speed_of_answer_seconds),
                sample: |m| m.answered_calls,
                is_ratio: false,
            },
            Judged {
                name: "service_level",
                value: |m| m.service_level,
                goal: Goal::AtLeast(self.service_level),
                sample: |m| m.inbound_calls,
                is_ratio: true,
            },
            Judged {
                name: "error_rate",
                value: |m| m.error_rate,
                goal: Goal::AtMost(self.error_rate),
                sample: |m| m.total_calls,
                is_ratio: true,
            },
            Judged {
                name: "transfer_rate",
                value: |m| m.transfer_rate,
                goal: Goal::LowerIsBetter,
                sample: |m| m.answered_calls,
                is_ratio: true,
            },
            Judged {
                name: "connect_rate",
                value: |m| m.connect_rate,
                goal: Goal::HigherIsBetter,
                sample: |m| m.outbound_calls,
                is_ratio: true,
            },
        ]
    }

    /// The status of one metric today, given last week.
    pub fn judge(&self, metric: &Judged, today: &Metrics, last_week: &Metrics) -> Status {
        let Some(value) = (metric.value)(today) else {
            return Status::Insufficient;
        };
        if metric.name != "total_calls" && (metric.sample)(today) < self.min_calls {
            return Status::Insufficient;
        }
        let breaks = match metric.goal {
            Goal::AtLeast(t) => value < t,
            Goal::AtMost(t) => value > t,
            Goal::HigherIsBetter | Goal::LowerIsBetter => false,
        };
        if breaks {
            return Status::Bad;
        }
        let previous = (metric.value)(last_week).filter(|_| {
            metric.name == "total_calls" || (metric.sample)(last_week) >= self.min_calls
        });
        let Some(previous) = previous else {
            return Status::Ok;
        };
        let higher_is_better = matches!(metric.goal, Goal::AtLeast(_) | Goal::HigherIsBetter);
        let worse_by = if higher_is_better {
            previous - value
        } else {
            value - previous
        };
        let margin = if metric.is_ratio {
            self.warn_margin_points
        } else {
            self.warn_margin_ratio * previous.abs()
        };
        if worse_by > margin {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(answer_rate: Option<f64>, inbound: i64) -> Metrics {
        Metrics {
            answer_rate,
            inbound_calls: inbound,
            ..Metrics::default()
        }
    }

    #[test]
    fn answer_rate_is_red_below_target_amber_when_worse_grey_when_few() {
        let t = Targets::default();
        let m = &t.judged()[1];
        assert_eq!(m.name, "answer_rate");
        assert_eq!(
            t.judge(m, &with(Some(0.90), 100), &with(Some(0.99), 100)),
            Status::Bad
        );
        assert_eq!(
            t.judge(m, &with(Some(0.96), 100), &with(Some(0.99), 100)),
            Status::Ok
        );
        let strict = Targets {
            warn_margin_points: 0.02,
            ..Targets::default()
        };
        assert_eq!(
            strict.judge(m, &with(Some(0.96), 100), &with(Some(0.99), 100)),
            Status::Warn
        );
        assert_eq!(
            t.judge(m, &with(Some(0.5), 3), &with(Some(0.99), 100)),
            Status::Insufficient
        );
        assert_eq!(
            t.judge(m, &with(None, 0), &with(Some(0.99), 100)),
            Status::Insufficient
        );
        assert_eq!(
            t.judge(m, &with(Some(0.97), 100), &with(None, 0)),
            Status::Ok
        );
    }

    #[test]
    fn durations_use_a_relative_margin() {
        let t = Targets::default();
        let aht = &t.judged()[2];
        let m = |s: f64| Metrics {
            avg_handle_time_seconds: Some(s),
            answered_calls: 50,
            ..Metrics::default()
        };
        assert_eq!(t.judge(aht, &m(125.0), &m(100.0)), Status::Warn);
        assert_eq!(t.judge(aht, &m(115.0), &m(100.0)), Status::Ok);
    }
}
