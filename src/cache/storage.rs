//! The response store behind pingora-cache: a byte-bounded, in-memory
//! `Storage` with TinyUFO eviction.
//!
//! pingora 0.9 ships only `MemCache`, which its docs call "for testing
//! only": an unbounded map that copies every body on every hit and
//! deserializes (zstd) the header on every lookup. This store:
//!
//! * lets a [`TinyUfo`] (TinyLFU admission + S3-FIFO eviction, lock-free)
//!   decide what stays: a scan of one-off URLs cannot flush the popular
//!   ones, and the total weight never exceeds the budget. Weights are KiB,
//!   rounded up, so the charged size is never below the real one;
//! * commits an entry only when its miss handler finishes: a fill that
//!   fails half-way (backend reset, client gone) leaves nothing behind;
//! * serves bodies as `Bytes` slices of one shared buffer (no copy per hit,
//!   ranges are slices) and keeps the header as a parsed `ResponseHeader`;
//! * supports `update_meta` (a 304 refreshes the entry in place) and purge
//!   by exact key, by route, and by route + path (every identity and every
//!   `Vary` variant of that path), through an index of what is stored.
//!
//! The entries live in a sharded map keyed by the full 128-bit key (TinyUFO
//! hashes keys down to 64 bits, so its answers are checked against it).
//! Byte and item counts are kept by the entries themselves (they drop out
//! when the last reader of an evicted entry finishes), so the gauges report
//! memory actually held.
//!
//! There is no disk tier: the store starts empty on every start and upgrade.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, PurgeType, Storage};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use tinyufo::TinyUfo;

/// What a stored entry belongs to (for purges by route and by path) and
/// the largest body its policy stores. Set by the proxy in the meta's
/// extensions before the miss handler is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeTag {
    pub route: Arc<str>,
    pub path: Arc<str>,
    pub max_body: usize,
}

/// The weight unit: TinyUFO weights are `u16`, so entries are charged in KiB.
const UNIT: usize = 1024;

/// Header bytes are charged roughly: name + value + separators per field.
fn header_size(h: &ResponseHeader) -> usize {
    h.headers
        .iter()
        .fold(64, |acc, (k, v)| acc + k.as_str().len() + v.len() + 4)
}

/// The parts of a `CacheMeta` kept in memory. `CacheMeta` is not `Clone`,
/// and its `serialize` compresses the header (zstd), which is work a
/// memory store does not need on every hit.
struct StoredMeta {
    fresh_until: SystemTime,
    /// The object's provenance (its admission time; kept across 304s).
    provenance: SystemTime,
    /// Age is counted from here (the last admission or revalidation).
    epoch: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    variance: Option<HashBinary>,
    header: ResponseHeader,
}

impl StoredMeta {
    fn from_meta(meta: &CacheMeta) -> StoredMeta {
        StoredMeta {
            fresh_until: meta.fresh_until(),
            provenance: meta.provenance(),
            epoch: meta.epoch(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: meta.response_header().clone(),
        }
    }

    fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.provenance,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        );
        if self.epoch != self.provenance {
            meta.set_epoch_override(self.epoch);
        }
        if let Some(v) = self.variance {
            meta.set_variance_key(v);
        }
        meta
    }
}

struct Entry {
    key: u128,
    generation: u64,
    tag: Option<PurgeTag>,
    meta: ArcSwap<StoredMeta>,
    body: Bytes,
    /// Bytes charged to the budget (body + header estimate).
    size: usize,
    counters: Arc<Counters>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.counters.bytes.fetch_sub(self.size, Ordering::Relaxed);
        self.counters.items.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    bytes: AtomicUsize,
    items: AtomicUsize,
    evictions: AtomicU64,
}

/// One slice of the entry map.
type Shard = RwLock<HashMap<u128, Arc<Entry>>>;

/// Route → path → stored keys (with the generation stored under each key).
type PurgeIndex = HashMap<Arc<str>, HashMap<Arc<str>, HashMap<u128, u64>>>;

/// The in-memory response store. Created once per process (pingora-cache
/// wants `&'static` storage) with the `[server.cache] memory` budget.
///
/// TinyUFO decides what stays (it holds only keys and weights); the entries
/// themselves live in a sharded map. TinyUFO's own maps free removed values
/// through epoch-based reclamation, which can hold a removed body for a
/// while; keeping the bodies out of it makes the memory held exactly what
/// the map holds (plus readers still streaming an evicted body).
pub struct MemoryStore {
    policy: TinyUfo<u128, (u128, u64)>,
    shards: Box<[Shard]>,
    index: Mutex<PurgeIndex>,
    counters: Arc<Counters>,
    budget: usize,
    max_object: usize,
    next_generation: AtomicU64,
}

/// What a store holds right now, for metrics and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub bytes: usize,
    pub items: usize,
    pub evictions: u64,
    pub budget: usize,
}

