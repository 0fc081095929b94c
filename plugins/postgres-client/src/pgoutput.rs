//! The messages of `pgoutput`, Postgres's logical decoding output plugin (protocol
//! version 1): transaction boundaries, relation descriptions and row changes, as they
//! arrive in the WAL data of a logical replication stream. Values are kept as the bytes
//! the server sent (binary when the stream was started with `binary 'true'`).

use bytes::{Buf, Bytes};

use crate::error::PgError;

/// Microseconds from 1970-01-01 to 2000-01-01, Postgres's epoch.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A transaction begins; its changes follow, then its [`Message::Commit`].
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: u64,
        /// Commit time, µs since 1970-01-01 UTC.
        commit_ts: i64,
        xid: u32,
    },
    /// The transaction ends.
    Commit {
        commit_lsn: u64,
        /// The end of the transaction in the WAL: where a stream resumes after it.
        end_lsn: u64,
        commit_ts: i64,
    },
    /// The shape of a table, sent before its first change in a session and after it
    /// changed.
    Relation(Relation),
    /// A row was inserted.
    Insert { relation: u32, new: Tuple },
    /// A row was updated; `old` is the key (`K`) or the whole row (`O`, REPLICA IDENTITY
    /// FULL) when the server sent it.
    Update {
        relation: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    /// A row was deleted; `old` holds its key, or the whole row under REPLICA IDENTITY
    /// FULL.
    Delete {
        relation: u32,
        old: (OldKind, Tuple),
    },
    /// Tables were truncated.
    Truncate { relations: Vec<u32>, cascade: bool },
    /// Anything else (origin, type, logical message): nothing a row stream needs.
    Other(u8),
}

/// What an old tuple of an update or delete holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// The replica identity's columns only (others are null).
    Key,
    /// The whole old row.
    Full,
}

/// A table as a Relation message describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` an index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    /// Part of the replica identity.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// The values of one row, in the relation's column order.
pub type Tuple = Vec<Value>;

/// One value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch; the server does not send it.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

/// Decode one pgoutput message from WAL data.
pub fn decode(mut data: Bytes) -> Result<Message, PgError> {
    let tag = take_u8(&mut data)?;
    Ok(match tag {
        b'B' => Message::Begin {
            final_lsn: take_u64(&mut data)?,
            commit_ts: pg_time(take_i64(&mut data)?),
            xid: take_u32(&mut data)?,
        },
        b'C' => {
            let _flags = take_u8(&mut data)?;
            Message::Commit {
                commit_lsn: take_u64(&mut data)?,
                end_lsn: take_u64(&mut data)?,
                commit_ts: pg_time(take_i64(&mut data)?),
            }
        }
        b'R' => {
            let id = take_u32(&mut data)?;
            let namespace = take_string(&mut data)?;
            let name = take_string(&mut data)?;
            let replica_identity = take_u8(&mut data)?;
            let count = take_u16(&mut data)?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let flags = take_u8(&mut data)?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: take_string(&mut data)?,
                    type_oid: take_u32(&mut data)?,
                    type_modifier: take_u32(&mut data)? as i32,
                });
            }
            Message::Relation(Relation {
                id,
                namespace: if namespace.is_empty() {
                    "pg_catalog".into()
                } else {
                    namespace
                },
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = take_u32(&mut data)?;
            expect(&mut data, b'N', "an insert")?;
            Message::Insert {
                relation,
                new: take_tuple(&mut data)?,
            }
        }
        b'U' => {
            let relation = take_u32(&mut data)?;
            let mut old = None;
            let mut kind = take_u8(&mut data)?;
            if kind == b'K' || kind == b'O' {
                let which = if kind == b'K' {
                    OldKind::Key
                } else {
                    OldKind::Full
                };
                old = Some((which, take_tuple(&mut data)?));
                kind = take_u8(&mut data)?;
            }
            if kind != b'N' {
                return Err(malformed("an update has no new tuple"));
            }
            Message::Update {
                relation,
                old,
                new: take_tuple(&mut data)?,
            }
        }
        b'D' => {
            let relation = take_u32(&mut data)?;
            let which = match take_u8(&mut data)? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                _ => return Err(malformed("a delete has no old tuple")),
            };
            Message::Delete {
                relation,
                old: (which, take_tuple(&mut data)?),
            }
        }
        b'T' => {
            let count = take_u32(&mut data)?;
            let options = take_u8(&mut data)?;
            let mut relations = Vec::with_capacity(count as usize);
            for _ in 0..count {
                relations.push(take_u32(&mut data)?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 == 1,
            }
        }
        other => Message::Other(other),
    })
}

/// Microseconds since 2000-01-01 as microseconds since 1970-01-01.
fn pg_time(t: i64) -> i64 {
    t.saturating_add(EPOCH_MICROS)
}

fn take_tuple(data: &mut Bytes) -> Result<Tuple, PgError> {
    let count = take_u16(data)?;
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        values.push(match take_u8(data)? {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            kind @ (b't' | b'b') => {
                let len = take_u32(data)? as usize;
                if data.remaining() < len {
                    return Err(malformed("a value runs past its message"));
                }
                let bytes = data.split_to(len);
                if kind == b't' {
                    Value::Text(bytes)
                } else {
                    Value::Binary(bytes)
                }
            }
            other => {
                return Err(malformed(&format!(
                    "a value has the unknown kind {:?}",
                    other as char
                )))
            }
        });
    }
    Ok(values)
}

