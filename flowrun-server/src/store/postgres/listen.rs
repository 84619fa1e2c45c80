//! Cross-replica wake-ups over LISTEN/NOTIFY. Writers hand what they changed to a
//! [`Notifier`] after their transaction has committed; it sends the notifications of a burst
//! together, in one transaction on a connection of its own (`synchronous_commit = off`: a lost
//! notification only delays a wake-up). One dedicated connection per process listens and turns
//! notifications into [`StoreEvent`]s. Both reconnect with backoff; notifications missed while
//! disconnected are covered by the workers' and long polls' polling.
//!
//! Why not `pg_notify` inside the writing transaction: PostgreSQL takes a database-wide lock
//! on the notification queue from a notifying transaction's pre-commit until its commit is
//! flushed, so every such commit waits for the previous one's WAL flush and concurrent commits
//! can no longer share one flush (group commit).

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

/// Wake-ups one `QUEUED` notification may stand for (each wakes one idle worker).
const MAX_QUEUED_WAKEUPS: usize = 64;
/// PostgreSQL refuses payloads of 8,000 bytes or more; ids are joined below this.
const MAX_PAYLOAD: usize = 7_900;
/// Notifications a burst sends at most; the rest go in the next one.
const MAX_BURST: usize = 4_096;

/// The events a notification stands for: `QUEUED` carries how many runs were queued (empty:
/// one), `ENDED` and `CANCEL` a comma-separated list of run ids.
pub fn events(channel: &str, payload: &str) -> Vec<StoreEvent> {
    let ids = || payload.split(',').filter(|id| !id.is_empty());
    match channel {
        QUEUED => {
            let n = payload.parse::<usize>().unwrap_or(1);
            vec![StoreEvent::Queued; n.clamp(1, MAX_QUEUED_WAKEUPS)]
        }
        ENDED => ids().map(|id| StoreEvent::Ended(id.to_string())).collect(),
        CANCEL => ids()
            .map(|id| StoreEvent::CancelRequested(id.to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

/// What a committed change announces to the other replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// This many runs were queued.
    Queued(usize),
    /// This run ended.
    Ended(String),
    /// Cancelling this running run was asked.
    Cancel(String),
}

/// Sends [`Note`]s as notifications, after the commit of the change they announce. Cheap to
/// clone; the sending task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<Note>,
}

impl Notifier {
    /// Starts the sending task (inside a tokio runtime); it connects on the first note.
    pub fn start(config: Config, tls: MakeTlsConnector) -> Notifier {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_notes(config, tls, rx));
        Notifier { tx }
    }

    /// Queues `note`; call only once the change it announces has committed.
    pub fn send(&self, note: Note) {
        // Closed only when the task has ended: nobody is left to wake.
        let _ = self.tx.send(note);
    }
}

/// Coalesces `notes` into notifications: one `QUEUED` with the total, and the ids of each of
/// `ENDED` and `CANCEL` joined by commas into as few payloads as fit.
pub fn coalesce(notes: &[Note]) -> Vec<(&'static str, String)> {
    let mut queued = 0;
    let mut out = Vec::new();
    let mut ended = String::new();
    let mut cancel = String::new();
    for note in notes {
        match note {
            Note::Queued(n) => queued += n,
            Note::Ended(id) => push_id(&mut out, ENDED, &mut ended, id),
            Note::Cancel(id) => push_id(&mut out, CANCEL, &mut cancel, id),
        }
    }
    for (channel, ids) in [(ENDED, ended), (CANCEL, cancel)] {
        if !ids.is_empty() {
            out.push((channel, ids));
        }
    }
    if queued > 0 {
        out.push((QUEUED, queued.to_string()));
    }
    out
}

/// Appends `id` to the list `ids` of `channel`, first moving the list to `out` if it is full.
fn push_id(
    out: &mut Vec<(&'static str, String)>,
    channel: &'static str,
    ids: &mut String,
    id: &str,
) {
    if !ids.is_empty() && ids.len() + 1 + id.len() > MAX_PAYLOAD {
        out.push((channel, std::mem::take(ids)));
    }
    if !ids.is_empty() {
        ids.push(',');
    }
    ids.push_str(id);
}

/// The notifier's connection and its one statement.
struct Sender {
    client: tokio_postgres::Client,
    notify: tokio_postgres::Statement,
}

impl Sender {
    async fn connect(config: &Config, tls: &MakeTlsConnector) -> Result<Sender, StoreError> {
        let (client, conn) = config.connect(tls.clone()).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client.batch_execute("SET synchronous_commit = off").await?;
        let notify = client
            .prepare("SELECT pg_notify(c, p) FROM unnest($1::TEXT[], $2::TEXT[]) AS n(c, p)")
            .await?;
        Ok(Sender { client, notify })
    }

    /// One transaction (one statement) sending every notification.
    async fn send(&self, notifications: &[(&'static str, String)]) -> Result<(), StoreError> {
        let (channels, payloads): (Vec<&str>, Vec<&str>) =
            notifications.iter().map(|(c, p)| (*c, p.as_str())).unzip();
        self.client
            .execute(&self.notify, &[&channels, &payloads])
            .await?;
        Ok(())
    }
}

/// The sending task: waits for a note, takes every note queued meanwhile, sends them in one
/// transaction. Notes arriving while a send is in flight make the next burst.
async fn send_notes(config: Config, tls: MakeTlsConnector, mut rx: mpsc::UnboundedReceiver<Note>) {
    let mut sender: Option<Sender> = None;
    let mut backoff = Duration::from_millis(100);
    let mut burst = Vec::new();
    while rx.recv_many(&mut burst, MAX_BURST).await > 0 {
        let notifications = coalesce(&burst);
        burst.clear();
        let sent = match &sender {
            Some(s) => s.send(&notifications).await,
            None => match Sender::connect(&config, &tls).await {
                Ok(s) => {
                    let sent = s.send(&notifications).await;
                    sender = Some(s);
                    sent
                }
                Err(e) => Err(e),
            },
        };
        match sent {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "notifying other replicas failed; reconnecting");
                sender = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
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
        for event in events(n.channel(), n.payload()) {
            // A full channel drops the event: the reader is behind and polls anyway.
            if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(event) {
                return Ok(());
            }
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
        assert_eq!(events(QUEUED, ""), vec![StoreEvent::Queued]);
        assert_eq!(events(QUEUED, "3"), vec![StoreEvent::Queued; 3]);
        assert_eq!(events(QUEUED, "100000").len(), MAX_QUEUED_WAKEUPS);
        assert_eq!(events(ENDED, "r1"), vec![StoreEvent::Ended("r1".into())]);
        assert_eq!(
            events(ENDED, "r1,r2"),
            vec![
                StoreEvent::Ended("r1".into()),
                StoreEvent::Ended("r2".into())
            ]
        );
        assert_eq!(
            events(CANCEL, "r2"),
            vec![StoreEvent::CancelRequested("r2".into())]
        );
        assert_eq!(events("other", "x"), vec![]);
    }

    #[test]
    fn a_burst_becomes_one_notification_per_channel() {
        let notes = [
            Note::Queued(1),
            Note::Ended("a".into()),
            Note::Queued(2),
            Note::Cancel("c".into()),
            Note::Ended("b".into()),
        ];
        assert_eq!(
            coalesce(&notes),
            vec![
                (ENDED, "a,b".to_string()),
                (CANCEL, "c".to_string()),
                (QUEUED, "3".to_string())
            ]
        );
        assert_eq!(coalesce(&[]), vec![]);
    }

    #[test]
    fn long_id_lists_are_split_below_the_payload_limit() {
        let id = flowrun_core::new_id();
        let notes: Vec<Note> = (0..1000).map(|_| Note::Ended(id.clone())).collect();
        let out = coalesce(&notes);
        assert!(out.len() > 1);
        assert!(out.iter().all(|(_, p)| p.len() <= MAX_PAYLOAD));
        let back: usize = out.iter().map(|(c, p)| events(c, p).len()).sum();
        assert_eq!(back, 1000);
    }
}
