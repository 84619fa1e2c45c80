//! Cross-replica wake-ups over LISTEN/NOTIFY: the store's writes `pg_notify` in the same
//! transaction (delivered on commit), and one dedicated connection per process listens and
//! turns notifications into [`StoreEvent`]s. Reconnects with backoff; notifications missed
//! while disconnected are covered by the workers' and long polls' polling.

use std::time::Duration;

use futures::StreamExt;
use postgres_native_tls::MakeTlsConnector;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Config};

use crate::store::{StoreError, StoreEvent};

/// A run was queued (submitted, released or re-queued); empty payload.
pub const QUEUED: &str = "flowrun_queued";
/// A run ended; the payload is its id.
pub const ENDED: &str = "flowrun_ended";
/// Cancelling a running run was asked; the payload is its id.
pub const CANCEL: &str = "flowrun_cancel";

/// The event a notification stands for.
pub fn event(channel: &str, payload: &str) -> Option<StoreEvent> {
    match channel {
        QUEUED => Some(StoreEvent::Queued),
        ENDED => Some(StoreEvent::Ended(payload.to_string())),
        CANCEL => Some(StoreEvent::CancelRequested(payload.to_string())),
        _ => None,
    }
}

/// Listens until the receiver of `tx` is dropped.
pub async fn run(config: Config, tls: MakeTlsConnector, tx: mpsc::Sender<StoreEvent>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            ended = listen(&config, &tls, &tx, &mut backoff) => match ended {
                Ok(()) => return,
                Err(e) => tracing::warn!(
                    error = %e,
                    "listening for other replicas' changes failed; reconnecting"
                ),
            },
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: `Ok` when the receiver is gone, `Err` when the connection failed.
async fn listen(
    config: &Config,
    tls: &MakeTlsConnector,
    tx: &mpsc::Sender<StoreEvent>,
    backoff: &mut Duration,
) -> Result<(), StoreError> {
    let (client, mut conn) = config.connect(tls.clone()).await?;
    // Polling the connection's messages also drives its queries.
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    let sql = format!("LISTEN {QUEUED}; LISTEN {ENDED}; LISTEN {CANCEL}");
    let subscribe = client.batch_execute(&sql);
    tokio::pin!(subscribe);
    loop {
        tokio::select! {
            done = &mut subscribe => { done?; break; }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(closed()),
            },
        }
    }
    *backoff = Duration::from_millis(100);
    // Whatever was queued while nobody listened.
    let _ = tx.try_send(StoreEvent::Queued);
    while let Some(message) = messages.next().await {
        let AsyncMessage::Notification(n) = message? else {
            continue;
        };
        let Some(event) = event(n.channel(), n.payload()) else {
            continue;
        };
        // A full channel drops the event: the reader is behind and polls anyway.
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(event) {
            return Ok(());
        }
    }
    Err(closed())
}

fn closed() -> StoreError {
    StoreError::Postgres("the notification connection closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_map_to_events() {
        assert_eq!(event(QUEUED, ""), Some(StoreEvent::Queued));
        assert_eq!(event(ENDED, "r1"), Some(StoreEvent::Ended("r1".into())));
        assert_eq!(
            event(CANCEL, "r2"),
            Some(StoreEvent::CancelRequested("r2".into()))
        );
        assert_eq!(event("other", "x"), None);
    }
}
