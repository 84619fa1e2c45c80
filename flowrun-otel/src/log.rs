//! A sink's event log: what the span builder reads of each run event, copied as bytes when
//! the event is emitted ([`write`]) and read back as borrowed views ([`Reader`]) when the
//! spans are built, later and elsewhere (`sink.rs`).
//!
//! Why: building spans where the events are emitted, between a run's SQLite commits and HTTP
//! exchanges, ran every handler about three times slower than in a loop of its own (its data
//! and code cold each time; BENCHMARKS.md, "Session 6"). Copying a few hundred bytes is all a
//! runtime worker does now; a thread of the exporter's own builds many runs' spans at once.
//! Not a clone of the event: no allocation per event, no memory freed on another thread.
//!
//! The format is private to this module and never leaves the process: each record is a tag
//! byte and its fields in order (integers little-endian, text as a `u32` length and the
//! bytes, an optional value as a presence byte and the value).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowrun_core::RunEvent;
use flowrun_core::RunStatus;
use flowrun_core::cost::Cost;
use flowrun_core::provider::Usage;

const RUN_STARTED: u8 = 1;
const STEP_STARTED: u8 = 2;
const CALL_ATTEMPT: u8 = 3;
const STEP_FINISHED: u8 = 4;
const STEP_REUSED: u8 = 5;
const RUN_FINISHED: u8 = 6;

/// Appends what the span builder needs of `event`; returns false (and appends nothing) for
/// an event it has no use for. Text that only `capture_content` shows is copied only with it.
pub(crate) fn write(log: &mut Vec<u8>, event: &RunEvent, capture: bool) -> bool {
    let mut w = Writer(log);
    match event {
        RunEvent::RunStarted(s) => {
            w.u8(RUN_STARTED);
            w.str(&s.run_id);
            w.str(&s.target_kind);
            w.str(&s.target);
            w.str(&s.version);
            w.i64(s.started_at_ms);
            w.opt_str(capture.then(|| s.input.to_string()).as_deref());
        }
        RunEvent::StepStarted(s) => {
            w.u8(STEP_STARTED);
            w.str(&s.run_id);
            w.u32(s.step_index);
            w.str(&s.step_id);
            w.str(&s.prompt);
            w.str(&s.version);
            w.str(&s.model);
            w.i64(s.started_at_ms);
            let messages = capture.then(|| serde_json::to_string(&s.messages).unwrap_or_default());
            w.opt_str(messages.as_deref());
        }
        RunEvent::CallAttempt(c) => {
            w.u8(CALL_ATTEMPT);
            w.str(&c.run_id);
            w.u32(c.step_index);
            w.u32(c.attempt);
            w.str(&c.provider);
            w.str(&c.model);
            w.i64(c.started_at_ms);
            w.u64(c.latency_ms);
            w.usage(&c.usage);
            w.cost(&c.cost);
            w.opt_str(c.error.as_ref().map(|e| e.kind.as_str()));
            w.opt_str(c.error.as_ref().map(|e| e.message.as_str()));
            let raw = |key: &str| c.raw_response.as_ref()?.get(key)?.as_str();
            w.opt_str(raw("model"));
            w.opt_str(raw("id"));
            w.bool(c.repair);
            w.bool(c.cached);
        }
        RunEvent::StepFinished(r) | RunEvent::StepReused(r) => {
            let reused = matches!(event, RunEvent::StepReused(_));
            w.u8(if reused { STEP_REUSED } else { STEP_FINISHED });
            w.str(&r.run_id);
            w.u32(r.step_index);
            w.str(&r.step_id);
            w.str(&r.prompt);
            w.str(r.status.as_str());
            w.opt_str(r.model.as_deref());
            w.usage(&r.usage);
            w.cost(&r.cost);
            w.u64(r.latency_ms);
            w.u32(r.attempts);
            w.opt_str(r.error.as_deref());
            w.bool(r.cached);
            w.opt_str(r.output_text.as_deref().filter(|_| capture));
            // The step's span ends when the event comes, not when it is built.
            let now = SystemTime::now().duration_since(UNIX_EPOCH);
            w.u64(now.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        }
        RunEvent::RunFinished(e) => {
            w.u8(RUN_FINISHED);
            w.str(&e.run_id);
            w.str(e.status.as_str());
            w.usage(&e.usage);
            w.cost(&e.cost);
            w.opt_str(e.error.as_deref());
            w.i64(e.finished_at_ms);
            w.opt_str(
                capture
                    .then(|| e.output.as_ref().map(|o| o.to_string()))
                    .flatten()
                    .as_deref(),
            );
        }
        RunEvent::AgentTurn(_) => return false,
    }
    true
}

/// Token counts, as spans show them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tokens {
    pub(crate) input: u64,
    pub(crate) output: u64,
}

