//! MySQL/MariaDB column types as Arrow types: what `information_schema.COLUMNS` says of a
//! table's columns ([`describe`]), the Arrow type each is read into ([`MyKind`]), and rows
//! of the text protocol made into a record batch ([`to_batch`]).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::conn::{Connection, MyError, RawRows, WireColumn};

/// The time zone of TIMESTAMP columns, read in a session whose time zone is UTC.
pub const UTC: &str = "+00:00";

/// How a column's values are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MyKind {
    /// TINYINT … BIGINT (MEDIUMINT is 24 bits) and YEAR: `bits` wide, signed or not.
    Int {
        bits: u8,
        unsigned: bool,
    },
    Float,
    Double,
    /// DECIMAL(p,s): Decimal128 up to 38 digits (MySQL allows 65: above 38, the exact text).
    Decimal {
        precision: u8,
        scale: i8,
    },
    DecimalText,
    /// CHAR, VARCHAR, TEXT, JSON (MariaDB keeps JSON as text).
    Text,
    /// ENUM and SET: their labels (an ENUM's with an empty first entry for index 0).
    Labels(Vec<String>),
    /// TIME (a duration of up to ±838 hours), kept as its text with `fsp` fraction digits.
    Time {
        fsp: u8,
    },
    /// BINARY, VARBINARY, BLOB, BIT, GEOMETRY: the bytes.
    Binary,
    Date,
    /// DATETIME: a wall-clock time without a zone.
    DateTime,
    /// TIMESTAMP: an instant, read as UTC.
    Timestamp,
}

impl MyKind {
    /// The kind of a column as `information_schema.COLUMNS` describes it.
    pub fn from_catalog(
        data_type: &str,
        column_type: &str,
        precision: Option<u32>,
        scale: Option<u32>,
    ) -> MyKind {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        let fsp = column_type
            .split_once('(')
            .and_then(|(_, r)| r.trim_end_matches(')').parse::<u8>().ok())
            .unwrap_or(0);
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" => MyKind::Int { bits: 8, unsigned },
            "smallint" => MyKind::Int { bits: 16, unsigned },
            "mediumint" => MyKind::Int { bits: 24, unsigned },
            "int" | "integer" => MyKind::Int { bits: 32, unsigned },
            "bigint" => MyKind::Int { bits: 64, unsigned },
            "year" => MyKind::Int {
                bits: 16,
                unsigned: false,
            },
            "float" => MyKind::Float,
            "double" | "real" => MyKind::Double,
            "decimal" | "numeric" => match (precision, scale) {
                (Some(p), Some(s)) if p <= 38 => MyKind::Decimal {
                    precision: p.max(1) as u8,
                    scale: s as i8,
                },
                _ => MyKind::DecimalText,
            },
            "date" => MyKind::Date,
            "time" => MyKind::Time { fsp },
            "enum" | "set" => MyKind::Labels(labels(column_type)),
            "datetime" => MyKind::DateTime,
            "timestamp" => MyKind::Timestamp,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit"
            | "geometry" | "point" | "linestring" | "polygon" => MyKind::Binary,
            _ => MyKind::Text,
        }
    }

    /// The kind of a result column as the protocol describes it (for query streams, whose
    /// columns the catalog does not list). ENUM and SET values come as their labels.
    pub fn from_wire(c: &WireColumn) -> MyKind {
        const UNSIGNED: u16 = 32;
        const BINARY_CHARSET: u16 = 63;
        let unsigned = c.flags & UNSIGNED != 0;
        let binary = c.charset == BINARY_CHARSET;
        match c.type_code {
            1 => MyKind::Int { bits: 8, unsigned },
            2 => MyKind::Int { bits: 16, unsigned },
            9 => MyKind::Int { bits: 24, unsigned },
            3 => MyKind::Int { bits: 32, unsigned },
            8 => MyKind::Int { bits: 64, unsigned },
            13 => MyKind::Int {
                bits: 16,
                unsigned: false,
            },
            4 => MyKind::Float,
            5 => MyKind::Double,
            0 | 246 => {
                let scale = u32::from(c.decimals);
                let precision = c
                    .length
                    .saturating_sub(u32::from(scale > 0))
                    .saturating_sub(u32::from(!unsigned));
                if (1..=38).contains(&precision) {
                    MyKind::Decimal {
                        precision: precision as u8,
                        scale: scale as i8,
                    }
                } else {
                    MyKind::DecimalText
                }
            }
            10 | 14 => MyKind::Date,
            11 => MyKind::Time {
                fsp: c.decimals.min(6),
            },
            12 => MyKind::DateTime,
            7 => MyKind::Timestamp,
            16 | 255 => MyKind::Binary,
            249..=252 | 253 | 254 | 15 if binary => MyKind::Binary,
            _ => MyKind::Text,
        }
    }

    /// The Arrow type values of this kind are read into.
    pub fn arrow_type(&self) -> DataType {
        match self {
            MyKind::Int { bits, unsigned } => match (bits, unsigned) {
                (8, false) => DataType::Int8,
                (8, true) => DataType::UInt8,
                (16, false) => DataType::Int16,
                (16, true) => DataType::UInt16,
                (24 | 32, false) => DataType::Int32,
                (24 | 32, true) => DataType::UInt32,
                (_, false) => DataType::Int64,
                (_, true) => DataType::UInt64,
            },
            MyKind::Float => DataType::Float32,
            MyKind::Double => DataType::Float64,
            MyKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            MyKind::DecimalText | MyKind::Text | MyKind::Labels(_) | MyKind::Time { .. } => {
                DataType::Utf8
            }
            MyKind::Binary => DataType::Binary,
            MyKind::Date => DataType::Date32,
            MyKind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        }
    }
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyColumn {
    pub name: String,
    pub kind: MyKind,
    /// The type as the catalog writes it (`int(10) unsigned`), for messages.
    pub column_type: String,
}

