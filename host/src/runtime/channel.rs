//! Channels between stages, bounded in bytes: a sender waits until the receiver has
//! released enough of the budget, so a slow sink slows the source instead of filling memory.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

pub struct Sender<T> {
    tx: mpsc::UnboundedSender<(T, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    limit: u32,
}

pub struct Receiver<T> {
    rx: mpsc::UnboundedReceiver<(T, OwnedSemaphorePermit)>,
}

/// The receiving side went away (its stage stopped).
#[derive(Debug)]
pub struct Closed;

/// A channel holding at most `limit_bytes` of messages in flight (a single message larger
/// than the limit still passes, alone).
pub fn channel<T>(limit_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let limit = limit_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Sender {
            tx,
            budget: Arc::new(Semaphore::new(limit as usize)),
            limit,
        },
        Receiver { rx },
    )
}

impl<T> Sender<T> {
    /// Send `message` that costs `bytes`, waiting for room.
    pub async fn send(&self, message: T, bytes: usize) -> Result<(), Closed> {
        let cost = (bytes.max(1) as u64).min(self.limit as u64) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| Closed)?;
        self.tx.send((message, permit)).map_err(|_| Closed)
    }
}

impl<T> Receiver<T> {
    /// The next message; its bytes count against the budget until the returned permit
    /// is dropped. `None` when every sender is gone.
    pub async fn recv(&mut self) -> Option<(T, OwnedSemaphorePermit)> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_channel_makes_the_sender_wait_until_bytes_are_released() {
        let (tx, mut rx) = channel::<u32>(100);
        tx.send(1, 60).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 60)).await;
        assert!(
            blocked.is_err(),
            "second 60-byte message must wait for room"
        );
        let (first, permit) = rx.recv().await.unwrap();
        assert_eq!(first, 1);
        drop(permit);
        tokio::time::timeout(Duration::from_millis(500), tx.send(3, 60))
            .await
            .expect("room after release")
            .unwrap();
    }
}