/// A cost: in dollars when every price is known, else the models that lack one
/// (comma-separated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Spend<'a> {
    Usd(f64),
    Unknown(&'a str),
}

/// `RunEvent::RunStarted`, as the span builder reads it.
#[derive(Debug, PartialEq)]
pub(crate) struct RunStarted<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) target_kind: &'a str,
    pub(crate) target: &'a str,
    pub(crate) version: &'a str,
    pub(crate) started_at_ms: i64,
    pub(crate) input: Option<&'a str>,
}

/// `RunEvent::StepStarted`, as the span builder reads it.
#[derive(Debug, PartialEq)]
pub(crate) struct StepStarted<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) step_index: u32,
    pub(crate) step_id: &'a str,
    pub(crate) prompt: &'a str,
    pub(crate) version: &'a str,
    pub(crate) model: &'a str,
    pub(crate) started_at_ms: i64,
    pub(crate) messages: Option<&'a str>,
}

/// `RunEvent::CallAttempt`, as the span builder reads it (the response's model and id
/// taken out of the raw response).
#[derive(Debug, PartialEq)]
pub(crate) struct CallAttempt<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) step_index: u32,
    pub(crate) attempt: u32,
    pub(crate) provider: &'a str,
    pub(crate) model: &'a str,
    pub(crate) started_at_ms: i64,
    pub(crate) latency_ms: u64,
    pub(crate) tokens: Tokens,
    pub(crate) spend: Spend<'a>,
    pub(crate) error_kind: Option<&'a str>,
    pub(crate) error_message: Option<&'a str>,
    pub(crate) response_model: Option<&'a str>,
    pub(crate) response_id: Option<&'a str>,
    pub(crate) repair: bool,
    pub(crate) cached: bool,
}

/// `RunEvent::StepFinished` or `RunEvent::StepReused`, as the span builder reads it.
#[derive(Debug, PartialEq)]
pub(crate) struct StepEnded<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) step_index: u32,
    pub(crate) step_id: &'a str,
    pub(crate) prompt: &'a str,
    pub(crate) status: RunStatus,
    pub(crate) model: Option<&'a str>,
    pub(crate) tokens: Tokens,
    pub(crate) spend: Spend<'a>,
    pub(crate) latency_ms: u64,
    pub(crate) attempts: u32,
    pub(crate) error: Option<&'a str>,
    pub(crate) cached: bool,
    pub(crate) output_text: Option<&'a str>,
    /// When the event came.
    pub(crate) ended_at: SystemTime,
    /// A resumed run took it from an earlier attempt (`StepReused`).
    pub(crate) reused: bool,
}

/// `RunEvent::RunFinished`, as the span builder reads it.
#[derive(Debug, PartialEq)]
pub(crate) struct RunFinished<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) status: RunStatus,
    pub(crate) tokens: Tokens,
    pub(crate) spend: Spend<'a>,
    pub(crate) error: Option<&'a str>,
    pub(crate) finished_at_ms: i64,
    pub(crate) output: Option<&'a str>,
}