/// The columns of `schema.table`, in order; empty when there is no such table.
pub fn describe(
    conn: &mut Connection,
    schema: &str,
    table: &str,
) -> Result<Vec<MyColumn>, MyError> {
    let rows = conn.query(&format!(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
         ORDER BY ORDINAL_POSITION",
        literal(schema),
        literal(table)
    ))?;
    Ok(rows
        .rows
        .into_iter()
        .map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let number = |i: usize| get(i).parse::<u32>().ok();
            MyColumn {
                kind: MyKind::from_catalog(&get(1), &get(2), number(3), number(4)),
                name: get(0),
                column_type: get(2),
            }
        })
        .collect())
}

/// The schema of `columns`, every field nullable.
pub fn schema(columns: &[MyColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.kind.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Rows of the text protocol (`rows`, in `columns`' order) as a batch of
/// [`schema`]`(columns)`. MariaDB's zero dates (`0000-00-00`), which no calendar holds,
/// are NULL; any other value that does not parse as its column's type is an error naming
/// the column and the row.
pub fn to_batch(columns: &[MyColumn], rows: &RawRows) -> Result<RecordBatch, String> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    for (i, c) in columns.iter().enumerate() {
        let values = rows.rows.iter().map(|r| r.get(i).cloned().flatten());
        let array: ArrayRef = match c.kind {
            MyKind::Binary => Arc::new(BinaryArray::from_iter(values)),
            _ => {
                let texts = values.map(|v| {
                    let text = v.map(|b| String::from_utf8_lossy(&b).into_owned());
                    match (&c.kind, text) {
                        (MyKind::Date | MyKind::DateTime | MyKind::Timestamp, Some(t))
                            if t.starts_with("0000-00-00") =>
                        {
                            None
                        }
                        (_, t) => t,
                    }
                });
                let text: ArrayRef = Arc::new(StringArray::from_iter(texts));
                cast_with_options(&text, &c.kind.arrow_type(), &strict).map_err(|e| {
                    let row = first_bad_row(&text, &c.kind)
                        .map_or(String::new(), |r| format!(" (row {})", r + 1));
                    format!("column `{}` ({}){row}: {e}", c.name, c.column_type)
                })?
            }
        };
        arrays.push(array);
    }
    RecordBatch::try_new(schema(columns), arrays).map_err(|e| e.to_string())
}

/// The first row whose text does not cast to `kind`'s type.
fn first_bad_row(text: &ArrayRef, kind: &MyKind) -> Option<usize> {
    let lenient = cast_with_options(text, &kind.arrow_type(), &CastOptions::default()).ok()?;
    (0..text.len()).find(|i| !text.is_null(*i) && lenient.is_null(*i))
}

/// A value of the binary log (as `mysql_common` decodes it) in the text form the text
/// protocol gives for a column of `kind`, so that both read through [`to_batch`]. The log
/// does not say whether an integer column is unsigned (MariaDB logs no such metadata by
/// default): the column's kind does, and a negative value is taken modulo its width.
/// ENUM and SET values are indices and bit sets in the log; the column's labels turn them
/// back into names.
pub fn binlog_text(kind: &MyKind, value: &mysql_common::value::Value) -> Option<Vec<u8>> {
    use mysql_common::value::Value;
    Some(match value {
        Value::NULL => return None,
        // TIMESTAMP(n) is logged as seconds since 1970 with a fraction.
        Value::Bytes(b) if *kind == MyKind::Timestamp => match unix_text(b) {
            Some(t) => t.into_bytes(),
            None => b.clone(),
        },
        Value::Bytes(b) => match kind {
            MyKind::Labels(labels) => {
                let n = b
                    .iter()
                    .rev()
                    .fold(0u64, |n, byte| n << 8 | u64::from(*byte));
                set_or_enum(labels, n).into_bytes()
            }
            _ => b.clone(),
        },
        Value::Int(v) if *kind == MyKind::Timestamp => {
            unix_text(v.to_string().as_bytes())?.into_bytes()
        }
        Value::Int(v) => match kind {
            MyKind::Int {
                bits,
                unsigned: true,
            } if *v < 0 => {
                let mask = if *bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                ((*v as u64) & mask).to_string().into_bytes()
            }
            MyKind::Labels(labels) => set_or_enum(labels, *v as u64).into_bytes(),
            _ => v.to_string().into_bytes(),
        },
        Value::UInt(v) => v.to_string().into_bytes(),
        Value::Float(v) => v.to_string().into_bytes(),
        Value::Double(v) => v.to_string().into_bytes(),
        Value::Date(y, m, d, h, mi, sec, us) => match kind {
            MyKind::Date => format!("{y:04}-{m:02}-{d:02}").into_bytes(),
            _ => format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{sec:02}.{us:06}").into_bytes(),
        },
        Value::Time(negative, days, h, mi, sec, us) => {
            let mut t = format!(
                "{}{:02}:{mi:02}:{sec:02}",
                if *negative { "-" } else { "" },
                u32::from(*h) + days * 24
            );
            if let MyKind::Time { fsp } = kind {
                if *fsp > 0 {
                    let digits = format!("{us:06}");
                    t.push('.');
                    t.push_str(&digits[..(*fsp as usize).min(6)]);
                }
            }
            t.into_bytes()
        }
    })
}

/// `seconds[.fraction]` since 1970 as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC).
fn unix_text(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: u32 = format!("{frac:0<6}").parse().ok()?;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{micros:06}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    ))
}

