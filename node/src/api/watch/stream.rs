//! The response side of a stream: the events its producer buffered, unless the producer has a
//! last word. A `closed` event overtakes whatever is still buffered — the client of a slow
//! stream gets it next rather than after the backlog it could not take — and names the last
//! `changeset` id actually handed to the connection, so that the client can resume right there.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::sse::Event;
use futures_core::Stream;
use sonraft_client::v1;
use tokio::sync::{mpsc, oneshot};

/// The events of one stream, as the SSE response reads them.
pub(super) struct Feed {
    /// Each event with its id, if it has one (an axum [`Event`] does not tell its fields back).
    events: mpsc::Receiver<(Event, Option<String>)>,
    last_word: Option<oneshot::Receiver<v1::WatchClosed>>,
    /// The id of the last `changeset` event handed out.
    last_id: Option<String>,
    done: bool,
}

impl Feed {
    pub fn new(
        events: mpsc::Receiver<(Event, Option<String>)>,
        last_word: oneshot::Receiver<v1::WatchClosed>,
    ) -> Self {
        Feed {
            events,
            last_word: Some(last_word),
            last_id: None,
            done: false,
        }
    }
}

impl Stream for Feed {
    type Item = Result<Event, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(rx) = self.last_word.as_mut()
            && let Poll::Ready(word) = Pin::new(rx).poll(cx)
        {
            self.last_word = None;
            if let Ok(mut closed) = word {
                self.done = true;
                closed.resume_after = self.last_id.clone();
                let event = Event::default()
                    .event(v1::event::CLOSED)
                    .json_data(&closed)
                    .unwrap_or_else(|_| Event::default().event(v1::event::CLOSED).data(""));
                return Poll::Ready(Some(Ok(event)));
            }
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some((event, id))) => {
                if id.is_some() {
                    self.last_id = id;
                }
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(feed: &mut Feed) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut *feed).poll_next(cx))
            .await
            .map(|r| match r {
                Ok(e) => e,
                Err(never) => match never {},
            })
    }

    #[tokio::test]
    async fn the_closing_event_overtakes_the_backlog_and_names_the_last_id_handed_out() {
        let (tx, rx) = mpsc::channel(8);
        let (word_tx, word_rx) = oneshot::channel();
        let mut feed = Feed::new(rx, word_rx);
        for i in 0..3 {
            let id = format!("7.{i}");
            tx.send((Event::default().data("x").id(&id), Some(id)))
                .await
                .unwrap();
        }
        tx.send((Event::default().event("kpis").data("k"), None))
            .await
            .unwrap();
        assert!(next(&mut feed).await.is_some());
        assert!(next(&mut feed).await.is_some());
        word_tx
            .send(v1::WatchClosed {
                reason: "slow_client".into(),
                detail: "slow".into(),
                resume_after: None,
            })
            .unwrap();
        let last = next(&mut feed).await.expect("the closing event");
        let text = format!("{last:?}");
        assert!(
            text.contains("closed") && text.contains("7.1") && !text.contains("7.2"),
            "{text}"
        );
        assert!(next(&mut feed).await.is_none(), "nothing after it");
    }
}