/// One event as the span builder reads it.
#[derive(Debug, PartialEq)]
pub(crate) enum Record<'a> {
    RunStarted(RunStarted<'a>),
    StepStarted(StepStarted<'a>),
    CallAttempt(CallAttempt<'a>),
    StepEnded(StepEnded<'a>),
    RunFinished(RunFinished<'a>),
}

/// The records of a log, in the order they were written.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn record(&mut self) -> Option<Record<'a>> {
        Some(match self.u8()? {
            RUN_STARTED => Record::RunStarted(RunStarted {
                run_id: self.str()?,
                target_kind: self.str()?,
                target: self.str()?,
                version: self.str()?,
                started_at_ms: self.i64()?,
                input: self.opt_str()?,
            }),
            STEP_STARTED => Record::StepStarted(StepStarted {
                run_id: self.str()?,
                step_index: self.u32()?,
                step_id: self.str()?,
                prompt: self.str()?,
                version: self.str()?,
                model: self.str()?,
                started_at_ms: self.i64()?,
                messages: self.opt_str()?,
            }),
            CALL_ATTEMPT => Record::CallAttempt(CallAttempt {
                run_id: self.str()?,
                step_index: self.u32()?,
                attempt: self.u32()?,
                provider: self.str()?,
                model: self.str()?,
                started_at_ms: self.i64()?,
                latency_ms: self.u64()?,
                tokens: self.tokens()?,
                spend: self.spend()?,
                error_kind: self.opt_str()?,
                error_message: self.opt_str()?,
                response_model: self.opt_str()?,
                response_id: self.opt_str()?,
                repair: self.bool()?,
                cached: self.bool()?,
            }),
            tag @ (STEP_FINISHED | STEP_REUSED) => Record::StepEnded(StepEnded {
                run_id: self.str()?,
                step_index: self.u32()?,
                step_id: self.str()?,
                prompt: self.str()?,
                status: RunStatus::parse(self.str()?)?,
                model: self.opt_str()?,
                tokens: self.tokens()?,
                spend: self.spend()?,
                latency_ms: self.u64()?,
                attempts: self.u32()?,
                error: self.opt_str()?,
                cached: self.bool()?,
                output_text: self.opt_str()?,
                ended_at: UNIX_EPOCH + Duration::from_nanos(self.u64()?),
                reused: tag == STEP_REUSED,
            }),
            RUN_FINISHED => Record::RunFinished(RunFinished {
                run_id: self.str()?,
                status: RunStatus::parse(self.str()?)?,
                tokens: self.tokens()?,
                spend: self.spend()?,
                error: self.opt_str()?,
                finished_at_ms: self.i64()?,
                output: self.opt_str()?,
            }),
            _ => return None,
        })
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn bool(&mut self) -> Option<bool> {
        Some(self.u8()? != 0)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u32()?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    /// `Some(None)` for an absent value, `None` for a log that ends early.
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            _ => self.str().map(Some),
        }
    }

    fn tokens(&mut self) -> Option<Tokens> {
        Some(Tokens {
            input: self.u64()?,
            output: self.u64()?,
        })
    }

    fn spend(&mut self) -> Option<Spend<'a>> {
        match self.u8()? {
            0 => self.array().map(f64::from_le_bytes).map(Spend::Usd),
            _ => self.str().map(Spend::Unknown),
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Record<'a>;

    /// The next record; `None` at the end (or, were the log ever cut short, there).
    fn next(&mut self) -> Option<Record<'a>> {
        let record = self.record();
        if record.is_none() {
            self.bytes = &[];
        }
        record
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// Text longer than 4 GiB (never, in practice) is cut at a character boundary.
    fn str(&mut self, v: &str) {
        let mut end = v.len().min(u32::MAX as usize);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        self.u32(end as u32);
        self.0.extend_from_slice(&v.as_bytes()[..end]);
    }

    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.str(v);
            }
        }
    }

    fn usage(&mut self, usage: &Usage) {
        self.u64(usage.input_tokens);
        self.u64(usage.output_tokens);
    }

    fn cost(&mut self, cost: &Cost) {
        match cost.usd_if_known() {
            Some(usd) => {
                self.u8(0);
                self.0.extend_from_slice(&usd.to_le_bytes());
            }
            None => {
                self.u8(1);
                let models: Vec<&str> = cost.unknown_models.iter().map(String::as_str).collect();
                self.str(&models.join(","));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flowrun_core::event::{CallFailure, CallRecord, RunEnd, RunStart, StepRecord, StepStart};
    use serde_json::json;

    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    #[test]
    fn every_event_reads_back_as_written_and_content_only_when_captured() {
        let unknown = Cost {
            usd: 0.0,
            unknown_models: ["b/y".to_string(), "a/x".to_string()].into(),
        };
        let events = [
            RunEvent::RunStarted(RunStart {
                run_id: "r1".into(),
                target_kind: "flow".into(),
                target: "triage".into(),
                version: "v1".into(),
                input: json!({"q": "é"}),
                started_at_ms: -5,
            }),
            RunEvent::StepStarted(StepStart {
                run_id: "r1".into(),
                step_index: 2,
                step_id: "classify".into(),
                prompt: "ask".into(),
                version: "v2".into(),
                model: "openai/gpt-4o".into(),
                messages: Vec::new(),
                started_at_ms: 7,
            }),
            RunEvent::CallAttempt(CallRecord {
                run_id: "r1".into(),
                step_index: 2,
                attempt: 3,
                provider: "openai".into(),
                model: "gpt-4o".into(),
                started_at_ms: 8,
                latency_ms: 9,
                usage: usage(10, 11),
                cost: Cost::known(0.25),
                error: Some(CallFailure {
                    kind: "rate_limited".into(),
                    message: "slow down".into(),
                }),
                raw_response: Some(json!({"model": "gpt-4o-2024", "id": "c-1", "n": 1})),
                repair: true,
                cached: false,
            }),
            RunEvent::StepReused(StepRecord {
                run_id: "r1".into(),
                step_index: 2,
                step_id: "classify".into(),
                prompt: "ask".into(),
                status: RunStatus::Failed,
                output_text: Some("text".into()),
                output: None,
                model: None,
                usage: usage(1, 2),
                cost: unknown.clone(),
                latency_ms: 12,
                attempts: 4,
                error: Some("boom".into()),
                cached: true,
                agent: None,
            }),
            RunEvent::RunFinished(RunEnd {
                run_id: "r1".into(),
                status: RunStatus::Succeeded,
                output: Some(json!("done")),
                usage: usage(3, 4),
                cost: Cost::known(1.5),
                latency_ms: 13,
                error: None,
                finished_at_ms: 14,
            }),
        ];
        let mut log = Vec::new();
        for event in &events {
            assert!(write(&mut log, event, true));
        }
        let records: Vec<Record<'_>> = Reader::new(&log).collect();
        assert_eq!(records.len(), 5);
        let Record::RunStarted(run) = &records[0] else {
            panic!("{:?}", records[0]);
        };
        assert_eq!(
            (
                run.run_id,
                run.target_kind,
                run.target,
                run.version,
                run.started_at_ms
            ),
            ("r1", "flow", "triage", "v1", -5)
        );
        assert_eq!(run.input, Some(r#"{"q":"é"}"#));
        let Record::StepStarted(step) = &records[1] else {
            panic!("{:?}", records[1]);
        };
        assert_eq!(
            (step.step_index, step.step_id, step.model, step.messages),
            (2, "classify", "openai/gpt-4o", Some("[]"))
        );
        let Record::CallAttempt(call) = &records[2] else {
            panic!("{:?}", records[2]);
        };
        assert_eq!(
            (call.attempt, call.spend, call.tokens),
            (
                3,
                Spend::Usd(0.25),
                Tokens {
                    input: 10,
                    output: 11
                }
            )
        );
        assert_eq!(
            (
                call.error_kind,
                call.error_message,
                call.response_model,
                call.response_id
            ),
            (
                Some("rate_limited"),
                Some("slow down"),
                Some("gpt-4o-2024"),
                Some("c-1")
            )
        );
        assert!(call.repair && !call.cached);
        let Record::StepEnded(ended) = &records[3] else {
            panic!("{:?}", records[3]);
        };
        assert!(ended.reused && ended.cached);
        assert_eq!(
            (ended.status, ended.spend, ended.error, ended.output_text),
            (
                RunStatus::Failed,
                Spend::Unknown("a/x,b/y"),
                Some("boom"),
                Some("text")
            )
        );
        let Record::RunFinished(end) = &records[4] else {
            panic!("{:?}", records[4]);
        };
        assert_eq!(
            (end.status, end.output, end.finished_at_ms),
            (RunStatus::Succeeded, Some(r#""done""#), 14)
        );

        // Without `capture_content`, no content is copied.
        let mut log = Vec::new();
        for event in &events {
            write(&mut log, event, false);
        }
        for record in Reader::new(&log) {
            match record {
                Record::RunStarted(r) => assert_eq!(r.input, None),
                Record::StepStarted(s) => assert_eq!(s.messages, None),
                Record::StepEnded(s) => assert_eq!(s.output_text, None),
                Record::RunFinished(r) => assert_eq!(r.output, None),
                Record::CallAttempt(_) => {}
            }
        }
    }

    #[test]
    fn a_log_cut_short_reads_up_to_the_cut() {
        let start = RunEvent::RunStarted(RunStart {
            run_id: "r1".into(),
            target_kind: "prompt".into(),
            target: "ask".into(),
            version: "v1".into(),
            input: json!({}),
            started_at_ms: 1,
        });
        let mut log = Vec::new();
        write(&mut log, &start, false);
        let whole = log.len();
        write(&mut log, &start, false);
        for cut in whole..log.len() {
            assert_eq!(Reader::new(&log[..cut]).count(), 1, "cut at {cut}");
        }
        assert_eq!(
            Reader::new(&[9, 9]).count(),
            0,
            "an unknown tag ends the log"
        );
    }
}
