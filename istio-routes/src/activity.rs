//! When requests last reached each destination, from Istio's standard metrics in Prometheus.
//!
//! The gateway counts every request it sends in `istio_requests_total`, one series per
//! destination (and response code, and so on), with the destination's host in
//! `destination_service`: a route's [`Translation::destination_host`](crate::Translation::destination_host).
//! One query answers, for every destination at once, the last evaluation step at which its
//! counter had risen, so the cost does not grow with the number of routes beyond the series
//! Prometheus already keeps.
//!
//! The steps of a PromQL subquery are aligned to multiples of the step in absolute time, so every
//! replica, and a replica started later, computes the same times from the same samples.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

/// The metric the gateway counts requests in.
pub const REQUESTS_METRIC: &str = "istio_requests_total";

/// The label holding a request's destination host.
pub const DESTINATION_LABEL: &str = "destination_service";

/// Which series count as activity, and how finely to look at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityQuery {
    /// The `reporter` label: `source` for what the gateway reports of the requests it sends.
    pub reporter: String,
    /// The `source_workload` label: the gateway's workload (`istio-ingressgateway`).
    pub source_workload: String,
    /// The `source_workload_namespace` label: where the gateway runs (`istio-system`).
    pub source_workload_namespace: String,
    /// The resolution: activity is placed at the end of a step of this length.
    pub step: Duration,
}

impl Default for ActivityQuery {
    fn default() -> Self {
        ActivityQuery {
            reporter: "source".to_owned(),
            source_workload: "istio-ingressgateway".to_owned(),
            source_workload_namespace: crate::ISTIO_SYSTEM.to_owned(),
            step: Duration::from_secs(60),
        }
    }
}

impl ActivityQuery {
    /// The PromQL instant query whose result holds, per `destination_service`, the last step in
    /// the `lookback` before the evaluation time at which requests reached it.
    ///
    /// A step counts when the counter rose within the two steps before it: two, so that a rise
    /// between the last sample of one window and the first of the next is never missed, and so
    /// that a window always holds two samples when Prometheus scrapes at least once a step. A
    /// series that exists now but did not two steps ago counts too: Envoy creates a counter at
    /// its first request, so Prometheus never sees it at zero, and `increase` alone would miss
    /// the first scrape's requests.
    ///
    /// ```
    /// use std::time::Duration;
    /// use istio_routes::activity::ActivityQuery;
    /// let query = ActivityQuery { step: Duration::from_secs(30), ..ActivityQuery::default() };
    /// let promql = query.promql(Duration::from_secs(3600));
    /// assert!(promql.starts_with("max_over_time((max by (destination_service) ("));
    /// assert!(promql.ends_with("))[3600s:30s])"));
    /// assert!(promql.contains(r#"source_workload="istio-ingressgateway""#));
    /// ```
    pub fn promql(&self, lookback: Duration) -> String {
        let step = self.step.as_secs().max(1);
        let window = 2 * step;
        let lookback = lookback.as_secs().max(step);
        let series = format!(
            "{REQUESTS_METRIC}{{reporter=\"{}\",source_workload=\"{}\",source_workload_namespace=\"{}\"}}",
            escape(&self.reporter),
            escape(&self.source_workload),
            escape(&self.source_workload_namespace)
        );
        // Reduced to one series per destination at each step, so that the subquery holds
        // destinations × steps points, whatever the other labels of the gateway's series.
        format!(
            "max_over_time((max by ({DESTINATION_LABEL}) (\
             timestamp(increase({series}[{window}s]) > 0) \
             or timestamp({series} unless {series} offset {window}s)\
             ))[{lookback}s:{step}s])"
        )
    }

    /// The queries that cover `from` to `to`: (evaluation time, lookback) pairs, newest first,
    /// each of at most [`MAX_STEPS`] steps, so that no query loads more than destinations ×
    /// `MAX_STEPS` points (Prometheus refuses a query over 50 million, by default) nor takes
    /// long, and the latest activity is known first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use istio_routes::activity::ActivityQuery;
    /// let query = ActivityQuery { step: Duration::from_secs(60), ..ActivityQuery::default() };
    /// let to: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
    /// let windows = query.windows(to - jiff::SignedDuration::from_hours(24), to);
    /// assert_eq!(windows.len(), 24);
    /// assert_eq!(windows[0], (to, Duration::from_secs(3600)));
    /// ```
    pub fn windows(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Duration)> {
        let step = self.step.max(Duration::from_secs(1));
        let most = step * MAX_STEPS;
        let mut windows = Vec::new();
        let mut end = to;
        loop {
            let left = end.duration_since(from).unsigned_abs();
            let span = left.min(most).max(step);
            windows.push((end, span));
            if left <= most {
                return windows;
            }
            end -= jiff::SignedDuration::try_from(span).expect("a window is short");
        }
    }
}

/// The most steps one query evaluates (see [`ActivityQuery::windows`]).
pub const MAX_STEPS: u32 = 60;

/// A label value inside a PromQL double-quoted string.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Prometheus's answer to the activity query could not be used: an error it reports, or an
/// answer that is not a vector of times.
#[derive(Debug, thiserror::Error)]
#[error("cannot read Prometheus's answer: {0}")]
pub struct InvalidAnswer(pub String);

