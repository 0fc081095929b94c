//! A consumer group's committed offsets, read and written by a reader that assigns itself
//! partitions (the way stream processors that keep offsets in their own checkpoints use a
//! group): it never joins the group, so a restart waits for no session to expire and no
//! rebalance moves partitions in the middle of an epoch. Commits go as generation -1 with
//! no member id, which brokers accept for a group with no active members; Kafka's tools then
//! show the group's offsets and lag.

use crate::client::{Client, OFFSET_COMMIT, OFFSET_FETCH};
use crate::wire::{Decoder, Encoder};
use crate::{check, Result};

/// Commit `offsets` (partition, next offset to read) of `topic` for `group`.
pub fn commit(client: &mut Client, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<()> {
    let coordinator = client.find_coordinator(group)?;
    let mut e = Encoder::default();
    e.string(group)
        .i32(-1)
        .string("")
        .i64(-1)
        .count(1)
        .string(topic)
        .count(offsets.len());
    for (p, offset) in offsets {
        e.i32(*p).i64(*offset).nullable_string(None);
    }
    let body = client.coordinator_call(coordinator, OFFSET_COMMIT, &e.buf)?;
    let mut d = Decoder::new(&body, "OffsetCommit");
    for _ in 0..d.count()? {
        let name = d.string()?;
        for _ in 0..d.count()? {
            let p = d.i32()?;
            let error = d.i16()?;
            check("OffsetCommit", error, || {
                format!("group `{group}` topic `{name}` partition {p}")
            })?;
        }
    }
    Ok(())
}

/// The offsets `group` committed for `partitions` of `topic` (`None` where it has none).
pub fn committed(
    client: &mut Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, Option<i64>)>> {
    let coordinator = client.find_coordinator(group)?;
    let mut e = Encoder::default();
    e.string(group)
        .count(1)
        .string(topic)
        .count(partitions.len());
    for p in partitions {
        e.i32(*p);
    }
    let body = client.coordinator_call(coordinator, OFFSET_FETCH, &e.buf)?;
    let mut d = Decoder::new(&body, "OffsetFetch");
    let _throttle = d.i32()?;
    let mut out = Vec::new();
    for _ in 0..d.count()? {
        let name = d.string()?;
        for _ in 0..d.count()? {
            let p = d.i32()?;
            let offset = d.i64()?;
            let _metadata = d.nullable_string()?;
            let error = d.i16()?;
            check("OffsetFetch", error, || {
                format!("group `{group}` topic `{name}` partition {p}")
            })?;
            out.push((p, (offset >= 0).then_some(offset)));
        }
    }
    let error = d.i16()?;
    check("OffsetFetch", error, || format!("group `{group}`"))?;
    out.sort();
    Ok(out)
}
