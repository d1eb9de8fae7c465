//! Waiting for a watch cache's first listing, from any number of reconciles at once.
//!
//! `Store::wait_until_ready` in kube-runtime 5 wakes only the task that polled it last (the
//! store's `DelayedInit` keeps a single waker). Reconciles that awaited it side by side at
//! startup never woke and held every concurrency slot: the controller went silent. A
//! [`Ready`] awaits its store once, in one shared future, and wakes every waiter. Nothing else
//! may call `wait_until_ready` on a store that has a `Ready`.

use std::hash::Hash;

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use kube::runtime::reflector::{Lookup, Store};

/// The watch cache's writer was dropped before its first listing (the process is stopping).
#[derive(Debug, thiserror::Error)]
#[error("a watch cache was dropped before its first listing")]
pub struct CacheGone;

/// Resolves once a store holds its first listing. Cheap to clone; await it anywhere.
#[derive(Clone)]
pub struct Ready(Shared<BoxFuture<'static, bool>>);

impl Ready {
    pub fn of<K>(store: &Store<K>) -> Self
    where
        K: 'static + Clone + Lookup + Send + Sync,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let store = store.clone();
        Self(async move { store.wait_until_ready().await.is_ok() }.boxed().shared())
    }

    pub async fn wait(&self) -> Result<(), CacheGone> {
        if self.0.clone().await { Ok(()) } else { Err(CacheGone) }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{reflector, watcher::Event};

    use super::*;

    /// Many waiters registered before the first listing all wake (the bug this works around).
    #[tokio::test]
    async fn every_waiter_wakes_at_the_first_listing() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let ready = Ready::of(&store);
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                tokio::spawn({
                    let r = ready.clone();
                    async move { r.wait().await }
                })
            })
            .collect();
        // Every waiter polls (and registers to be woken) before the listing completes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("a waiter never woke")
                .unwrap()
                .unwrap();
        }
    }
}
