//! Durations written the human way in files: `60s`, `500ms`, `2m`.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `std::time::Duration` read from `"60s"`, `"1m 30s"`, `"250ms"`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Secs(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Secs(s) if s >= 0.0 && s.is_finite() => {
                Ok(Duration(std::time::Duration::from_secs_f64(s)))
            }
            Repr::Secs(s) => Err(serde::de::Error::custom(format!(
                "invalid duration {s}: must be positive"
            ))),
            Repr::Text(t) => humantime::parse_duration(&t).map(Duration).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{t}`: {e}; write it like `30s`, `500ms` or `2m`"
                ))
            }),
        }
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as `30s`, `500ms`, `2m`, or a number of seconds",
            "type": ["string", "number"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_and_numbers() {
        let d: Duration = serde_json::from_value(serde_json::json!("1m 30s")).unwrap();
        assert_eq!(d.0.as_secs(), 90);
        let d: Duration = serde_json::from_value(serde_json::json!(0.25)).unwrap();
        assert_eq!(d.0.as_millis(), 250);
        let err = serde_json::from_value::<Duration>(serde_json::json!("soon")).unwrap_err();
        assert!(err.to_string().contains("invalid duration `soon`"));
    }
}
