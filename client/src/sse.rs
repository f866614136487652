//! Reading a server-sent event stream (`GET /watch`): [`ApiClient::open_stream`] opens one,
//! [`EventStream::next_event`] reads it event by event.
//!
//! The parser follows the HTML standard's event-stream format as far as `/watch` uses it:
//! lines end in LF, CRLF or CR; `field: value` (one space after the colon dropped); a line
//! starting with `:` is a comment (the node's heartbeats); a blank line ends an event. An
//! event's `id` is kept as the last event id even across events without one, as a browser
//! does, so that a reconnect can send it as `Last-Event-ID`.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use crate::{ApiClient, ClientError, error_chain};

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name (`message` when the event had none).
    pub event: String,
    /// The `id:` the event carried, if it carried one.
    pub id: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Longest line the parser holds before it gives up on a stream (a `/watch` event is one line
/// of JSON; the largest, `kpis`, stays far below this for a network of 100,000 cells).
const MAX_LINE: usize = 64 << 20;

/// An event-stream parser: feed it bytes as they come, take the complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    /// The event being read.
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    /// The last CR ended a line; a LF right after it belongs to that line end.
    after_cr: bool,
}

impl SseParser {
    /// Adds `bytes` and returns the events they complete. Fails when a line grows past
    /// [`MAX_LINE`] or is not UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line = self.buf.split_to(end);
            let cr = self.buf.first() == Some(&b'\r');
            self.buf.advance(1);
            if cr {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::str::from_utf8(&line).map_err(|_| "a line is not UTF-8".to_string())?;
            if let Some(e) = self.line(line) {
                out.push(e);
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(SseEvent {
                event: self.event.take().unwrap_or_else(|| "message".into()),
                id: self.id.clone(),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }

    /// The id of the last event that carried one: what a reconnect sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// An open event stream: the answer's status and, for a success, its events.
pub struct EventStream {
    pub status: StatusCode,
    body: Incoming,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
    url: String,
    /// An error answer's body, read whole.
    error_body: Option<Bytes>,
}

impl EventStream {
    /// The next event; `None` when the server ended the stream. Fails when nothing at all (not
    /// even a heartbeat) came for `idle`, or the connection broke.
    pub async fn next_event(&mut self, idle: Duration) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            let frame = match tokio::time::timeout(idle, self.body.frame()).await {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        url: self.url.clone(),
                        timeout: idle,
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        reason: error_chain(&e),
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                let events =
                    self.parser
                        .feed(&data)
                        .map_err(|reason| ClientError::Unreachable {
                            url: self.url.clone(),
                            reason: format!("the event stream is malformed: {reason}"),
                        })?;
                self.ready.extend(events);
            }
        }
    }

    /// The id of the last event received that carried one.
    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id()
    }

    /// The body of an error answer (status not 2xx), read whole.
    pub fn error_body(&self) -> Bytes {
        self.error_body.clone().unwrap_or_default()
    }
}

impl ApiClient {
    /// `GET url` as an event stream, with `Last-Event-ID: last_event_id` when given. Waits at
    /// most the client's timeout for the answer's head; the stream itself has no deadline (see
    /// [`EventStream::next_event`]). An error answer is read whole ([`EventStream::error_body`]).
    pub async fn open_stream(
        &self,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let bad = |reason: String| ClientError::Request {
            url: url.into(),
            reason,
        };
        let authorization = self.authorization.as_ref().map_err(|r| bad(r.clone()))?;
        let http = self.http.as_ref().map_err(|r| bad(r.clone()))?;
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(hyper::header::ACCEPT, "text/event-stream");
        if let Some(auth) = authorization {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let req = req
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|e| bad(e.to_string()))?;
        let head = tokio::time::timeout(self.timeout, http.request(req)).await;
        let resp = match head {
            Err(_) => {
                return Err(ClientError::Timeout {
                    url: url.into(),
                    timeout: self.timeout,
                });
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(ClientError::Connect {
                    url: url.into(),
                    reason: error_chain(&e),
                });
            }
            Ok(Err(e)) => {
                return Err(ClientError::Unreachable {
                    url: url.into(),
                    reason: error_chain(&e),
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        let mut stream = EventStream {
            status,
            body: resp.into_body(),
            parser: SseParser::default(),
            ready: Default::default(),
            url: url.into(),
            error_body: None,
        };
        if !status.is_success() {
            let body = tokio::time::timeout(self.timeout, (&mut stream.body).collect()).await;
            stream.error_body = match body {
                Ok(Ok(b)) => Some(b.to_bytes()),
                _ => Some(Bytes::new()),
            };
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunk_boundaries_and_line_ends() {
        let text = b": heartbeat\n\nevent: changeset\nid: 7.0\ndata: {\"a\":1}\n\r\nevent: kpis\r\ndata: x\rdata: y\r\n\r\ndata: plain\n\n";
        for split in 0..text.len() {
            let mut p = SseParser::default();
            let mut got = p.feed(&text[..split]).unwrap();
            got.extend(p.feed(&text[split..]).unwrap());
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        event: "changeset".into(),
                        id: Some("7.0".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        event: "kpis".into(),
                        id: Some("7.0".into()),
                        data: "x\ny".into()
                    },
                    SseEvent {
                        event: "message".into(),
                        id: Some("7.0".into()),
                        data: "plain".into()
                    },
                ],
                "split at {split}"
            );
            assert_eq!(p.last_event_id(), Some("7.0"));
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_an_error_not_a_panic() {
        let mut p = SseParser::default();
        assert!(p.feed(b"data: \xff\xfe\n\n").is_err());
    }
}
