//! Span bodies compressed: zstd, with a dictionary trained on the store's
//! own first spans. A chunk holds the spans of one trace from one export,
//! a few KB; compressed alone, each would pay again for the attribute
//! names, resource and message framing every other chunk repeats. The
//! dictionary holds those once. It is trained (in the background) from the
//! first `TRAIN_AT` bytes of span bodies, kept in `span_dictionaries` (in
//! the transaction of the first append whose chunks use it) and in memory
//! for every connection; chunks compressed before it exists, and those of
//! stores from before it (LZ4), are read as they were written.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, Transaction, params};
use rustc_hash::FxHashMap;
use tracing::{info, warn};

/// zstd's level for span bodies: its fastest ordinary one, as bodies are
/// packed on the request handlers' threads.
const LEVEL: i32 = 1;
/// zstd's `targetLength` for its fast strategy: how far its match finder
/// strides over bytes that found no match; above 0 it also leaves literals
/// as they are (no Huffman coding). On SDK-shaped bodies 4 packs 40 %
/// faster than 0, into bodies a half larger (BENCHMARKS.md, session 25).
/// Used in stores of the pages made now (`PAGE_BYTES`); in those of 8 KiB
/// (made before), the larger rows would each take a page of their own.
const ACCELERATION: u32 = 4;
/// The dictionary's size.
const DICTIONARY_BYTES: usize = 64 << 10;
/// Span bodies sampled before the dictionary is trained.
const TRAIN_AT: usize = 4 << 20;
/// A sample's largest part kept (a body with megabytes of prompt would
/// otherwise be most of the samples).
const SAMPLE_BYTES: usize = 16 << 10;
/// The most bytes a body may unpack to.
const MAX_UNPACKED: u64 = 256 << 20;
/// The first bytes of every zstd frame; an LZ4 body of schema 11 and
/// before starts with its unpacked size instead, which is never this.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A trained dictionary: its id (written into every frame packed with it)
/// and bytes.
pub struct Dictionary {
    pub id: u32,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dictionary({}, {} bytes)", self.id, self.bytes.len())
    }
}

impl PartialEq for Dictionary {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// Bodies sampled for training.
#[derive(Default)]
struct Samples {
    bytes: Vec<u8>,
    sizes: Vec<usize>,
}

/// The store's dictionaries and the one bodies are packed with now.
pub struct SpanPacking {
    by_id: RwLock<FxHashMap<u32, Arc<Dictionary>>>,
    current: RwLock<Option<Arc<Dictionary>>>,
    samples: Mutex<Samples>,
    training: AtomicBool,
    /// zstd's `targetLength`: `ACCELERATION` or 0, by the store's pages.
    acceleration: u32,
}

impl Default for SpanPacking {
    /// As for a store made anew.
    fn default() -> Self {
        SpanPacking {
            by_id: RwLock::default(),
            current: RwLock::default(),
            samples: Mutex::default(),
            training: AtomicBool::default(),
            acceleration: ACCELERATION,
        }
    }
}

thread_local! {
    /// zstd's contexts, kept per thread with the dictionary they hold (0:
    /// none) and their acceleration: loading one costs more than packing a
    /// small body.
    static PACKER: RefCell<Option<((u32, u32), zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static UNPACKER: RefCell<Option<(u32, zstd::bulk::Decompressor<'static>)>> =
        const { RefCell::new(None) };
}

fn corrupt(what: impl std::fmt::Display) -> String {
    format!("stored span chunk body: {what}")
}

impl SpanPacking {
    /// The dictionaries of a store, the newest packing from now on, at the
    /// acceleration its page size allows.
    pub fn load(conn: &Connection) -> Result<Self, rusqlite::Error> {
        let fast = super::page_size(conn)? >= super::PAGE_BYTES;
        let acceleration = if fast { ACCELERATION } else { 0 };
        let packing = SpanPacking { acceleration, ..SpanPacking::default() };
        let mut stmt = conn.prepare("SELECT id, dictionary FROM span_dictionaries ORDER BY seq")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?)))?;
        for row in rows {
            let (id, bytes) = row?;
            packing.add(Arc::new(Dictionary { id: id as u32, bytes }));
        }
        Ok(packing)
    }

