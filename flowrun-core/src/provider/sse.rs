//! A small Server-Sent-Events decoder (the WHATWG event-stream format) for streaming replies.
//!
//! [`SseDecoder`] is a push parser: feed it bytes split anywhere and it yields complete events.
//! It handles `event:`/`data:`/`id:` fields, multi-line data, `\n`, `\r\n` and `\r` line
//! endings, comments and a leading BOM. [`SseStream`] runs it over a `reqwest::Response` body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::ProviderError;
use super::http::map_reqwest_error;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty when the event had none (the spec's `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen, if any.
    pub id: Option<String>,
}

/// Incremental event-stream parser.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` in the next one ends nothing.
    skip_lf: bool,
    /// Whether the start of the stream (and a possible BOM) has been looked at.
    started: bool,
    event: String,
    data: String,
    id: Option<String>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a chunk of the stream and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            if let Some(event) = self.push_byte(byte) {
                events.push(event);
            }
        }
        events
    }

    /// Ends the stream. Strictly an unterminated event is dropped; servers that omit the last
    /// blank line are common enough that a pending event with data is dispatched instead.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line);
        }
        self.dispatch()
    }

    fn push_byte(&mut self, byte: u8) -> Option<SseEvent> {
        let skip_lf = std::mem::take(&mut self.skip_lf);
        match byte {
            b'\n' if skip_lf => None,
            b'\n' | b'\r' => {
                self.skip_lf = byte == b'\r';
                self.end_line()
            }
            _ => {
                self.line.push(byte);
                None
            }
        }
    }

    fn end_line(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            return self.dispatch();
        }
        self.process_line(&line);
        None
    }

    fn process_line(&mut self, line: &[u8]) {
        let line = self.strip_bom(line);
        let text = String::from_utf8_lossy(line);
        if text.starts_with(':') {
            return; // comment
        }
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
    }

    fn strip_bom<'a>(&mut self, line: &'a [u8]) -> &'a [u8] {
        if std::mem::replace(&mut self.started, true) {
            return line;
        }
        line.strip_prefix(b"\xEF\xBB\xBF".as_slice())
            .unwrap_or(line)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return None;
        }
        data.pop(); // the `\n` after the last data line
        Some(SseEvent {
            event,
            data,
            id: self.id.clone(),
        })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Events of a streaming HTTP reply, pulled one at a time with [`SseStream::next_event`].
pub struct SseStream {
    body: ByteStream,
    decoder: SseDecoder,
    queue: VecDeque<SseEvent>,
    finished: bool,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("queued", &self.queue.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    /// Wraps a reply's body; `timeout` only labels a timeout error.
    pub fn new(response: reqwest::Response, timeout: Option<Duration>) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::new(),
            queue: VecDeque::new(),
            finished: false,
            timeout,
        }
    }

    /// The next event, `None` at the end of the body, or the transport error that broke it.
    pub async fn next_event(&mut self) -> Option<Result<SseEvent, ProviderError>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.queue.extend(self.decoder.feed(&chunk)),
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(map_reqwest_error(&e, self.timeout)));
                }
                None => {
                    self.finished = true;
                    self.queue.extend(self.decoder.finish());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
        }
    }

    fn decode_split(input: &[u8], splits: &[usize]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &at in splits.iter().chain(std::iter::once(&input.len())) {
            events.extend(decoder.feed(&input[start..at]));
            start = at;
        }
        events.extend(decoder.finish());
        events
    }

    const STREAM: &[u8] = "\u{feff}: keep-alive comment\r\n\
        event: message_start\r\n\
        data: {\"a\":1}\r\n\
        \r\n\
        data: line one\n\
        data:line two\n\
        data\n\
        \n\
        event: ping\r\
        data: héllo wörld ✓\r\
        \r\
        retry: 100\n\
        id: 7\n\
        data: [DONE]\n\
        \n"
    .as_bytes();

    fn expected() -> Vec<SseEvent> {
        vec![
            ev("message_start", "{\"a\":1}"),
            ev("", "line one\nline two\n"),
            ev("ping", "héllo wörld ✓"),
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
                id: Some("7".into()),
            },
        ]
    }

    #[test]
    fn decodes_whole_input() {
        assert_eq!(decode_split(STREAM, &[]), expected());
    }

    #[test]
    fn decodes_split_at_every_position() {
        for at in 0..=STREAM.len() {
            assert_eq!(decode_split(STREAM, &[at]), expected(), "split at {at}");
        }
    }

    #[test]
    fn decodes_split_at_every_pair_of_positions() {
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                assert_eq!(
                    decode_split(STREAM, &[a, b]),
                    expected(),
                    "split at {a},{b}"
                );
            }
        }
    }

    #[test]
    fn decodes_byte_by_byte() {
        let splits: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(decode_split(STREAM, &splits), expected());
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert_eq!(
            decode_split(b"event: ping\n\n: just a comment\n\n", &[]),
            vec![]
        );
    }

    #[test]
    fn unterminated_last_event_is_dispatched_at_end() {
        assert_eq!(
            decode_split(b"data: a\n\ndata: b", &[]),
            vec![ev("", "a"), ev("", "b")]
        );
        assert_eq!(decode_split(b"data: a\n", &[]), vec![ev("", "a")]);
    }

    #[test]
    fn crlf_split_between_cr_and_lf_is_one_line_end() {
        let events = decode_split(b"data: x\r\n\r\ndata: y\r\n\r\n", &[8, 11]);
        assert_eq!(events, vec![ev("", "x"), ev("", "y")]);
    }
}
