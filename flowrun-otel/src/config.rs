//! The standard `OTEL_*` environment variables flowrun honours, read and checked in one place.
//!
//! [`OtelConfig::from_env`] decides whether export is on, picks the transport and rejects
//! values flowrun would not understand (a bad protocol, header list or timeout is a usage
//! error). For OTLP over HTTP, [`HttpTarget`] reads the endpoint, headers and timeout as the
//! specification says; for gRPC, `opentelemetry-otlp` reads them itself. [`Sampler`] is
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, applied to each trace's root span.

use std::time::Duration;

use opentelemetry::trace::TraceId;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Which OTLP transport to use (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`, the default.
    HttpProtobuf,
    /// `grpc`.
    Grpc,
}

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    pub protocol: Protocol,
    pub service_name: String,
    /// The full URL to send to (for HTTP, including `/v1/traces`); `None` lets the exporter
    /// read `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` as the specification says.
    pub endpoint: Option<String>,
}

/// A variable with a value flowrun cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    #[error("`{var}` is `{value}`; use `http/protobuf` or `grpc`")]
    Protocol { var: &'static str, value: String },
    #[error(
        "`{var}` must be a list of `key=value` pairs separated by commas, each key a valid \
         HTTP header name and each value (percent-decoded) a valid header value"
    )]
    Headers { var: &'static str },
    #[error("`{var}` is `{value}`; use a whole number of milliseconds")]
    Timeout { var: &'static str, value: String },
    #[error("`{var}` is not a valid http:// or https:// URL")]
    Endpoint { var: &'static str },
    #[error("cannot start the OpenTelemetry exporter: {0}")]
    Build(String),
}

const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
const PROTOCOLS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// Signal-specific first: its pairs override the generic variable's.
const HEADERS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];
const TIMEOUTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
/// Where OTLP/HTTP goes when no endpoint variable is set.
const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// How long one export request may take (`OTEL_EXPORTER_OTLP_TIMEOUT`'s default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtelConfig {
    /// `None` when no endpoint is set (export off).
    pub fn from_env(default_service: &str) -> Result<Option<OtelConfig>, OtelError> {
        OtelConfig::from_lookup(default_service, env)
    }

    pub(crate) fn from_lookup(
        default_service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtelConfig>, OtelError> {
        if ENDPOINTS.iter().all(|k| var(k).is_none()) {
            return Ok(None);
        }
        let protocol = match PROTOCOLS.iter().find_map(|k| var(k).map(|v| (*k, v))) {
            None => Protocol::HttpProtobuf,
            Some((_, v)) if v.trim() == "http/protobuf" => Protocol::HttpProtobuf,
            Some((_, v)) if v.trim() == "grpc" => Protocol::Grpc,
            Some((k, v)) => return Err(OtelError::Protocol { var: k, value: v }),
        };
        for k in HEADERS {
            if let Some(v) = var(k) {
                parse_headers(k, &v)?;
            }
        }
        timeout(&var)?;
        let service_name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.into());
        Ok(Some(OtelConfig {
            protocol,
            service_name,
            endpoint: None,
        }))
    }
}

/// A variable of the process's environment; unset and blank are the same.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where and how OTLP/HTTP requests go. Its `Debug` shows header names, never values.
pub(crate) struct HttpTarget {
    /// The full URL, `/v1/traces` included.
    pub(crate) url: reqwest::Url,
    /// Marked sensitive, so that `http`'s own `Debug` hides them too.
    pub(crate) headers: HeaderMap,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpTarget {
    /// The target the environment (`var`) describes; `endpoint`, when given, is the full URL
    /// and wins over the variables.
    ///
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as is; `OTEL_EXPORTER_OTLP_ENDPOINT` is a
    /// base to which `/v1/traces` is appended; without either, `localhost:4318`. Headers are
    /// `key=value` pairs separated by commas, values percent-decoded, the traces variable's
    /// pairs over the generic one's; the timeout is in milliseconds (10 s by default).
    pub(crate) fn from_lookup(
        endpoint: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpTarget, OtelError> {
        let (name, url) = match (endpoint, var(ENDPOINTS[0]), var(ENDPOINTS[1])) {
            (Some(url), _, _) => ("the endpoint", url.trim().to_string()),
            (None, Some(url), _) => (ENDPOINTS[0], url.trim().to_string()),
            (None, None, Some(base)) => (
                ENDPOINTS[1],
                format!("{}/v1/traces", base.trim().trim_end_matches('/')),
            ),
            (None, None, None) => ("the endpoint", DEFAULT_HTTP_ENDPOINT.to_string()),
        };
        let url = reqwest::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or(OtelError::Endpoint { var: name })?;
        let mut headers = HeaderMap::new();
        // The generic variable first, so that the traces one overrides its keys.
        for k in HEADERS.iter().rev() {
            if let Some(v) = var(k) {
                for (name, value) in parse_headers(k, &v)? {
                    headers.insert(name, value);
                }
            }
        }
        Ok(HttpTarget {
            url,
            headers,
            timeout: timeout(&var)?,
        })
    }
}

/// `k1=v1,k2=v2` as header pairs, values percent-decoded and marked sensitive. An error names
/// the variable only: headers carry API keys.
fn parse_headers(
    var: &'static str,
    list: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, OtelError> {
    let bad = || OtelError::Headers { var };
    let mut out = Vec::new();
    for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(key.trim().as_bytes()).map_err(|_| bad())?;
        let mut value =
            HeaderValue::from_bytes(&percent_decode(value.trim())).map_err(|_| bad())?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits is kept as is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The export timeout: the traces variable, else the generic one, else 10 s.
fn timeout(var: &impl Fn(&str) -> Option<String>) -> Result<Duration, OtelError> {
    match TIMEOUTS.iter().find_map(|k| var(k).map(|v| (*k, v))) {
        None => Ok(DEFAULT_TIMEOUT),
        Some((k, v)) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| OtelError::Timeout { var: k, value: v }),
    }
}

/// Which traces are recorded, decided once per trace at its root span (a run, or a test or
/// eval session); every other span follows its root. flowrun never continues a trace from
/// elsewhere, so the `parentbased_*` samplers act as their root sampler does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// The fraction of traces kept, by trace id (the SDK's `TraceIdRatioBased`).
    Ratio(f64),
}

impl Sampler {
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`. As the specification asks (and the
    /// SDK did), an unknown sampler or a bad ratio logs a warning and falls back to the
    /// default, `parentbased_always_on`, or a ratio of 1.
    pub(crate) fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Sampler {
        let Some(name) = var("OTEL_TRACES_SAMPLER") else {
            return Sampler::AlwaysOn;
        };
        let ratio = || {
            let arg = var("OTEL_TRACES_SAMPLER_ARG");
            match arg.as_deref().map(str::trim).map(str::parse::<f64>) {
                Some(Ok(r)) if (0.0..=1.0).contains(&r) => Sampler::Ratio(r),
                _ => {
                    tracing::warn!(
                        arg = ?arg,
                        "`OTEL_TRACES_SAMPLER_ARG` must be a ratio from 0 to 1; sampling every trace"
                    );
                    Sampler::Ratio(1.0)
                }
            }
        };
        match name.trim() {
            "always_on" | "parentbased_always_on" => Sampler::AlwaysOn,
            "always_off" | "parentbased_always_off" => Sampler::AlwaysOff,
            "traceidratio" | "parentbased_traceidratio" => ratio(),
            other => {
                tracing::warn!(
                    sampler = other,
                    "unsupported `OTEL_TRACES_SAMPLER`; using `parentbased_always_on`"
                );
                Sampler::AlwaysOn
            }
        }
    }

    /// Whether the trace of a new root span with this id is recorded and exported.
    pub(crate) fn samples(&self, trace_id: TraceId) -> bool {
        match *self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::Ratio(ratio) if ratio >= 1.0 => true,
            Sampler::Ratio(ratio) => {
                // As the SDK's `TraceIdRatioBased`: the low 63 bits of the id against the ratio.
                let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
                let low = u64::from_be_bytes(low_bytes(trace_id));
                (low >> 1) < bound
            }
        }
    }
}