/// The label of ENUM index `n` (1-based), or the labels of SET bits `n`, comma-joined.
fn set_or_enum(labels: &[String], n: u64) -> String {
    // An ENUM's labels come with a leading empty entry standing for index 0.
    if labels.first().is_some_and(String::is_empty) {
        return labels.get(n as usize).cloned().unwrap_or_default();
    }
    labels
        .iter()
        .enumerate()
        .filter(|(i, _)| n & (1 << i) != 0)
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels of an ENUM or SET column type (`enum('a','b')`): for an ENUM with an empty
/// first entry (index 0 is the empty value), for a SET as they are; empty for other types.
pub fn labels(column_type: &str) -> Vec<String> {
    let lower = column_type.to_ascii_lowercase();
    let (is_enum, rest) = if let Some(r) = lower.strip_prefix("enum(") {
        (true, &column_type[5..5 + r.len()])
    } else if let Some(r) = lower.strip_prefix("set(") {
        (false, &column_type[4..4 + r.len()])
    } else {
        return Vec::new();
    };
    let mut out = if is_enum {
        vec![String::new()]
    } else {
        Vec::new()
    };
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    label.push('\'');
                } else {
                    break;
                }
            } else {
                label.push(c);
            }
        }
        out.push(label);
    }
    out
}

