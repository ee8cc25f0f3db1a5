//! `callpulse report`: the metrics API's answer as a table in the terminal.

use anyhow::{Context, bail};
use callpulse_core::Timestamp;
use callpulse_core::metrics::Metrics;
use callpulse_server::config::ReportArgs;
use callpulse_server::metrics::{self, GroupBy, GroupKey, MetricsQuery, summary_windows};
use callpulse_server::pipeline::now;
use callpulse_server::store::{self, MetricFilter};
use chrono::NaiveDate;
use chrono_tz::Tz;

fn instant(raw: &str, tz: Tz) -> anyhow::Result<Timestamp> {
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(Timestamp(
            metrics::start_of_day(date, tz).timestamp_millis(),
        ));
    }
    let t = chrono::DateTime::parse_from_rfc3339(raw)
        .with_context(|| format!("`{raw}` is not an RFC 3339 time or a date YYYY-MM-DD"))?;
    Ok(Timestamp(t.timestamp_millis()))
}

fn cell(v: Option<f64>, percent: bool) -> String {
    match v {
        None => "-".into(),
        Some(x) if percent => format!("{:.1}%", x * 100.0),
        Some(x) => format!("{x:.1}"),
    }
}

fn row(label: &str, m: &Metrics) -> String {
    format!(
        "{label:<26} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        m.total_calls,
        m.in_progress_calls,
        cell(m.answer_rate, true),
        cell(m.abandonment_rate, true),
        cell(m.service_level, true),
        cell(m.error_rate, true),
        cell(m.avg_speed_of_answer_seconds, false),
        cell(m.avg_handle_time_seconds, false),
        cell(m.transfer_rate, true),
    )
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let tz = args.tz.unwrap_or(args.metrics.timezone);
    let now = now();
    let from = match &args.from {
        Some(raw) => instant(raw, tz)?,
        None => summary_windows(None, tz, now).today.0,
    };
    let to = args
        .to
        .as_deref()
        .map(|raw| instant(raw, tz))
        .transpose()?
        .unwrap_or(now);
    let group_by = match args.group_by.as_deref() {
        None => None,
        Some(g) => match GroupBy::parse(g) {
            Some(g) => Some(g),
            None => bail!("--group-by must be hour, day, trunk, agent, queue or direction"),
        },
    };
    let params = args.metrics.metric_params();
    let store = store::open(&args.store.database, params)
        .await
        .with_context(|| format!("opening {}", args.store.database))?;
    let query = MetricsQuery {
        from,
        to,
        filter: MetricFilter::default(),
        group_by,
        tz,
    };
    let answer = metrics::query(store.as_ref(), &query).await?;
    println!(
        "{:<26} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "group",
        "calls",
        "active",
        "answer",
        "abandon",
        "SL",
        "error",
        "ASA s",
        "AHT s",
        "transfer"
    );
    for (key, tally) in &answer.groups {
        let label = match key {
            GroupKey::Time(t) => t.format("%Y-%m-%d %H:%M %z").to_string(),
            GroupKey::Value(v) => v.clone().unwrap_or_else(|| "(none)".into()),
        };
        println!("{}", row(&label, &tally.metrics()));
    }
    println!("{}", row("total", &answer.totals.metrics()));
    Ok(())
}