fn low_bytes(trace_id: TraceId) -> [u8; 8] {
    let bytes = trace_id.to_bytes();
    let mut low = [0; 8];
    low.copy_from_slice(&bytes[8..]);
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Option<OtelConfig>, OtelError> {
        OtelConfig::from_lookup("flowrun", |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(
            read(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(),
            None
        );
    }

    #[test]
    fn protocol_and_service_name() {
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "billing"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.service_name, "billing");
        let c = read(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://h:4318/v1/traces",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.service_name, "flowrun");
    }

    #[test]
    fn bad_values_name_the_variable_and_hide_headers() {
        let e = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`OTEL_EXPORTER_OTLP_PROTOCOL` is `http/json`; use `http/protobuf` or `grpc`"
        );
        let e = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "sk-secret-token"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_HEADERS"));
        assert!(!e.to_string().contains("sk-secret"));
    }

    fn target(vars: &[(&str, &str)]) -> Result<HttpTarget, OtelError> {
        target_with(None, vars)
    }

    fn target_with(endpoint: Option<&str>, vars: &[(&str, &str)]) -> Result<HttpTarget, OtelError> {
        HttpTarget::from_lookup(endpoint, |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn http_endpoint_as_the_specification_says() {
        let url = |vars: &[(&str, &str)]| target(vars).unwrap().url.to_string();
        assert_eq!(url(&[]), "http://localhost:4318/v1/traces");
        assert_eq!(
            url(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://h/otlp/")]),
            "https://h/otlp/v1/traces"
        );
        // The signal's own variable is used as is, and wins.
        assert_eq!(
            url(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1234/custom"),
            ]),
            "http://t:1234/custom"
        );
        let given = target_with(
            Some("http://127.0.0.1:9/v1/traces"),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")],
        )
        .unwrap();
        assert_eq!(given.url.as_str(), "http://127.0.0.1:9/v1/traces");
        for bad in ["not a url", "ftp://h/v1/traces", "http://"] {
            let e = target(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", bad)]).unwrap_err();
            assert!(matches!(e, OtelError::Endpoint { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn headers_are_decoded_merged_and_never_shown() {
        let t = target(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                " authorization = Bearer%20sk-secret ,x-tenant=acme,,",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "x-tenant=beta,x-odd=100%,x-eq=a=b",
            ),
        ])
        .unwrap();
        let h = |k: &str| t.headers.get(k).map(|v| v.as_bytes().to_vec());
        assert_eq!(h("authorization"), Some(b"Bearer sk-secret".to_vec()));
        assert_eq!(
            h("x-tenant"),
            Some(b"beta".to_vec()),
            "the traces variable wins"
        );
        assert_eq!(h("x-odd"), Some(b"100%".to_vec()), "a lone % is kept");
        assert_eq!(h("x-eq"), Some(b"a=b".to_vec()));
        assert!(t.headers.values().all(|v| v.is_sensitive()));
        let shown = format!("{t:?}");
        assert!(
            shown.contains("authorization") && !shown.contains("sk-secret"),
            "{shown}"
        );
        for bad in [
            "novalue",
            "bad key=v",
            "=vsecret",
            "k=line%0Abreak",
            "k=%00",
        ] {
            let e = target(&[("OTEL_EXPORTER_OTLP_HEADERS", bad)]).unwrap_err();
            assert!(matches!(e, OtelError::Headers { .. }), "{bad}");
            let text = e.to_string();
            assert!(!text.contains(bad), "{text}");
        }
        // `from_env` rejects the same values before anything starts.
        let e = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "k=line%0Abreak"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_TRACES_HEADERS"));
    }

    #[test]
    fn timeouts_in_milliseconds() {
        let timeout = |vars: &[(&str, &str)]| target(vars).map(|t| t.timeout);
        assert_eq!(timeout(&[]).unwrap(), Duration::from_secs(10));
        assert_eq!(
            timeout(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(
            timeout(&[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "300"),
            ])
            .unwrap(),
            Duration::from_millis(300)
        );
        let e = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`OTEL_EXPORTER_OTLP_TIMEOUT` is `10s`; use a whole number of milliseconds"
        );
    }

    fn sampler(vars: &[(&str, &str)]) -> Sampler {
        Sampler::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn samplers_from_the_environment() {
        assert_eq!(sampler(&[]), Sampler::AlwaysOn);
        for (name, expected) in [
            ("always_on", Sampler::AlwaysOn),
            ("parentbased_always_on", Sampler::AlwaysOn),
            ("always_off", Sampler::AlwaysOff),
            ("parentbased_always_off", Sampler::AlwaysOff),
            ("jaeger_remote", Sampler::AlwaysOn),
            ("nonsense", Sampler::AlwaysOn),
        ] {
            assert_eq!(
                sampler(&[("OTEL_TRACES_SAMPLER", name)]),
                expected,
                "{name}"
            );
        }
        for name in ["traceidratio", "parentbased_traceidratio"] {
            let with = |arg: &str| {
                sampler(&[
                    ("OTEL_TRACES_SAMPLER", name),
                    ("OTEL_TRACES_SAMPLER_ARG", arg),
                ])
            };
            assert_eq!(with("0.25"), Sampler::Ratio(0.25));
            assert_eq!(with("0"), Sampler::Ratio(0.0));
            assert_eq!(with("2"), Sampler::Ratio(1.0), "out of range: the default");
            assert_eq!(with("NaN"), Sampler::Ratio(1.0));
            assert_eq!(with("half"), Sampler::Ratio(1.0));
            assert_eq!(
                sampler(&[("OTEL_TRACES_SAMPLER", name)]),
                Sampler::Ratio(1.0)
            );
        }
    }

    #[test]
    fn ratios_decide_by_the_trace_ids_low_bits() {
        let id = |low: u64| TraceId::from(u128::from(low) | (0xffff_u128 << 64));
        assert!(Sampler::Ratio(1.0).samples(id(u64::MAX)));
        assert!(!Sampler::Ratio(0.0).samples(id(0)));
        assert!(Sampler::Ratio(0.5).samples(id(0)));
        assert!(Sampler::Ratio(0.5).samples(id((1 << 63) - 1)));
        assert!(!Sampler::Ratio(0.5).samples(id(1 << 63)));
        assert!(!Sampler::AlwaysOff.samples(id(0)));
        assert!(Sampler::AlwaysOn.samples(id(u64::MAX)));
    }
}
