//! Payloads whose every byte is derived from a tag (the seq, or a writer id
//! and counter), so any delivered payload can be checked byte for byte.
#![allow(dead_code)]

/// A 64-bit mixer (splitmix64 finaliser): neighbouring tags give unrelated bytes.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Appends the payload for `tag` of `len` bytes: the tag itself first (when
/// there is room), then bytes derived from (tag, index), then an 8-byte FNV
/// checksum of everything before it (when there is room).
pub(crate) fn fill(tag: u64, len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let mut state = mix(tag);
    for i in 0..len {
        if i % 8 == 0 {
            state = mix(state ^ i as u64);
        }
        out.push((state >> ((i % 8) * 8)) as u8);
    }
    let p = &mut out[start..];
    if len >= 8 {
        p[..8].copy_from_slice(&tag.to_le_bytes());
    }
    if len >= 16 {
        let sum = fnv(&p[..len - 8]);
        p[len - 8..].copy_from_slice(&sum.to_le_bytes());
    }
}

/// The payload for `tag`, as a new vector.
pub(crate) fn payload(tag: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    fill(tag, len, &mut v);
    v
}

/// True if `p` is exactly the payload `fill(tag, p.len())` makes.
pub(crate) fn matches(tag: u64, p: &[u8]) -> bool {
    let mut scratch = Vec::with_capacity(p.len());
    fill(tag, p.len(), &mut scratch);
    scratch == p
}

/// For payloads of 16 bytes or more: the embedded tag, if the embedded
/// checksum is right and every other byte is what the tag makes.
pub(crate) fn self_check(p: &[u8]) -> Option<u64> {
    if p.len() < 16 {
        return None;
    }
    let tag = u64::from_le_bytes(p[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(p[p.len() - 8..].try_into().unwrap());
    (fnv(&p[..p.len() - 8]) == sum && matches(tag, p)).then_some(tag)
}

pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}
