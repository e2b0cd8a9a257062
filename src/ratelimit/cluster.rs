//! Fleet-wide rate limits through Redis, off the request's critical path.
//!
//! Every gateway keeps, per key of a `scope = "cluster"` limit, the fleet's
//! count for the current and the previous window as it last heard from Redis,
//! plus the requests it admitted itself since then (`pending`). A request is
//! admitted against `remote_prev × (1 − elapsed) + remote_curr + pending`,
//! without waiting on Redis. A background task ([`sync_all`], every
//! `[cluster] sync_interval`) sends each key's pending count with one
//! pipelined `INCRBY` + `EXPIRE` per key and reads back the fleet total and the
//! previous window's total. Windows are aligned to the Unix clock
//! (`floor(now / per)`), so every node counts into the same Redis key.
//!
//! Admission error: what one node admits reaches the others after at most
//! two sync rounds (its send, their next read); meanwhile they admit against
//! a stale count. Near the limit the fleet can therefore admit at most
//! `(nodes − 1) × (requests for the key reaching one node in 2 ×
//! sync_interval)` beyond it per window, plus pending counts lost at a window
//! edge. With 3 nodes, 100 ms sync and 50 requests/s for a key at each node
//! that is ≤ 20 extra requests per window.
//!
//! Redis unreachable: admission follows `on_redis_error` (`local`: this node's
//! own sliding estimate, the same sketch a local limit uses; `allow`; `deny`:
//! 503). The outage is logged once, counted in `frontdesk_redis_errors_total`
//! and shown by the `frontdesk_redis_up` gauge; the connection manager
//! reconnects by itself and pending counts are kept and sent once it is back.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Quota;

/// What to do with a cluster limit while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Local,
    Allow,
    Deny,
}

/// Shared state of the `[cluster]` section.
pub struct ClusterState {
    pub redis_url: String,
    pub fallback: Fallback,
    pub sync_interval: Duration,
    pub key_prefix: String,
    /// False from the first failed sync until the next good one.
    up: AtomicBool,
}

