//! HTTP helpers shared by the provider modules: error mapping from status codes and
//! transport failures, `Retry-After` parsing, and API-key redaction.
//!
//! Everything here is shaped for the executor's retry loop: 429 and 5xx carry the wait the
//! server asked for, and no message built here ever contains the API key (keys travel in
//! headers, which reqwest never prints; bodies that echo a key are scrubbed by [`redact`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use super::ProviderError;

/// Longest error-body excerpt kept in a message, in bytes.
pub const MAX_BODY_EXCERPT: usize = 512;

/// Maps a non-success HTTP reply to the error the retry loop understands.
///
/// The message is the provider's `error.message` when the body is JSON of that shape, else a
/// truncated copy of the body.
pub fn error_from_status(status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
    let message = error_message(body);
    match status {
        429 => ProviderError::RateLimited {
            retry_after: retry_after(headers),
            message,
        },
        500..=599 => ProviderError::Server {
            status,
            retry_after: retry_after(headers),
            message,
        },
        401 | 403 => ProviderError::Auth { status, message },
        400..=499 => ProviderError::InvalidRequest { status, message },
        _ => ProviderError::BadResponse(format!("unexpected HTTP status {status}: {message}")),
    }
}

/// Reads the body of a failed reply and maps it with [`error_from_status`].
pub async fn error_from_response(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // A body that cannot be read still leaves the status, which is what matters most.
    let body = response.text().await.unwrap_or_default();
    error_from_status(status, &headers, &body)
}

/// The human part of an error body: `error.message` (OpenAI, Anthropic), a string `error`
/// (Ollama and friends), or else the body itself, truncated.
pub fn error_message(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let error = v.get("error")?;
        error
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| error.as_str())
    });
    match from_json {
        Some(message) => truncate(message, MAX_BODY_EXCERPT),
        None if body.trim().is_empty() => "(empty body)".to_owned(),
        None => truncate(body.trim(), MAX_BODY_EXCERPT),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The wait a reply asks for: OpenAI's `retry-after-ms` when present (it is the more
/// precise), else the standard `Retry-After`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("retry-after-ms")
        .and_then(parse_retry_after_ms)
        .or_else(|| header("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now())))
}

/// Parses a `retry-after-ms` value: a non-negative number of milliseconds.
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let millis: f64 = value.trim().parse().ok()?;
    non_negative_secs(millis / 1000.0)
}

/// Parses a `Retry-After` value: delta-seconds (`120`), fractional seconds (`1.5`, which some
/// APIs send), or an HTTP-date, measured from `now` (a date in the past means no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return non_negative_secs(secs);
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn non_negative_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the HTTP-date form servers send.
/// The weekday is not checked.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let rest = value.split_once(',').map_or(value, |(_, rest)| rest);
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if !zone.eq_ignore_ascii_case("GMT") && !zone.eq_ignore_ascii_case("UTC") {
        return None;
    }
    let day: u32 = day.parse().ok()?;
    let month = month_number(month)?;
    let year: i64 = year.parse().ok()?;
    let secs_of_day = parse_clock(time)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + secs_of_day;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let index = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))?;
    u32::try_from(index + 1).ok()
}