fn expect(data: &mut Bytes, tag: u8, what: &str) -> Result<(), PgError> {
    if take_u8(data)? == tag {
        Ok(())
    } else {
        Err(malformed(&format!(
            "{what} lacks its `{}` tuple",
            tag as char
        )))
    }
}

fn take_string(data: &mut Bytes) -> Result<String, PgError> {
    let end = data
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| malformed("a name is not terminated"))?;
    let s = String::from_utf8_lossy(&data[..end]).into_owned();
    data.advance(end + 1);
    Ok(s)
}

fn need(data: &Bytes, n: usize) -> Result<(), PgError> {
    if data.remaining() < n {
        Err(malformed("a message ends early"))
    } else {
        Ok(())
    }
}

fn take_u8(data: &mut Bytes) -> Result<u8, PgError> {
    need(data, 1)?;
    Ok(data.get_u8())
}

fn take_u16(data: &mut Bytes) -> Result<u16, PgError> {
    need(data, 2)?;
    Ok(data.get_u16())
}

fn take_u32(data: &mut Bytes) -> Result<u32, PgError> {
    need(data, 4)?;
    Ok(data.get_u32())
}

fn take_u64(data: &mut Bytes) -> Result<u64, PgError> {
    need(data, 8)?;
    Ok(data.get_u64())
}

fn take_i64(data: &mut Bytes) -> Result<i64, PgError> {
    need(data, 8)?;
    Ok(data.get_i64())
}

fn malformed(what: &str) -> PgError {
    PgError::Protocol(format!("malformed pgoutput message: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_bytes(out: &mut Vec<u8>, values: &[Option<&[u8]>]) {
        out.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                None => out.push(b'n'),
                Some(b) => {
                    out.push(b'b');
                    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
    }

    #[test]
    fn a_begin_and_a_commit_carry_their_lsns_and_unix_times() {
        let mut b = vec![b'B'];
        b.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        b.extend_from_slice(&1_000_000i64.to_be_bytes());
        b.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            decode(Bytes::from(b)).unwrap(),
            Message::Begin {
                final_lsn: 0x1_0000_0010,
                commit_ts: EPOCH_MICROS + 1_000_000,
                xid: 7
            }
        );
        let mut c = vec![b'C', 0];
        c.extend_from_slice(&5u64.to_be_bytes());
        c.extend_from_slice(&9u64.to_be_bytes());
        c.extend_from_slice(&0i64.to_be_bytes());
        assert_eq!(
            decode(Bytes::from(c)).unwrap(),
            Message::Commit {
                commit_lsn: 5,
                end_lsn: 9,
                commit_ts: EPOCH_MICROS
            }
        );
    }

    #[test]
    fn a_relation_names_its_columns_and_key() {
        let mut r = vec![b'R'];
        r.extend_from_slice(&16384u32.to_be_bytes());
        r.extend_from_slice(b"public\0orders\0f");
        r.extend_from_slice(&2u16.to_be_bytes());
        r.push(1);
        r.extend_from_slice(b"id\0");
        r.extend_from_slice(&20u32.to_be_bytes());
        r.extend_from_slice(&(-1i32).to_be_bytes());
        r.push(0);
        r.extend_from_slice(b"note\0");
        r.extend_from_slice(&25u32.to_be_bytes());
        r.extend_from_slice(&(-1i32).to_be_bytes());
        let Message::Relation(rel) = decode(Bytes::from(r)).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str()),
            ("public", "orders")
        );
        assert_eq!(rel.replica_identity, b'f');
        assert!(rel.columns[0].key && !rel.columns[1].key);
        assert_eq!(rel.columns[1].type_oid, 25);
        assert_eq!(rel.columns[1].type_modifier, -1);
    }

    #[test]
    fn updates_and_deletes_keep_their_old_tuples() {
        let mut u = vec![b'U'];
        u.extend_from_slice(&1u32.to_be_bytes());
        u.push(b'O');
        tuple_bytes(&mut u, &[Some(b"a"), None]);
        u.push(b'N');
        tuple_bytes(&mut u, &[Some(b"a"), Some(b"b")]);
        let Message::Update { old, new, .. } = decode(Bytes::from(u)).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(old.unwrap().0, OldKind::Full);
        assert_eq!(new[1], Value::Binary(Bytes::from_static(b"b")));

        let mut d = vec![b'D'];
        d.extend_from_slice(&1u32.to_be_bytes());
        d.push(b'K');
        tuple_bytes(&mut d, &[Some(b"a"), None]);
        let Message::Delete { old, .. } = decode(Bytes::from(d)).unwrap() else {
            panic!("not a delete")
        };
        assert_eq!(
            old,
            (
                OldKind::Key,
                vec![Value::Binary(Bytes::from_static(b"a")), Value::Null]
            )
        );
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let mut i = vec![b'I'];
        i.extend_from_slice(&1u32.to_be_bytes());
        i.push(b'N');
        i.extend_from_slice(&1u16.to_be_bytes());
        i.push(b'b');
        i.extend_from_slice(&100u32.to_be_bytes());
        i.extend_from_slice(b"short");
        for cut in 0..i.len() {
            assert!(decode(Bytes::copy_from_slice(&i[..cut])).is_err());
        }
        assert!(decode(Bytes::from(i)).is_err());
    }
}