impl ClusterState {
    pub fn new(
        redis_url: &str,
        fallback: Fallback,
        sync_interval: Duration,
        key_prefix: &str,
    ) -> ClusterState {
        ClusterState {
            redis_url: redis_url.to_string(),
            fallback,
            sync_interval,
            key_prefix: key_prefix.to_string(),
            // Optimistic until the first sync says otherwise, so a gateway
            // that starts before Redis does not deny everything meanwhile.
            up: AtomicBool::new(true),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records the outcome of a sync; returns true when the state changed.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel) != up
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyCount {
    window: u64,
    remote_prev: i64,
    remote_curr: i64,
    pending: i64,
}

const SHARDS: usize = 16;

/// One cluster-scope limit's view of the fleet.
pub struct ClusterCounter {
    pub policy: Arc<str>,
    per_secs: u64,
    state: Arc<ClusterState>,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, KeyCount>>>,
    /// Keys tracked per shard at most; beyond, new keys fall back to the
    /// local estimate (and are counted there), so memory stays bounded.
    max_keys_per_shard: usize,
}

/// The outcome of [`ClusterCounter::admit`].
pub enum ClusterAdmission {
    Admitted(Quota),
    Refused {
        quota: Quota,
        retry_after_secs: u64,
    },
    /// Redis is down (or the key table is full): decide by the fallback.
    StoreDown(Fallback),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClusterCounter {
    pub fn new(
        policy: &str,
        per: Duration,
        state: Arc<ClusterState>,
        max_keys: usize,
    ) -> ClusterCounter {
        ClusterCounter {
            policy: policy.into(),
            per_secs: per.as_secs().max(1),
            state,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_keys_per_shard: (max_keys / SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, KeyCount>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    fn window_of(&self, ms: u64) -> (u64, f64) {
        let per_ms = self.per_secs * 1000;
        (ms / per_ms, (ms % per_ms) as f64 / per_ms as f64)
    }

    /// Admits one request for `key` against the fleet-wide estimate.
    pub fn admit(&self, key: &str, limit: u64) -> ClusterAdmission {
        if !self.state.is_up() {
            return ClusterAdmission::StoreDown(self.state.fallback);
        }
        let (window, frac) = self.window_of(now_ms());
        let Ok(mut shard) = self.shard(key).lock() else {
            return ClusterAdmission::StoreDown(self.state.fallback);
        };
        if !shard.contains_key(key) {
            if shard.len() >= self.max_keys_per_shard {
                return ClusterAdmission::StoreDown(Fallback::Local);
            }
            shard.insert(key.to_string(), KeyCount::default());
        }
        let Some(entry) = shard.get_mut(key) else {
            return ClusterAdmission::StoreDown(Fallback::Local);
        };
        roll(entry, window);
        let prev = entry.remote_prev as f64;
        let curr = (entry.remote_curr + entry.pending) as f64;
        let estimate = prev * (1.0 - frac) + curr + 1.0;
        let per = Duration::from_secs(self.per_secs);
        let quota = |remaining: f64| Quota {
            policy: self.policy.clone(),
            limit,
            window_secs: self.per_secs,
            remaining: remaining.floor().max(0.0) as u64,
            reset_secs: ((1.0 - frac) * self.per_secs as f64).ceil().max(1.0) as u64,
        };
        if estimate > limit as f64 {
            return ClusterAdmission::Refused {
                quota: quota(0.0),
                retry_after_secs: super::retry_after(limit, per, prev, curr, frac),
            };
        }
        entry.pending += 1;
        ClusterAdmission::Admitted(quota(limit as f64 - estimate))
    }

    /// Takes back an admission (a later limit of the route refused).
    pub fn undo(&self, key: &str) {
        if let Ok(mut shard) = self.shard(key).lock() {
            if let Some(e) = shard.get_mut(key) {
                e.pending -= 1;
            }
        }
    }

    fn redis_key(&self, window: u64, key: &str) -> String {
        format!(
            "{}:rl:{}:{}:{}",
            self.state.key_prefix, self.policy, window, key
        )
    }

    /// One sync round: sends pending counts, reads fleet totals.
    pub async fn sync(&self, conn: &mut redis::aio::ConnectionManager) -> redis::RedisResult<()> {
        let (window, _) = self.window_of(now_ms());
        for shard in &self.shards {
            // Take the pending counts out under the lock, talk to Redis
            // without it, then merge what came back.
            let batch: Vec<(String, i64)> = {
                let Ok(mut map) = shard.lock() else { continue };
                map.retain(|_, e| e.window + 1 >= window);
                map.iter_mut()
                    .filter(|(_, e)| e.window == window)
                    .map(|(k, e)| {
                        let n = e.pending;
                        e.pending = 0;
                        (k.clone(), n)
                    })
                    .collect()
            };
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (key, n) in &batch {
                pipe.cmd("INCRBY").arg(self.redis_key(window, key)).arg(*n);
                pipe.cmd("EXPIRE")
                    .arg(self.redis_key(window, key))
                    .arg(self.per_secs * 2 + 1)
                    .ignore();
                pipe.cmd("GET")
                    .arg(self.redis_key(window.saturating_sub(1), key));
            }
            let result: redis::RedisResult<Vec<Option<i64>>> = pipe.query_async(conn).await;
            let Ok(mut map) = shard.lock() else { continue };
            match result {
                Ok(values) => {
                    for (i, (key, _)) in batch.iter().enumerate() {
                        let curr = values.get(2 * i).copied().flatten().unwrap_or(0);
                        let prev = values.get(2 * i + 1).copied().flatten().unwrap_or(0);
                        if let Some(e) = map.get_mut(key) {
                            if e.window == window {
                                e.remote_curr = curr;
                                e.remote_prev = prev;
                            }
                        }
                    }
                }
                Err(err) => {
                    // Keep the counts for the next attempt.
                    for (key, n) in batch {
                        if let Some(e) = map.get_mut(&key) {
                            if e.window == window {
                                e.pending += n;
                            }
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}

/// Moves a key's counts to `window` (the current one becomes the previous).
fn roll(e: &mut KeyCount, window: u64) {
    if e.window == window {
        return;
    }
    if e.window + 1 == window {
        e.remote_prev = e.remote_curr + e.pending;
    } else {
        e.remote_prev = 0;
    }
    e.remote_curr = 0;
    e.pending = 0;
    e.window = window;
}

/// Syncs every cluster counter; what the background service runs each tick.
pub async fn sync_all(
    counters: &[Arc<ClusterCounter>],
    conn: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<()> {
    for c in counters {
        c.sync(conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_against_pending_and_remote_counts() {
        let state = Arc::new(ClusterState::new(
            "redis://127.0.0.1:1",
            Fallback::Local,
            Duration::from_millis(100),
            "t",
        ));
        let c = ClusterCounter::new("p", Duration::from_secs(3600), state.clone(), 1000);
        let mut admitted = 0;
        for _ in 0..10 {
            if matches!(c.admit("k", 5), ClusterAdmission::Admitted(_)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        // What other nodes admitted (as Redis reports it) counts too.
        {
            let mut shard = c.shard("j").lock().unwrap();
            let (window, _) = c.window_of(now_ms());
            shard.insert(
                "j".into(),
                KeyCount {
                    window,
                    remote_prev: 0,
                    remote_curr: 5,
                    pending: 0,
                },
            );
        }
        assert!(matches!(c.admit("j", 5), ClusterAdmission::Refused { .. }));
        state.set_up(false);
        assert!(matches!(
            c.admit("k", 5),
            ClusterAdmission::StoreDown(Fallback::Local)
        ));
    }

    #[test]
    fn windows_roll_over() {
        let mut e = KeyCount {
            window: 7,
            remote_prev: 1,
            remote_curr: 4,
            pending: 2,
        };
        roll(&mut e, 8);
        assert_eq!((e.remote_prev, e.remote_curr, e.pending), (6, 0, 0));
        roll(&mut e, 10);
        assert_eq!(e.remote_prev, 0);
    }
}
