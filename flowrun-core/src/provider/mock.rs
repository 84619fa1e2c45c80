//! The offline provider: deterministic replies with no network and no key.
//!
//! It answers from the project's rules (first match on the latest user message or tool
//! result), otherwise echoes that message; when JSON is requested it builds the smallest value
//! that matches the schema, so examples with structured steps run offline. Rules may call
//! tools (`tool_calls:`), so agents run offline too: a rule matching the user's question calls
//! a tool, a rule matching the tool's result answers. Token counts are words, so runs show
//! usage, and the price is zero.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{
    ChatRequest, ChatResponse, DeltaFn, Provider, ProviderError, ResponseFormat, Role, ToolCall,
    ToolChoice, Usage,
};
use crate::spec::MockRule;

/// A deterministic offline provider.
#[derive(Debug, Clone, Default)]
pub struct MockProvider {
    rules: Vec<MockRule>,
}

impl MockProvider {
    pub fn new(rules: Vec<MockRule>) -> Self {
        MockProvider { rules }
    }

    fn reply(&self, request: &ChatRequest) -> (String, Vec<ToolCall>) {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| matches!(m.role, Role::User | Role::Tool))
            .map_or("", |m| m.content.as_str());
        let lower = last_user.to_lowercase();
        let may_call = !request.tools.is_empty() && request.tool_choice != Some(ToolChoice::None);
        let rule = self.rules.iter().find(|r| {
            let offered = r.tool_calls.is_empty()
                || (may_call
                    && r.tool_calls
                        .iter()
                        .all(|c| request.tools.iter().any(|t| t.name == c.name)));
            offered
                && r.when
                    .as_ref()
                    .is_none_or(|w| lower.contains(&w.to_lowercase()))
        });
        if let Some(rule) = rule {
            // Ids are deterministic: the turn (assistant messages so far) and the position.
            let turn = request
                .messages
                .iter()
                .filter(|m| m.role == Role::Assistant)
                .count();
            let calls = rule
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, c)| ToolCall {
                    id: format!("mock_call_{turn}_{i}"),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect();
            return (rule.reply.clone(), calls);
        }
        let text = match &request.response_format {
            ResponseFormat::Text => format!("echo: {last_user}"),
            ResponseFormat::Json {
                schema: Some(schema),
            } => example_of(schema, last_user).to_string(),
            ResponseFormat::Json { schema: None } => json!({ "echo": last_user }).to_string(),
        };
        (text, Vec::new())
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

#[async_trait]
impl Provider for MockProvider {
    async fn chat(
        &self,
        request: &ChatRequest,
        on_delta: Option<&DeltaFn>,
    ) -> Result<ChatResponse, ProviderError> {
        let (text, tool_calls) = self.reply(request);
        if let Some(f) = on_delta {
            for piece in text.split_inclusive(' ') {
                f(piece);
            }
        }
        let usage = Usage {
            input_tokens: request.messages.iter().map(|m| words(&m.content)).sum(),
            output_tokens: words(&text) + tool_calls.len() as u64,
            ..Usage::default()
        };
        let mut raw = json!({ "model": request.model, "text": text });
        if !tool_calls.is_empty() {
            raw["tool_calls"] = json!(tool_calls);
        }
        Ok(ChatResponse {
            text,
            usage,
            finish_reason: Some(
                if tool_calls.is_empty() {
                    "stop"
                } else {
                    "tool_calls"
                }
                .into(),
            ),
            model: request.model.clone(),
            raw,
            tool_calls,
        })
    }
}

/// The smallest value matching `schema`, with strings taken from `seed`.
fn example_of(schema: &Value, seed: &str) -> Value {
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    out.insert(k.clone(), example_of(s, seed));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = schema
                .get("items")
                .map_or(Value::String(seed.into()), |s| example_of(s, seed));
            let min = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            Value::Array(vec![item; min as usize])
        }
        "integer" => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(0)),
        "number" => json!(schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0)),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => Value::String(seed.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Message, Params};

    fn request(text: &str, format: ResponseFormat) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![
                Message::new(Role::System, "be brief"),
                Message::new(Role::User, text),
            ],
            params: Params::default(),
            response_format: format,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
        }
    }

    #[tokio::test]
    async fn echoes_with_word_usage() {
        let r = MockProvider::default()
            .chat(&request("hello there", ResponseFormat::Text), None)
            .await
            .unwrap();
        assert_eq!(r.text, "echo: hello there");
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (4, 3));
    }

    #[tokio::test]
    async fn rules_match_case_insensitively() {
        let p = MockProvider::new(vec![MockRule {
            when: Some("REFUND".into()),
            reply: "billing".into(),
            ..MockRule::default()
        }]);
        let r = p
            .chat(&request("I want a refund", ResponseFormat::Text), None)
            .await
            .unwrap();
        assert_eq!(r.text, "billing");
    }

    #[tokio::test]
    async fn json_follows_the_schema() {
        let schema = json!({"type": "object", "properties": {"category": {"enum": ["billing", "bug"]}, "urgent": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}}}});
        let r = MockProvider::default()
            .chat(
                &request(
                    "x",
                    ResponseFormat::Json {
                        schema: Some(schema),
                    },
                ),
                None,
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&r.text).unwrap();
        assert_eq!(
            v,
            json!({"category": "billing", "urgent": false, "tags": ["x"]})
        );
    }

    #[tokio::test]
    async fn rules_call_offered_tools_then_answer_from_the_result() {
        let p = MockProvider::new(vec![
            MockRule {
                when: Some("weather".into()),
                tool_calls: vec![crate::spec::MockToolCall {
                    name: "forecast".into(),
                    arguments: json!({"city": "Paris"}),
                }],
                ..MockRule::default()
            },
            MockRule {
                when: Some("sunny".into()),
                reply: "It is sunny.".into(),
                ..MockRule::default()
            },
        ]);
        let mut req = request("weather in Paris?", ResponseFormat::Text);
        // Without the tool on offer the calling rule does not apply.
        let r = p.chat(&req, None).await.unwrap();
        assert_eq!(
            (r.text.as_str(), r.tool_calls.len()),
            ("echo: weather in Paris?", 0)
        );
        req.tools = vec![crate::provider::ToolDef {
            name: "forecast".into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        }];
        let r = p.chat(&req, None).await.unwrap();
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.tool_calls[0].id, "mock_call_0_0");
        assert_eq!(r.tool_calls[0].arguments, json!({"city": "Paris"}));
        req.messages
            .push(Message::assistant_calls("", r.tool_calls.clone()));
        req.messages
            .push(Message::tool_result("mock_call_0_0", "sunny, 21 C", false));
        let r = p.chat(&req, None).await.unwrap();
        assert_eq!((r.text.as_str(), r.tool_calls.len()), ("It is sunny.", 0));
    }

    #[tokio::test]
    async fn streaming_pieces_add_up() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = seen.clone();
        let f = move |s: &str| sink.lock().unwrap().push_str(s);
        let r = MockProvider::default()
            .chat(&request("a b c", ResponseFormat::Text), Some(&f))
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), r.text);
    }
}