fn key_of(bin: HashBinary) -> u128 {
    u128::from_be_bytes(bin)
}

const SHARDS: usize = 64;

fn weight_of(size: usize) -> u16 {
    u16::try_from(size.div_ceil(UNIT).max(1)).unwrap_or(u16::MAX)
}

impl MemoryStore {
    /// A store that holds at most `budget` bytes; no single entry may take
    /// more than an eighth of it (or 64 MiB, the largest TinyUFO weight).
    pub fn new(budget: usize) -> MemoryStore {
        let budget = budget.max(UNIT);
        let units = budget / UNIT;
        // TinyLFU's sketch and the bucket map are sized for the number of
        // entries expected; assume 4 KiB responses on average.
        let estimated_items = (budget / (4 * UNIT)).clamp(64, 1 << 22);
        MemoryStore {
            policy: TinyUfo::new_compact(units, estimated_items),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            index: Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
            budget,
            max_object: (budget / 8).min(usize::from(u16::MAX) * UNIT),
            next_generation: AtomicU64::new(1),
        }
    }

    /// The largest body (plus header) this store accepts.
    pub fn max_object_size(&self) -> usize {
        self.max_object
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            items: self.counters.items.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            budget: self.budget,
        }
    }

    fn shard(&self, key: u128) -> &Shard {
        // The key is a Blake2b hash: its low bits are uniform.
        &self.shards[(key as usize) % SHARDS]
    }

    fn get(&self, key: u128) -> Option<Arc<Entry>> {
        let entry = self
            .shard(key)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()?;
        // Counts the use for eviction. An entry the policy no longer knows
        // (evicted while this lookup ran, or replaced by a newer fill) is
        // on its way out: drop it rather than serve or keep it.
        match self.policy.get(&key) {
            Some((k, generation)) if k == key && generation == entry.generation => Some(entry),
            _ => {
                self.remove_exact(key, entry.generation);
                None
            }
        }
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, PurgeIndex> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters (entries are checked on purge): keep going.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unindex(&self, entry: &Entry) {
        let Some(tag) = &entry.tag else { return };
        let mut index = self.lock_index();
        let Some(paths) = index.get_mut(&tag.route) else {
            return;
        };
        if let Some(keys) = paths.get_mut(&tag.path) {
            if keys.get(&entry.key) == Some(&entry.generation) {
                keys.remove(&entry.key);
            }
            if keys.is_empty() {
                paths.remove(&tag.path);
            }
        }
        if paths.is_empty() {
            index.remove(&tag.route);
        }
    }

    /// Removes the entry under `key` if it is still `generation`.
    fn remove_exact(&self, key: u128, generation: u64) -> bool {
        let removed = {
            let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
            match shard.get(&key) {
                Some(e) if e.generation == generation => shard.remove(&key),
                _ => None,
            }
        };
        match removed {
            Some(e) => {
                self.unindex(&e);
                true
            }
            None => false,
        }
    }

    /// Admits a finished entry. The policy learns of it first, so a lookup
    /// never finds an entry the policy does not know; what the policy
    /// evicts for it (possibly the new entry itself, when it is less
    /// popular than what it would displace) leaves the map and the index.
    fn admit(&self, entry: Arc<Entry>) {
        let (key, generation) = (entry.key, entry.generation);
        let evicted = self
            .policy
            .put(key, (key, generation), weight_of(entry.size));
        let rejected = evicted.iter().any(|kv| kv.data == (key, generation));
        if !rejected {
            if let Some(tag) = &entry.tag {
                self.lock_index()
                    .entry(tag.route.clone())
                    .or_default()
                    .entry(tag.path.clone())
                    .or_default()
                    .insert(key, generation);
            }
            let replaced = self
                .shard(key)
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, entry);
            drop(replaced);
        }
        for kv in evicted {
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            let (k, g) = kv.data;
            if (k, g) != (key, generation) {
                self.remove_exact(k, g);
            }
        }
    }

    fn remove_key(&self, key: u128) -> bool {
        let removed = self
            .shard(key)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        match removed {
            Some(e) => {
                self.policy.remove(&key);
                self.unindex(&e);
                true
            }
            None => false,
        }
    }

    /// Removes every entry stored for `route` (all paths, identities and
    /// variants). Returns how many went.
    pub fn purge_route(&self, route: &str) -> usize {
        let keys: Vec<(u128, u64)> = {
            let mut index = self.lock_index();
            match index.remove(route) {
                Some(paths) => paths.into_values().flat_map(|k| k.into_iter()).collect(),
                None => Vec::new(),
            }
        };
        self.remove_listed(keys)
    }

    /// Removes every entry stored for `path` on `route` (all identities,
    /// query strings and variants). Returns how many went.
    pub fn purge_path(&self, route: &str, path: &str) -> usize {
        let keys: Vec<(u128, u64)> = {
            let mut index = self.lock_index();
            let Some(paths) = index.get_mut(route) else {
                return 0;
            };
            let keys = paths
                .remove(path)
                .map(|k| k.into_iter().collect())
                .unwrap_or_default();
            if paths.is_empty() {
                index.remove(route);
            }
            keys
        };
        self.remove_listed(keys)
    }

    fn remove_listed(&self, keys: Vec<(u128, u64)>) -> usize {
        let mut removed = 0;
        for (key, generation) in keys {
            // Only the entry the index knew about: a newer fill under the
            // same key, admitted after the index was read, stays.
            if self.remove_exact(key, generation) {
                self.policy.remove(&key);
                removed += 1;
            }
        }
        removed
    }
}