/// Reads Prometheus's answer to [`ActivityQuery::promql`]: destination host to the last time
/// requests reached it. Fails when Prometheus reports an error or the answer is not a vector.
///
/// ```
/// let body = br#"{"status":"success","data":{"resultType":"vector","result":[
///     {"metric":{"destination_service":"jupyter-alice.hub.svc.cluster.local"},"value":[1764505000,"1764504960"]}]}}"#;
/// let activity = istio_routes::activity::parse_response(body).unwrap();
/// assert_eq!(activity["jupyter-alice.hub.svc.cluster.local"].as_second(), 1764504960);
/// ```
pub fn parse_response(body: &[u8]) -> Result<HashMap<String, Timestamp>, InvalidAnswer> {
    let invalid = InvalidAnswer;
    let response: Response = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the answer is not Prometheus's JSON: {e}")))?;
    if response.status != "success" {
        return Err(invalid(format!(
            "{}: {}",
            response.error_type.unwrap_or_else(|| response.status.clone()),
            response.error.unwrap_or_default()
        )));
    }
    let data = response.data.ok_or_else(|| invalid("the answer has no data".to_owned()))?;
    if data.result_type != "vector" {
        return Err(invalid(format!("expected a vector, got a {}", data.result_type)));
    }
    let mut activity = HashMap::with_capacity(data.result.len());
    for sample in data.result {
        // Aggregated by destination_service, so only a series without it lacks one.
        let Some(host) = sample.metric.get(DESTINATION_LABEL) else { continue };
        let (_, value) = &sample.value;
        let seconds: f64 =
            value.parse().map_err(|_| invalid(format!("{value:?} is not a number of seconds")))?;
        // Milliseconds, the precision configurable-http-proxy writes.
        let stamp = Timestamp::from_millisecond((seconds * 1000.0).round() as i64)
            .map_err(|e| invalid(format!("{value:?} is not a time: {e}")))?;
        activity.insert(host.clone(), stamp);
    }
    Ok(activity)
}

/// A time as configurable-http-proxy writes `last_activity` (JavaScript's `toISOString`):
/// UTC, milliseconds, `Z`.
///
/// ```
/// let stamp: jiff::Timestamp = "2026-11-30T12:34:56Z".parse().unwrap();
/// assert_eq!(istio_routes::activity::iso8601(stamp), "2026-11-30T12:34:56.000Z");
/// ```
pub fn iso8601(stamp: Timestamp) -> String {
    stamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[derive(Debug, Deserialize)]
struct Response {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    metric: HashMap<String, String>,
    /// `[evaluation time, "value"]`: Prometheus writes values as strings.
    value: (f64, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_destination_and_its_time_in_milliseconds() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"destination_service":"a.hub.svc.cluster.local"},"value":[1764505000.5,"1764504960.1234"]},
            {"metric":{"destination_service":"jupyter-0123.hub.jupyterhub-istio-proxy.internal"},"value":[1764505000.5,"1764504900"]},
            {"metric":{},"value":[1764505000.5,"1764504000"]}]}}"#;
        let activity = parse_response(body).unwrap();
        assert_eq!(activity.len(), 2);
        assert_eq!(iso8601(activity["a.hub.svc.cluster.local"]), "2025-11-30T12:16:00.123Z");
        let pod = activity["jupyter-0123.hub.jupyterhub-istio-proxy.internal"];
        assert_eq!(pod.as_second(), 1764504900);
    }

    #[test]
    fn an_empty_result_is_no_activity() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_response(body).unwrap().is_empty());
    }

    #[test]
    fn errors_say_what_prometheus_said() {
        let refused = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let message = parse_response(refused).unwrap_err().to_string();
        assert!(message.contains("bad_data: parse error at char 3"), "{message}");
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_response(matrix).unwrap_err().to_string().contains("expected a vector, got a matrix"));
        assert!(parse_response(b"<html>").unwrap_err().to_string().contains("not Prometheus's JSON"));
        let bad = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"destination_service":"a"},"value":[1,"soon"]}]}}"#;
        assert!(parse_response(bad).unwrap_err().to_string().contains("\"soon\" is not a number"));
    }

    #[test]
    fn label_values_are_escaped_in_the_query() {
        let query = ActivityQuery { source_workload: "gw\"x".to_owned(), ..ActivityQuery::default() };
        let promql = query.promql(Duration::from_secs(10));
        assert!(promql.contains(r#"source_workload="gw\"x""#), "{promql}");
        // A lookback shorter than a step still covers one step.
        assert!(promql.ends_with("))[60s:60s])"), "{promql}");
    }

    #[test]
    fn windows_cover_the_span_newest_first_in_at_most_max_steps_each() {
        let query = ActivityQuery { step: Duration::from_secs(2), ..ActivityQuery::default() };
        let to: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let from = to - jiff::SignedDuration::from_secs(300);
        let windows = query.windows(from, to);
        let spans: Vec<u64> = windows.iter().map(|(_, span)| span.as_secs()).collect();
        assert_eq!(spans, [120, 120, 60]);
        for pair in windows.windows(2) {
            let ((newer, span), (older, _)) = (pair[0], pair[1]);
            assert_eq!(newer - jiff::SignedDuration::try_from(span).unwrap(), older, "no gap, no overlap");
        }
        // A span shorter than a step is still one step; an empty one, one step too.
        assert_eq!(
            query.windows(to - jiff::SignedDuration::from_secs(1), to),
            [(to, Duration::from_secs(2))]
        );
        assert_eq!(query.windows(to, to), [(to, Duration::from_secs(2))]);
    }
}
