//! Logical replication over the streaming replication protocol: LSNs, the commands of a
//! walsender session (`replication=database`), and the CopyBoth messages of
//! `START_REPLICATION … LOGICAL`: WAL data and keepalives in, standby status updates out.

use bytes::{Buf, Bytes};

use crate::conn::Connection;
use crate::error::PgError;
use crate::sql::ident;

/// Microseconds from 1970-01-01 to 2000-01-01, Postgres's epoch.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// An LSN as Postgres writes it: two hexadecimal halves, `16/B374D848`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Read an LSN written as `16/B374D848`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// A slot as `CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT` made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The first LSN the slot streams from: the snapshot holds everything before it.
    pub consistent_point: u64,
    /// The exported snapshot, importable by `SET TRANSACTION SNAPSHOT` while the creating
    /// session stays idle.
    pub snapshot: String,
}

/// One message of a replication stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WalMessage {
    /// WAL data: one message of the output plugin, starting at `start`.
    Data { start: u64, end: u64, body: Bytes },
    /// The server's keepalive: it has sent everything up to `end`; `reply` asks for a
    /// status update at once.
    Keepalive { end: u64, reply: bool },
}

impl Connection {
    /// Create logical slot `slot` with `pgoutput`, exporting its snapshot. This session
    /// must stay idle while the snapshot is imported elsewhere.
    pub fn create_logical_slot(&mut self, slot: &str) -> Result<CreatedSlot, PgError> {
        let rows = self.query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
            ident(slot)
        ))?;
        let column = |name: &str| {
            let i = rows.columns.iter().position(|c| c == name)?;
            rows.rows.first()?.get(i)?.clone()
        };
        let consistent_point = column("consistent_point")
            .as_deref()
            .and_then(parse_lsn)
            .ok_or_else(|| {
                PgError::Protocol("CREATE_REPLICATION_SLOT gave no consistent point".into())
            })?;
        let snapshot = column("snapshot_name").ok_or_else(|| {
            PgError::Protocol("CREATE_REPLICATION_SLOT exported no snapshot".into())
        })?;
        Ok(CreatedSlot {
            consistent_point,
            snapshot,
        })
    }

    /// Start streaming `slot` from `start` with pgoutput (protocol 1, binary values) for
    /// `publication`.
    pub fn start_logical_replication(
        &mut self,
        slot: &str,
        start: u64,
        publication: &str,
    ) -> Result<(), PgError> {
        let names = publication.replace('\'', "''").replace('"', "\"\"");
        self.copy_both_start(&format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names '\"{names}\"', binary 'true')",
            ident(slot),
            format_lsn(start)
        ))
    }

    /// The next message of the replication stream; none when the server ended it.
    pub fn replication_next(&mut self) -> Result<Option<WalMessage>, PgError> {
        match self.copy_both_next()? {
            Some(data) => parse(data).map(Some),
            None => Ok(None),
        }
    }

    /// The next message of the replication stream if one has arrived, without waiting.
    pub fn replication_try_next(&mut self) -> Result<Option<WalMessage>, PgError> {
        match self.copy_both_try_next()? {
            Some(data) => parse(data).map(Some),
            None => Ok(None),
        }
    }

    /// Tell the server what this client has received (`written`) and made durable
    /// (`flushed`, which becomes the slot's confirmed flush LSN: the server may free the
    /// WAL before it). With `reply`, the server answers with a keepalive at once.
    pub fn send_status(&mut self, written: u64, flushed: u64, reply: bool) -> Result<(), PgError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
            - EPOCH_MICROS;
        let mut m = Vec::with_capacity(34);
        m.push(b'r');
        m.extend_from_slice(&written.to_be_bytes());
        m.extend_from_slice(&flushed.to_be_bytes());
        m.extend_from_slice(&flushed.to_be_bytes());
        m.extend_from_slice(&now.to_be_bytes());
        m.push(u8::from(reply));
        self.copy_both_send(&m)
    }
}

/// One message of the replication stream, from its CopyData payload.
fn parse(mut data: Bytes) -> Result<WalMessage, PgError> {
    let short = || PgError::Protocol("a replication message ends early".into());
    if data.is_empty() {
        return Err(short());
    }
    match data.get_u8() {
        b'w' => {
            if data.remaining() < 24 {
                return Err(short());
            }
            let start = data.get_u64();
            let end = data.get_u64();
            let _sent = data.get_i64();
            Ok(WalMessage::Data {
                start,
                end,
                body: data,
            })
        }
        b'k' => {
            if data.remaining() < 17 {
                return Err(short());
            }
            let end = data.get_u64();
            let _sent = data.get_i64();
            let reply = data.get_u8() == 1;
            Ok(WalMessage::Keepalive { end, reply })
        }
        other => Err(PgError::Protocol(format!(
            "unknown replication message {:?}",
            other as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_back_as_written() {
        for lsn in [0, 1, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16B374D848"), None);
        assert_eq!(parse_lsn("x/1"), None);
    }
}