    fn add(&self, dictionary: Arc<Dictionary>) {
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dictionary.id, dictionary.clone());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(dictionary);
    }

    /// Packs a span body; returns it and the dictionary it needs, which
    /// must be stored (`store`) with it.
    pub fn pack(self: &Arc<Self>, body: &[u8]) -> (Vec<u8>, Option<Arc<Dictionary>>) {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        if current.is_none() {
            self.sample(body);
        }
        let held = (current.as_ref().map_or(0, |d| d.id), self.acceleration);
        let packed = PACKER.with_borrow_mut(|packer| {
            if packer.as_ref().is_none_or(|(was, _)| *was != held) {
                let compressor = match &current {
                    Some(dictionary) => {
                        zstd::bulk::Compressor::with_dictionary(LEVEL, &dictionary.bytes)
                    }
                    None => zstd::bulk::Compressor::new(LEVEL),
                };
                let mut compressor = compressor.expect("a trained dictionary loads");
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::TargetLength(self.acceleration))
                    .expect("zstd takes a target length for its fast strategy");
                *packer = Some((held, compressor));
            }
            let (_, compressor) = packer.as_mut().expect("just set");
            compressor.compress(body).expect("compressing into a Vec cannot fail")
        });
        (packed, current)
    }

    /// Keeps part of `body` for training; trains once enough is kept (once
    /// per process: a failed training leaves spans packed without one).
    fn sample(self: &Arc<Self>, body: &[u8]) {
        if self.training.load(Ordering::Acquire) {
            return;
        }
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let part = &body[..body.len().min(SAMPLE_BYTES)];
        samples.bytes.extend_from_slice(part);
        samples.sizes.push(part.len());
        if samples.bytes.len() < TRAIN_AT || self.training.swap(true, Ordering::AcqRel) {
            return;
        }
        let taken = std::mem::take(&mut *samples);
        drop(samples);
        let packing = self.clone();
        let spawned =
            std::thread::Builder::new().name("tally-span-dictionary".into()).spawn(move || {
                match zstd::dict::from_continuous(&taken.bytes, &taken.sizes, DICTIONARY_BYTES) {
                    Ok(bytes) => match zstd::zstd_safe::get_dict_id(&bytes) {
                        Some(id) => {
                            info!(id = id.get(), bytes = bytes.len(), "span dictionary trained");
                            packing.add(Arc::new(Dictionary { id: id.get(), bytes }));
                        }
                        None => {
                            warn!("a trained span dictionary has no id; spans pack without one")
                        }
                    },
                    Err(err) => {
                        warn!(%err, "span dictionary training failed; spans pack without one")
                    }
                }
            });
        if let Err(err) = spawned {
            warn!(%err, "could not start span dictionary training");
        }
    }

    /// Unpacks a body `pack` wrote, or one of a store from before (LZ4).
    pub fn unpack(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        if !body.starts_with(&ZSTD_MAGIC) {
            return lz4_flex::decompress_size_prepended(body).map_err(corrupt);
        }
        let size = zstd::zstd_safe::get_frame_content_size(body)
            .ok()
            .flatten()
            .filter(|&size| size <= MAX_UNPACKED)
            .ok_or_else(|| corrupt("no or bad unpacked size"))?;
        let id = zstd::zstd_safe::get_dict_id_from_frame(body).map_or(0, |id| id.get());
        let dictionary = match id {
            0 => None,
            id => Some(
                self.by_id
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| corrupt(format!("unknown dictionary {id}")))?,
            ),
        };
        UNPACKER.with_borrow_mut(|unpacker| {
            if unpacker.as_ref().is_none_or(|(held, _)| *held != id) {
                let decompressor = match &dictionary {
                    Some(dictionary) => {
                        zstd::bulk::Decompressor::with_dictionary(&dictionary.bytes)
                    }
                    None => zstd::bulk::Decompressor::new(),
                };
                *unpacker = Some((id, decompressor.map_err(corrupt)?));
            }
            let (_, decompressor) = unpacker.as_mut().expect("just set");
            decompressor.decompress(body, size as usize).map_err(corrupt)
        })
    }
}

