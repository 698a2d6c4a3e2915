//! [`WorkSignal`]: how a store tells runtimes that work may be there (see
//! [`Store::work_signal`](super::Store::work_signal)).

use tokio::sync::watch;

/// A counter that goes up each time a store sees new or newly due work; runtimes hold a
/// receiver and wake when it changes. Sending never blocks and never fails (no receiver is
/// fine).
#[derive(Debug)]
pub struct WorkSignal(watch::Sender<u64>);

impl Default for WorkSignal {
    fn default() -> Self {
        WorkSignal(watch::Sender::new(0))
    }
}

impl WorkSignal {
    /// A new signal, with no receiver yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells every receiver that work may be there.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`WorkSignal::notify`] (as one change if several came
    /// while it was not looking).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receiver_sees_a_signal_sent_before_it_waits() {
        let signal = WorkSignal::new();
        let mut rx = signal.subscribe();
        signal.notify();
        signal.notify();
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
            .await
            .expect("a change was pending")
            .unwrap();
        assert!(!rx.has_changed().unwrap(), "two signals are one change");
    }
}
