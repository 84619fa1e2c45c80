//! The standard `OTEL_*` environment variables flowrun honours, read and checked in one place.
//!
//! Endpoint, headers and timeouts are read again by `opentelemetry-otlp` itself (it appends
//! `/v1/traces` to an HTTP base endpoint as the specification says); here we decide whether
//! export is on, pick the transport and reject values it would not understand.

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
    #[error("`{var}` must be a list of `key=value` pairs separated by commas")]
    Headers { var: &'static str },
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
const HEADERS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

impl OtelConfig {
    /// `None` when no endpoint is set (export off).
    pub fn from_env(default_service: &str) -> Result<Option<OtelConfig>, OtelError> {
        OtelConfig::from_lookup(default_service, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
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
            if let Some(v) = var(k)
                && !v
                    .split(',')
                    .filter(|p| !p.trim().is_empty())
                    .all(|p| p.split_once('=').is_some_and(|(k, _)| !k.trim().is_empty()))
            {
                // Never echo the value: headers carry API keys.
                return Err(OtelError::Headers { var: k });
            }
        }
        let service_name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.into());
        Ok(Some(OtelConfig {
            protocol,
            service_name,
            endpoint: None,
        }))
    }
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
}