/// Stores `dictionary` (once) in the transaction that first writes a chunk
/// packed with it. Looked up first: binding its bytes copies them, and
/// every chunk after the first finds it stored.
pub fn store(tx: &Transaction<'_>, dictionary: &Dictionary) -> Result<(), rusqlite::Error> {
    let id = i64::from(dictionary.id);
    let stored =
        tx.prepare_cached("SELECT 1 FROM span_dictionaries WHERE id = ?1")?.exists(params![id])?;
    if !stored {
        tx.prepare_cached("INSERT INTO span_dictionaries (id, dictionary) VALUES (?1, ?2)")?
            .execute(params![id, dictionary.bytes])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A span body of the shape many share: the same names, other values.
    fn body(n: u64) -> Vec<u8> {
        let words = ["alpha", "retrieval", "weather", "invoice", "summary", "tokens", "agent"];
        let pick = |k: u64| words[((n.wrapping_mul(2_654_435_761) >> k) % 7) as usize];
        format!(
            r#"{{"gen_ai.request.model":"gpt-4o","gen_ai.usage.input_tokens":{},"gen_ai.input.messages":"[{{\"role\":\"user\",\"content\":\"{} {} {} {n}\"}}]","service.name":"support-agent","telemetry.sdk.name":"opentelemetry"}}"#,
            n * 7 % 1000,
            pick(3),
            pick(7),
            pick(11)
        )
        .into_bytes()
    }

    fn new_store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::schema::create_or_check(&conn).unwrap();
        conn
    }

    #[test]
    fn bodies_come_back_packed_alone_and_as_stores_before_wrote_them() {
        let packing = Arc::new(SpanPacking::default());
        let (packed, dictionary) = packing.pack(&body(1));
        assert!(dictionary.is_none());
        assert!(packed.starts_with(&ZSTD_MAGIC));
        assert_eq!(packing.unpack(&packed).unwrap(), body(1));
        let old = lz4_flex::compress_prepend_size(&body(2));
        assert_eq!(packing.unpack(&old).unwrap(), body(2));
        assert!(packing.unpack(&packed[..packed.len() - 2]).is_err());
        assert!(packing.unpack(&[]).is_err());
    }

    #[test]
    fn a_dictionary_trained_from_the_first_bodies_packs_the_rest_and_is_read_after_a_restart() {
        let conn = new_store();
        let packing = Arc::new(SpanPacking::default());
        let mut n = 0;
        while !packing.training.load(Ordering::Acquire) {
            assert!(packing.pack(&body(n)).1.is_none());
            n += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let dictionary = loop {
            if let Some(dictionary) = packing.current.read().unwrap().clone() {
                break dictionary;
            }
            assert!(Instant::now() < deadline, "no dictionary trained");
            std::thread::sleep(Duration::from_millis(20));
        };
        let (packed, used) = packing.pack(&body(n));
        let alone = zstd::bulk::compress(&body(n), LEVEL).unwrap().len();
        assert_eq!(used.as_deref(), Some(&*dictionary));
        assert!(
            packed.len() < alone,
            "{} bytes with the dictionary, {alone} without",
            packed.len()
        );
        // Stored with the chunk, it is there for the next start.
        let tx = conn.unchecked_transaction().unwrap();
        super::store(&tx, &dictionary).unwrap();
        super::store(&tx, &dictionary).unwrap();
        tx.commit().unwrap();
        let reopened = SpanPacking::load(&conn).unwrap();
        assert_eq!(reopened.unpack(&packed).unwrap(), body(n));
        // Without it, the body is an error, not a wrong answer.
        let bare = SpanPacking::default();
        assert!(bare.unpack(&packed).unwrap_err().contains("unknown dictionary"));
    }

    #[test]
    fn stores_of_16_kib_pages_pack_faster_into_larger_bodies_and_those_of_8_keep_packing_tight() {
        let store = |page: i64| {
            let conn = Connection::open_in_memory().unwrap();
            conn.pragma_update(None, "page_size", page).unwrap();
            super::super::schema::create_or_check(&conn).unwrap();
            Arc::new(SpanPacking::load(&conn).unwrap())
        };
        let (tight, fast) = (store(8192), store(16_384));
        assert_eq!((tight.acceleration, fast.acceleration), (0, ACCELERATION));
        // Prose: Huffman-coded literals are most of what packing saves.
        let prose: Vec<u8> = (0..400u64).flat_map(body).collect();
        let (packed_tight, _) = tight.pack(&prose);
        let (packed_fast, _) = fast.pack(&prose);
        assert!(
            packed_fast.len() > packed_tight.len(),
            "{} bytes accelerated, {} not",
            packed_fast.len(),
            packed_tight.len()
        );
        // Either reads what the other packed (the same thread switching).
        assert_eq!(fast.unpack(&packed_tight).unwrap(), prose);
        assert_eq!(tight.unpack(&packed_fast).unwrap(), prose);
        assert_eq!(tight.pack(&prose).0, packed_tight);
    }
}
