//! The connection to Redis: one reconnecting connection (a server's connection manager or a
//! Cluster connection), made on first use and checked against the namespace's hash key
//! fingerprint; every operation bounded by `ledger.timeout_ms` and recorded as health; the
//! background check that reconnects when Redis returns and compacts the journal.

use super::keys::hex;
use super::{RedisLedger, RedisTarget};
use crate::ledger::api::LedgerError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Value};
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, Weak};
use std::time::{Duration, SystemTime};

/// How often the background check pings Redis (readiness, reconnection).
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub(super) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Server(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub(super) async fn eval(
        &mut self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<Value> {
        match self {
            Conn::Server(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }
}

pub(super) fn unavailable(e: &redis::RedisError) -> LedgerError {
    LedgerError::Unavailable(format!("redis: {e}"))
}

impl RedisLedger {
    /// Checks Redis now (connect, hash key fingerprint, `PING`) and updates readiness.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when Redis does not answer in time.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        self.run(|mut c| async move { c.query::<()>(&redis::cmd("PING")).await })
            .await
    }

    /// Runs `f` on a verified connection within the timeout; records health.
    pub(super) async fn run<T, F, Fut>(&self, f: F) -> Result<T, LedgerError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.mismatch.load(Ordering::Acquire) {
            return Err(self.mismatch_error());
        }
        let r = tokio::time::timeout(self.timeout, async {
            let c = self.connection().await?;
            f(c).await.map_err(|e| unavailable(&e))
        })
        .await
        .unwrap_or_else(|_| {
            Err(LedgerError::Unavailable(format!(
                "redis: no answer within {} ms",
                self.timeout.as_millis()
            )))
        });
        let ok = r.is_ok();
        let was = self.healthy.swap(ok, Ordering::AcqRel);
        match (was, ok, &r) {
            (true, false, Err(e)) => tracing::warn!(error = %e, "redis ledger unavailable"),
            (false, true, _) => tracing::info!("redis ledger available"),
            _ => {}
        }
        r
    }

    pub(super) fn mismatch_error(&self) -> LedgerError {
        LedgerError::Unavailable(format!(
            "the Redis ledger namespace {} was created with another hash key",
            self.keys.ns
        ))
    }

    /// A connected, verified connection (connects on first use and after a failed connect).
    pub(super) async fn connection(&self) -> Result<Conn, LedgerError> {
        let existing = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut c = match existing {
            Some(c) => c,
            None => {
                let _g = self.connecting.lock().await;
                let again = self
                    .conn
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match again {
                    Some(c) => c,
                    None => {
                        let c = self.connect().await.map_err(|e| unavailable(&e))?;
                        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                        c
                    }
                }
            }
        };
        if !self.verified.load(Ordering::Acquire) {
            self.verify(&mut c).await?;
        }
        Ok(c)
    }

    pub(super) async fn connect(&self) -> redis::RedisResult<Conn> {
        match &self.target {
            RedisTarget::Server(url) => {
                let client = self.auth.server_client(url)?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(100);
                Ok(Conn::Server(
                    ConnectionManager::new_with_config(client, cfg).await?,
                ))
            }
            RedisTarget::Cluster(nodes) => {
                let client = self
                    .auth
                    .cluster_builder(nodes)
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Stores our key fingerprint in a new namespace, or compares it with the stored one.
    pub(super) async fn verify(&self, c: &mut Conn) -> Result<(), LedgerError> {
        let meta = self.keys.meta();
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(&meta).arg("key_fingerprint").arg(&self.fingerprint);
        c.query::<i64>(&cmd).await.map_err(|e| unavailable(&e))?;
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(&meta).arg("format").arg(1);
        c.query::<i64>(&cmd).await.map_err(|e| unavailable(&e))?;
        let mut gen = [0u8; 16];
        getrandom::fill(&mut gen)
            .map_err(|e| LedgerError::Unavailable(format!("no randomness for the marker: {e}")))?;
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(&meta).arg("gen").arg(hex(&gen));
        c.query::<i64>(&cmd).await.map_err(|e| unavailable(&e))?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&meta).arg("key_fingerprint");
        let stored: Option<String> = c.query(&cmd).await.map_err(|e| unavailable(&e))?;
        if stored.as_deref() == Some(self.fingerprint.as_str()) {
            self.verified.store(true, Ordering::Release);
            Ok(())
        } else {
            if !self.mismatch.swap(true, Ordering::AcqRel) {
                tracing::error!(namespace = %self.keys.ns, "the Redis ledger namespace was created with another hash key; refusing to count (every replica must use the same ledger.hash_key_file)");
            }
            Err(self.mismatch_error())
        }
    }

    /// Runs a pipeline of commands on the namespace's keys (migration).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when Redis fails or does not answer in time.
    pub(crate) async fn exec_pipeline(&self, pipe: &redis::Pipeline) -> Result<(), LedgerError> {
        self.run(|c| async move {
            match c {
                Conn::Server(mut c) => pipe.query_async::<()>(&mut c).await,
                Conn::Cluster(mut c) => pipe.query_async::<()>(&mut c).await,
            }
        })
        .await
    }
}

pub(super) async fn health_loop(weak: Weak<RedisLedger>) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(l) = weak.upgrade() else {
            return;
        };
        if l.mismatch.load(Ordering::Acquire) {
            return;
        }
        // Also establishes the epoch on first contact and notices a loss without traffic.
        let _ = l.check_loss().await;
        if l.journal
            .as_ref()
            .is_some_and(|j| j.compaction_due(SystemTime::now()))
        {
            let l = l.clone();
            let done = tokio::task::spawn_blocking(move || {
                l.journal
                    .as_ref()
                    .map_or(Ok(()), |j| j.compact(SystemTime::now()))
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "redis ledger journal: compaction failed");
            }
        }
    }
}