/// Reads one stored body (or a range of it) without copying.
struct Hit {
    entry: Arc<Entry>,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.entry.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.entry.body.len();
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start out of range {start} >= {len}"),
            );
        }
        self.start = start;
        self.end = end.map_or(len, |e| e.min(len));
        self.done = false;
        Ok(())
    }

    // Eviction is the store's own (TinyUFO); pingora's eviction manager is
    // not used, so there is nothing to count here.
    fn should_count_access(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Collects one response while it streams to the client; admitted whole
/// on `finish`, dropped (nothing stored) otherwise.
struct Fill {
    store: &'static MemoryStore,
    key: u128,
    tag: Option<PurgeTag>,
    meta: StoredMeta,
    body: Vec<u8>,
    header_size: usize,
    max_body: usize,
    too_big: bool,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_big {
            return Ok(());
        }
        if self.body.len() + data.len() > self.max_body {
            // Keep serving the client (pingora's own size cap would cut a
            // chunked response short); just do not keep the copy.
            self.too_big = true;
            self.body = Vec::new();
            return Ok(());
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        if self.too_big {
            return Ok(MissFinishType::Created(0));
        }
        let fill = *self;
        let size = fill.header_size + fill.body.len();
        let counters = fill.store.counters.clone();
        counters.bytes.fetch_add(size, Ordering::Relaxed);
        counters.items.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            key: fill.key,
            generation: fill.store.next_generation.fetch_add(1, Ordering::Relaxed),
            tag: fill.tag,
            meta: ArcSwap::from_pointee(fill.meta),
            body: Bytes::from(fill.body),
            size,
            counters,
        });
        fill.store.admit(entry);
        Ok(MissFinishType::Created(size))
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(entry) = self.get(key_of(key.combined_bin())) else {
            return Ok(None);
        };
        let meta = entry.meta.load().to_meta();
        let end = entry.body.len();
        let hit = Hit {
            entry,
            start: 0,
            end,
            done: false,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let stored = StoredMeta::from_meta(meta);
        let header_size = header_size(&stored.header);
        let tag = meta.extensions().get::<PurgeTag>().cloned();
        Ok(Box::new(Fill {
            store: self,
            key: key_of(key.combined_bin()),
            max_body: tag
                .as_ref()
                .map_or(self.max_object, |t| t.max_body.min(self.max_object))
                .saturating_sub(header_size),
            tag,
            meta: stored,
            body: Vec::new(),
            header_size,
            too_big: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key: &CompactCacheKey = target.key();
        if self.remove_key(key_of(key.combined_bin())) {
            Ok(PurgeOutcome::Purged(None))
        } else {
            Ok(PurgeOutcome::NotFound)
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        match self.get(key_of(key.combined_bin())) {
            Some(entry) => {
                entry.meta.store(Arc::new(StoredMeta::from_meta(meta)));
                Ok(true)
            }
            // Evicted or purged while it was being revalidated.
            None => Ok(false),
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::trace::Span;
    use std::time::Duration;

    fn leak(budget: usize) -> &'static MemoryStore {
        Box::leak(Box::new(MemoryStore::new(budget)))
    }

    fn meta(tag: Option<PurgeTag>) -> CacheMeta {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("etag", "\"v1\"").unwrap();
        let now = SystemTime::now();
        let mut m = CacheMeta::new(now + Duration::from_secs(60), now, 5, 10, h);
        if let Some(t) = tag {
            m.extensions_mut().insert(t);
        }
        m
    }

    fn tag(route: &str, path: &str) -> PurgeTag {
        PurgeTag {
            route: route.into(),
            path: path.into(),
            max_body: usize::MAX,
        }
    }

    async fn fill(store: &'static MemoryStore, key: &CacheKey, body: &[u8], t: Option<PurgeTag>) {
        let span = Span::inactive().handle();
        let mut miss = store.get_miss_handler(key, &meta(t), &span).await.unwrap();
        let half = body.len() / 2;
        miss.write_body(Bytes::copy_from_slice(&body[..half]), false)
            .await
            .unwrap();
        miss.write_body(Bytes::copy_from_slice(&body[half..]), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    async fn read(store: &'static MemoryStore, key: &CacheKey) -> Option<Vec<u8>> {
        let span = Span::inactive().handle();
        let (_, mut hit) = store.lookup(key, &span).await.unwrap()?;
        let mut out = Vec::new();
        while let Some(b) = hit.read_body().await.unwrap() {
            out.extend_from_slice(&b);
        }
        Some(out)
    }

    #[tokio::test]
    async fn a_fill_is_visible_only_after_finish() {
        let store = leak(1 << 20);
        let key = CacheKey::new("a", "");
        let span = Span::inactive().handle();
        let mut miss = store
            .get_miss_handler(&key, &meta(None), &span)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"hello"), true)
            .await
            .unwrap();
        assert!(read(store, &key).await.is_none());
        miss.finish().await.unwrap();
        assert_eq!(read(store, &key).await.unwrap(), b"hello");
        assert_eq!(store.stats().items, 1);

        // A fill dropped half-way (backend failed) stores nothing.
        let other = CacheKey::new("b", "");
        let mut miss = store
            .get_miss_handler(&other, &meta(None), &span)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"part"), false)
            .await
            .unwrap();
        drop(miss);
        assert!(read(store, &other).await.is_none());
    }

    #[tokio::test]
    async fn meta_survives_the_round_trip_and_update() {
        let store = leak(1 << 20);
        let key = CacheKey::new("m", "");
        fill(store, &key, b"body", None).await;
        let span = Span::inactive().handle();
        let (m, _) = store.lookup(&key, &span).await.unwrap().unwrap();
        assert!(m.is_fresh(SystemTime::now()));
        assert_eq!(m.stale_while_revalidate_sec(), 5);
        assert_eq!(m.stale_if_error_sec(), 10);
        assert_eq!(m.headers().get("etag").unwrap(), "\"v1\"");

        let mut newer = meta(None);
        newer
            .response_header_mut()
            .insert_header("etag", "\"v2\"")
            .unwrap();
        assert!(store.update_meta(&key, &newer, &span).await.unwrap());
        let (m, _) = store.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(m.headers().get("etag").unwrap(), "\"v2\"");
        assert!(!store
            .update_meta(&CacheKey::new("gone", ""), &newer, &span)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn ranges_are_slices() {
        let store = leak(1 << 20);
        let key = CacheKey::new("r", "");
        fill(store, &key, b"0123456789", None).await;
        let span = Span::inactive().handle();
        let (_, mut hit) = store.lookup(&key, &span).await.unwrap().unwrap();
        hit.seek(2, Some(5)).unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "234");
        assert!(hit.read_body().await.unwrap().is_none());
        assert!(hit.seek(10, None).is_err());
    }

    #[tokio::test]
    async fn purges_by_route_and_path() {
        let store = leak(1 << 20);
        for (i, path) in ["/a", "/a", "/b"].iter().enumerate() {
            let key = CacheKey::new(format!("k{i}"), "");
            fill(store, &key, b"x", Some(tag("r1", path))).await;
        }
        fill(
            store,
            &CacheKey::new("other", ""),
            b"y",
            Some(tag("r2", "/a")),
        )
        .await;
        assert_eq!(store.purge_path("r1", "/a"), 2);
        assert!(read(store, &CacheKey::new("k0", "")).await.is_none());
        assert!(read(store, &CacheKey::new("k2", "")).await.is_some());
        assert_eq!(store.purge_path("r1", "/a"), 0);
        assert_eq!(store.purge_route("r1"), 1);
        assert_eq!(store.purge_route("r2"), 1);
        assert_eq!(store.stats().items, 0);
        assert_eq!(store.stats().bytes, 0);
    }

    #[tokio::test]
    async fn the_budget_holds_under_a_fill() {
        let budget = 256 * 1024;
        let store = leak(budget);
        let body = vec![b'z'; 3000];
        for i in 0..2000 {
            fill(
                store,
                &CacheKey::new(format!("fill{i}"), ""),
                &body,
                Some(tag("r", "/p")),
            )
            .await;
            assert!(store.stats().bytes <= budget, "over budget after {i}");
        }
        let s = store.stats();
        assert!(s.items > 10 && s.items < 2000, "{s:?}");
        assert!(s.evictions > 0);
        // The index forgets evicted entries: a route purge counts only live ones.
        assert_eq!(store.purge_route("r"), s.items);
    }

    #[tokio::test]
    async fn oversized_bodies_are_not_kept() {
        let store = leak(64 * 1024);
        let key = CacheKey::new("big", "");
        fill(store, &key, &vec![0u8; 16 * 1024], None).await;
        assert!(read(store, &key).await.is_none());
        assert_eq!(store.stats().items, 0);
    }
}