fn parse_clock(time: &str) -> Option<i64> {
    let mut fields = time.split(':').map(|f| f.parse::<i64>().ok());
    let (h, m, s) = (fields.next()??, fields.next()??, fields.next()??);
    let valid = fields.next().is_none() && (0..24).contains(&h) && (0..60).contains(&m);
    (valid && (0..=60).contains(&s)).then_some(h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Maps a reqwest failure: timeouts to [`ProviderError::Timeout`] (with the request timeout
/// when the caller knows it, else zero), everything else (refused or reset connections, broken
/// bodies) to [`ProviderError::Transport`] with the whole cause chain.
pub fn map_reqwest_error(err: &reqwest::Error, timeout: Option<Duration>) -> ProviderError {
    if err.is_timeout() {
        return ProviderError::Timeout(timeout.unwrap_or_default());
    }
    ProviderError::Transport(error_chain(err))
}

/// `err` and its sources, joined with `: ` (reqwest's own message alone hides the cause).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Replaces every occurrence of `api_key` in the error's message with `<redacted>`, in case a
/// server echoes the key back in an error body.
pub fn redact(err: ProviderError, api_key: Option<&str>) -> ProviderError {
    let Some(key) = api_key.filter(|k| !k.is_empty()) else {
        return err;
    };
    let scrub = |m: String| m.replace(key, "<redacted>");
    match err {
        ProviderError::RateLimited {
            retry_after,
            message,
        } => ProviderError::RateLimited {
            retry_after,
            message: scrub(message),
        },
        ProviderError::Server {
            status,
            retry_after,
            message,
        } => ProviderError::Server {
            status,
            retry_after,
            message: scrub(message),
        },
        ProviderError::Auth { status, message } => ProviderError::Auth {
            status,
            message: scrub(message),
        },
        ProviderError::InvalidRequest { status, message } => ProviderError::InvalidRequest {
            status,
            message: scrub(message),
        },
        ProviderError::Transport(m) => ProviderError::Transport(scrub(m)),
        ProviderError::BadResponse(m) => ProviderError::BadResponse(scrub(m)),
        ProviderError::Config(m) => ProviderError::Config(scrub(m)),
        other @ (ProviderError::Timeout(_)
        | ProviderError::Cancelled
        | ProviderError::BudgetExceeded(_)) => other,
    }
}

/// Sends a request, mapping transport failures and non-success statuses to errors.
pub async fn send(
    request: reqwest::RequestBuilder,
    timeout: Option<Duration>,
) -> Result<reqwest::Response, ProviderError> {
    let request = match timeout {
        Some(t) => request.timeout(t),
        None => request,
    };
    let response = request
        .send()
        .await
        .map_err(|e| map_reqwest_error(&e, timeout))?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(error_from_response(response).await)
    }
}

/// Reads a successful reply's body as JSON.
pub async fn read_json(
    response: reqwest::Response,
    timeout: Option<Duration>,
) -> Result<serde_json::Value, ProviderError> {
    let body = response
        .text()
        .await
        .map_err(|e| map_reqwest_error(&e, timeout))?;
    serde_json::from_str(&body).map_err(|e| {
        ProviderError::BadResponse(format!(
            "response is not JSON ({e}): {}",
            truncate(&body, MAX_BODY_EXCERPT)
        ))
    })
}

/// Whether a reply declares a JSON body (rather than an event stream).
pub fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn status_mapping() {
        let h = headers(&[("retry-after", "7")]);
        let body = r#"{"error":{"message":"slow down","type":"rate_limit"}}"#;
        assert_eq!(
            error_from_status(429, &h, body),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                message: "slow down".into()
            }
        );
        assert_eq!(
            error_from_status(
                529,
                &h,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            ProviderError::Server {
                status: 529,
                retry_after: Some(Duration::from_secs(7)),
                message: "Overloaded".into()
            }
        );
        assert_eq!(
            error_from_status(503, &HeaderMap::new(), "upstream down"),
            ProviderError::Server {
                status: 503,
                retry_after: None,
                message: "upstream down".into()
            }
        );
        for status in [401, 403] {
            assert_eq!(
                error_from_status(status, &h, "{}"),
                ProviderError::Auth {
                    status,
                    message: "{}".into()
                }
            );
        }
        for status in [400, 404, 409, 413, 422, 418] {
            let err = error_from_status(status, &h, r#"{"error":"model not found"}"#);
            assert_eq!(
                err,
                ProviderError::InvalidRequest {
                    status,
                    message: "model not found".into()
                }
            );
        }
        assert_eq!(error_from_status(302, &h, "").kind(), "bad_response");
    }

    #[test]
    fn long_bodies_are_truncated_on_char_boundaries() {
        let body = "é".repeat(1000);
        let message = error_message(&body);
        assert!(message.ends_with('…'));
        assert!(message.len() <= MAX_BODY_EXCERPT + '…'.len_utf8());
        assert_eq!(error_message("  "), "(empty body)");
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after_ms("250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after_ms("NaN"), None);
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let h = headers(&[("retry-after", "2"), ("retry-after-ms", "1500")]);
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let h = headers(&[("retry-after", "2"), ("retry-after-ms", "junk")]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn http_dates() {
        let at = |s| parse_http_date(s).and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        assert_eq!(
            at("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(784_111_777))
        );
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            at("Tue, 29 Feb 2000 23:59:59 GMT"),
            Some(Duration::from_secs(951_868_799))
        );
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(at("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(at("Sun, 06 Nov 1994 25:49:37 GMT"), None);
    }

    #[test]
    fn redaction_scrubs_every_message() {
        let err = ProviderError::Auth {
            status: 401,
            message: "bad key sk-secret (sk-secret)".into(),
        };
        let redacted = redact(err, Some("sk-secret"));
        assert_eq!(
            redacted,
            ProviderError::Auth {
                status: 401,
                message: "bad key <redacted> (<redacted>)".into()
            }
        );
        let err = ProviderError::Transport("x".into());
        assert_eq!(redact(err.clone(), Some("")), err);
        assert_eq!(redact(err.clone(), None), err);
    }
}

/// Where and how an HTTP provider connects; shared by every provider module. `Debug` never
/// shows the key.
#[derive(Clone)]
pub struct Endpoint {
    pub client: reqwest::Client,
    /// The API root, without a trailing `/`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// Per-request timeout; `None` leaves it to the executor.
    pub timeout: Option<Duration>,
}

impl Endpoint {
    pub fn new(
        client: reqwest::Client,
        base_url: impl Into<String>,
        api_key: Option<String>,
    ) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Endpoint {
            client,
            base_url,
            api_key,
            timeout: None,
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
