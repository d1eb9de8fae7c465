//! A TCP proxy that a test can cut: the way to take the API server away from one controller
//! while another still reaches it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Result;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// A running proxy from a loopback port to `target`.
pub struct Proxy {
    pub address: SocketAddr,
    cut: Arc<AtomicBool>,
    cut_now: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let cut_now = Arc::new(Notify::new());
        let (flag, notify) = (cut.clone(), cut_now.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if flag.load(Ordering::Acquire) {
                    continue; // dropped at once
                }
                let notify = notify.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = notify.notified() => {}
                    }
                });
            }
        });
        Ok(Self { address, cut, cut_now, task })
    }

    /// Drops every connection and refuses new ones from now on.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.cut_now.notify_waiters();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