/// `value` as a quoted SQL string.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnectParams;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Date32Type, Decimal128Type, Int32Type, Int8Type, TimestampMicrosecondType, UInt64Type,
    };

    #[test]
    fn catalog_types_map_to_arrow_types() {
        let k = |d: &str, c: &str| MyKind::from_catalog(d, c, Some(10), Some(2)).arrow_type();
        assert_eq!(k("int", "int(11)"), DataType::Int32);
        assert_eq!(k("bigint", "bigint(20) unsigned"), DataType::UInt64);
        assert_eq!(k("decimal", "decimal(10,2)"), DataType::Decimal128(10, 2));
        assert_eq!(
            MyKind::from_catalog("decimal", "decimal(65,4)", Some(65), Some(4)).arrow_type(),
            DataType::Utf8
        );
        assert_eq!(k("varchar", "varchar(20)"), DataType::Utf8);
        assert_eq!(k("longblob", "longblob"), DataType::Binary);
        assert_eq!(
            k("timestamp", "timestamp(6)"),
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        );
    }

    #[test]
    fn a_table_of_every_common_type_reads_into_arrow_with_nulls() {
        let mut c = Connection::connect(&ConnectParams {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: None,
            database: None,
        })
        .expect("MariaDB answers on 127.0.0.1:3306; run scripts/mariadb-setup");
        c.query("SET time_zone = '+00:00'").unwrap();
        let db = format!("ingest_types_{}", std::process::id());
        c.query(&format!("CREATE DATABASE {db}")).unwrap();
        c.query(&format!(
            "CREATE TABLE {db}.t (id int PRIMARY KEY, small tinyint, big bigint unsigned, \
             price decimal(10,2), name varchar(20), body blob, day date, at datetime(6), \
             stamp timestamp(6) NULL)"
        ))
        .unwrap();
        c.query(&format!(
            "INSERT INTO {db}.t VALUES \
             (1, -5, 18446744073709551615, 12.34, 'tëxt', x'00ff', '2026-12-04', '2026-12-04 07:59:51.123456', '2026-12-04 07:59:51.5'), \
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ))
        .unwrap();
        let columns = describe(&mut c, &db, "t").unwrap();
        let rows = c
            .query_raw(&format!("SELECT * FROM {db}.t ORDER BY id"))
            .unwrap();
        c.query(&format!("DROP DATABASE {db}")).unwrap();
        let batch = to_batch(&columns, &rows).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(0), 1);
        assert_eq!(batch.column(1).as_primitive::<Int8Type>().value(0), -5);
        assert_eq!(
            batch.column(2).as_primitive::<UInt64Type>().value(0),
            u64::MAX
        );
        assert_eq!(
            batch.column(3).as_primitive::<Decimal128Type>().value(0),
            1234
        );
        assert_eq!(batch.column(4).as_string::<i32>().value(0), "tëxt");
        assert_eq!(batch.column(5).as_binary::<i32>().value(0), [0x00, 0xff]);
        assert_eq!(
            batch.column(6).as_primitive::<Date32Type>().value(0),
            20_791
        );
        assert_eq!(
            batch
                .column(7)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_796_371_191_123_456
        );
        assert_eq!(
            batch
                .column(8)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_796_371_191_500_000
        );
        for i in 1..9 {
            assert!(batch.column(i).is_null(1), "column {i} of the NULL row");
        }
    }

    #[test]
    fn unix_seconds_become_utc_wall_clock_text() {
        assert_eq!(
            unix_text(b"0").as_deref(),
            Some("1970-01-01 00:00:00.000000")
        );
        assert_eq!(
            unix_text(b"1796371191.5").as_deref(),
            Some("2026-12-04 07:59:51.500000")
        );
        assert_eq!(
            unix_text(b"951782400").as_deref(),
            Some("2000-02-29 00:00:00.000000")
        );
        assert_eq!(unix_text(b"x"), None);
    }

    #[test]
    fn enum_and_set_labels_are_read_from_the_column_type() {
        assert_eq!(labels("enum('a','it''s')"), ["", "a", "it's"]);
        assert_eq!(labels("set('x','y','z')"), ["x", "y", "z"]);
        assert!(labels("int(11)").is_empty());
        assert_eq!(set_or_enum(&labels("enum('a','b')"), 2), "b");
        assert_eq!(set_or_enum(&labels("set('x','y','z')"), 0b101), "x,z");
    }

    /// Rows read from the binary log (through `mysql_common`) and by a SELECT make the
    /// same batch.
    #[test]
    fn the_binary_log_and_a_select_read_every_common_type_alike() {
        use crate::binlog::kind;
        use mysql_common::binlog::consts::BinlogVersion;
        use mysql_common::binlog::events::EventData;
        use mysql_common::binlog::value::BinlogValue;
        use mysql_common::binlog::EventStreamReader;
        use std::time::{Duration, Instant};

        let params = ConnectParams {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: None,
            database: None,
        };
        let mut c =
            Connection::connect(&params).expect("MariaDB answers; run scripts/mariadb-setup");
        c.query("SET time_zone = '+00:00'").unwrap();
        let db = format!("ingest_binlog_types_{}", std::process::id());
        c.query(&format!("CREATE DATABASE {db}")).unwrap();
        c.query(&format!(
            "CREATE TABLE {db}.t (id int PRIMARY KEY, small tinyint, usmall tinyint unsigned, \
             medium mediumint unsigned, big bigint unsigned, price decimal(10,2), ratio double, \
             name varchar(20), body blob, day date, at datetime(6), stamp timestamp(6) NULL, \
             span time(3), colour enum('red','green'), tags set('a','b','c'))"
        ))
        .unwrap();
        let from = c.log_position().unwrap();
        let mut replica = Connection::connect(&params).unwrap();
        let stream = replica
            .start_binlog(
                4_100_000 + std::process::id() % 100_000,
                &from,
                Duration::from_millis(200),
            )
            .unwrap();
        c.query(&format!(
            "INSERT INTO {db}.t VALUES \
             (1, -5, 255, 16777215, 18446744073709551615, -12.34, 0.5, 'tëxt', x'00ff', '2026-12-04', \
              '2026-12-04 07:59:51.123456', '2026-12-04 07:59:51.5', '-838:59:59.000', 'green', 'a,c'), \
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ))
        .unwrap();
        let columns = describe(&mut c, &db, "t").unwrap();
        let selected = to_batch(
            &columns,
            &c.query_raw(&format!("SELECT * FROM {db}.t ORDER BY id"))
                .unwrap(),
        )
        .unwrap();
        // A query's columns, described by the protocol, have the kinds the catalog gives
        // (ENUM and SET come as their labels' text).
        let wire = c
            .query_raw(&format!("SELECT * FROM {db}.t LIMIT 0"))
            .unwrap()
            .wire;
        let from_wire: Vec<MyKind> = wire.iter().map(MyKind::from_wire).collect();
        let from_catalog: Vec<MyKind> = columns
            .iter()
            .map(|c| match c.kind {
                MyKind::Labels(_) => MyKind::Text,
                ref k => k.clone(),
            })
            .collect();
        assert_eq!(from_wire, from_catalog);

        let mut parser = EventStreamReader::new(BinlogVersion::Version4);
        let mut logged = RawRows::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while logged.rows.len() < 2 && Instant::now() < deadline {
            let Some(event) = stream.try_next(&mut replica).unwrap() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let Some(parsed) = parser.read(&event.raw[..]).unwrap() else {
                continue;
            };
            if event.kind != kind::WRITE_ROWS_V1 && event.kind != kind::WRITE_ROWS {
                continue;
            }
            let Some(EventData::RowsEvent(rows)) = parsed.read_data().unwrap() else {
                continue;
            };
            let tme = parser.get_tme(rows.table_id()).unwrap();
            if tme.database_name() != db {
                continue;
            }
            for (_, after) in crate::binlog::rows_of(event.kind, event.body(), tme).unwrap() {
                let after = after.unwrap().unwrap();
                logged.rows.push(
                    after
                        .iter()
                        .enumerate()
                        .map(|(i, v)| match v {
                            BinlogValue::Value(v) => binlog_text(&columns[i].kind, v),
                            other => panic!("unexpected {other:?}"),
                        })
                        .collect(),
                );
            }
        }
        c.query(&format!("DROP DATABASE {db}")).unwrap();
        let from_log = to_batch(&columns, &logged).unwrap();
        assert_eq!(from_log, selected);
    }

    #[test]
    fn a_value_that_does_not_parse_names_its_column_and_row() {
        let columns = vec![MyColumn {
            name: "n".into(),
            kind: MyKind::Int {
                bits: 32,
                unsigned: false,
            },
            column_type: "int(11)".into(),
        }];
        let rows = RawRows {
            columns: vec!["n".into()],
            rows: vec![vec![Some(b"1".to_vec())], vec![Some(b"x".to_vec())]],
            ..RawRows::default()
        };
        let e = to_batch(&columns, &rows).unwrap_err();
        assert!(e.contains("column `n` (int(11)) (row 2)"), "{e}");
    }
}
