//! Key → partition, computed exactly as librdkafka does, so a message partitioned here (by a partition key
//! that differs from its key, or by the outbox at insert time) lands where librdkafka would put a message
//! with that key.

/// How keys map to partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Partitioner {
    /// CRC-32 of the key modulo the partition count: librdkafka's default `consistent_random` and what
    /// ruby-kafka (Deimos 1.x) uses, so partitions agree with a Deimos service on the same topic.
    #[default]
    Consistent,
    /// Java-compatible murmur2 (`(murmur2(key) & 0x7fffffff) % n`): librdkafka's `murmur2_random`, the
    /// Java client's default. Use it when Java producers share the topic.
    Murmur2,
}

impl Partitioner {
    /// The librdkafka `partitioner` setting for this partitioner.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Consistent => "consistent_random",
            Partitioner::Murmur2 => "murmur2_random",
        }
    }

    /// The partition of `key` among `partition_count` partitions (`partition_count` must be positive; 0 is
    /// treated as 1).
    pub fn partition(self, key: &[u8], partition_count: i32) -> i32 {
        let n = partition_count.max(1) as u32;
        let p = match self {
            Partitioner::Consistent => crc32(key) % n,
            Partitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) % n,
        };
        p as i32
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and librdkafka's `rd_crc32`).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Kafka's murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2` and librdkafka's
/// `rd_murmur2`.
pub(crate) fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // librdkafka's unittest_murmur2 vectors, taken from the Java client.
        let cases: [(&[u8], u32); 6] = [
            (b"kafka", 0xd067cf64),
            (b"giberish123456789", 0x8f552b0c),
            (b"1234", 0x9fc97b14),
            (b"234", 0xe7c009ca),
            (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424f1c),
            (b"", 0x106e08d9),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn partitions_stay_in_range() {
        for n in 1..20 {
            for key in [&b"a"[..], b"widget-17", b"\xff\x00"] {
                for p in [Partitioner::Consistent, Partitioner::Murmur2] {
                    assert!((0..n).contains(&p.partition(key, n)));
                }
            }
        }
        assert_eq!(Partitioner::Consistent.partition(b"x", 0), 0);
    }
}
