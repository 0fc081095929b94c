//! Where files go: the published layout, the staging area, and Hive-style partitioning.
//!
//! ```text
//! <path>/<stream>/[<col>_<day|month|year>=<value>/ | <col>=<value>/]part-<epoch:010>-<seq:04>.<ext>
//! <path>/.staging/<stream>/current/<seq:04>.<ext>       rows of the open epoch
//! <path>/.staging/<stream>/epoch-<E>/<seq:04>.<ext>     epoch E, prepared, not yet published
//! <path>/.staging/<stream>/epoch-<E>/_manifest.json     what commit(E) publishes where
//! <path>/.fences/<stream>/<holder>/<claim:020>           claims of one split (scale-out)
//! ```
//!
//! Every path segment that comes from data or from a stream name is escaped
//! ([`escape_segment`]) so that no value can leave its directory, hide itself, or reach the
//! staging area. All paths here are relative to `<path>`, with `/` separators.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Schema, TimeUnit};
use ingest_sdk::text::{can_display, to_text};
pub use ingest_sdk::text::{text_safe, text_safe_type};
use ingest_sdk::{Error, Result};

use crate::config::{Granularity, Partitioning};

/// The directory value of a null or empty partition value (Hive's convention).
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The staging area's directory under `<path>`.
pub const STAGING_DIR: &str = ".staging";

/// Where writers under scale-out record their claims, under `<path>`.
pub const FENCES_DIR: &str = ".fences";

/// The manifest's file name inside a prepared epoch's staging directory.
pub const MANIFEST: &str = "_manifest.json";

/// One directory or file name built from `value` that stays in its parent: `/`, `\`, `=`,
/// `%`, control characters and the other characters Hive escapes become `%XX`; a leading `.`
/// is escaped too, so `.`, `..` and hidden names (like `.staging`) cannot appear. An empty
/// value becomes [`DEFAULT_PARTITION`].
pub fn escape_segment(value: &str) -> String {
    if value.is_empty() {
        return DEFAULT_PARTITION.to_string();
    }
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.char_indices() {
        let escape = matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '{'
                | '['
                | ']'
                | '^'
                | '<'
                | '>'
                | '|'
        ) || c.is_control()
            || (i == 0 && c == '.');
        if escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Paths of one stream, relative to `<path>`.
#[derive(Debug, Clone)]
pub struct StreamLayout {
    /// `<stream>`, escaped.
    stream_dir: String,
    /// `.staging/<stream>`, escaped.
    staging: String,
    /// `current`, or `current-<tag>` for a writer with a writer tag.
    current: String,
}

impl StreamLayout {
    pub fn new(stream: &str) -> Self {
        let stream_dir = escape_segment(stream);
        StreamLayout {
            staging: format!("{STAGING_DIR}/{stream_dir}"),
            stream_dir,
            current: "current".into(),
        }
    }

    /// The layout of a writer that shares the stream with others (scale-out): its open
    /// epoch is staged in `current-<tag>`, apart from theirs.
    pub fn with_writer_tag(mut self, tag: Option<&str>) -> Self {
        self.current = match tag {
            Some(tag) => format!("current-{}", escape_segment(tag)),
            None => "current".into(),
        };
        self
    }

    /// `.staging/<stream>`: the parent of `current` and of every `epoch-<E>`.
    pub fn staging(&self) -> &str {
        &self.staging
    }

    /// `.staging/<stream>/current` (or `current-<tag>`): the files of the open epoch.
    pub fn current(&self) -> String {
        format!("{}/{}", self.staging, self.current)
    }

    /// `.fences/<stream>/<holder>`: one empty file per claim of one split under scale-out,
    /// named by the claim's number; the highest is the claim that holds it. Kept apart
    /// from the staging area, which is empty when nothing is pending.
    pub fn fences(&self, holder: &str) -> String {
        format!(
            "{FENCES_DIR}/{}/{}",
            self.stream_dir,
            escape_segment(holder)
        )
    }

    /// `.staging/<stream>/epoch-<E>`: a prepared epoch.
    pub fn epoch(&self, epoch: u64) -> String {
        format!("{}/epoch-{epoch}", self.staging)
    }

    /// The name of a staged file inside `current` or `epoch-<E>`.
    pub fn staged_name(seq: u32, ext: &str) -> String {
        format!("{seq:04}.{ext}")
    }

    /// Where a staged file is published.
    pub fn published(&self, partition: Option<&str>, epoch: u64, seq: u32, ext: &str) -> String {
        match partition {
            Some(dir) => format!("{}/{dir}/part-{epoch:010}-{seq:04}.{ext}", self.stream_dir),
            None => format!("{}/part-{epoch:010}-{seq:04}.{ext}", self.stream_dir),
        }
    }
}

/// How the partition column's values become partition values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Days since 1970-01-01 from a Date32.
    Date32,
    /// Milliseconds since the epoch from a Date64.
    Date64,
    /// A timestamp: its UTC date (naive timestamps: their own date).
    Timestamp(TimeUnit),
    /// Text holding an ISO 8601 date (`YYYY-MM-DD...`).
    IsoText,
    /// The value rendered as text.
    Value,
}

/// Splits batches by the partition column into Hive-style directories.
#[derive(Debug, Clone)]
pub struct Partitioner {
    index: usize,
    /// `<col>_<granularity>=` or `<col>=`, escaped.
    prefix: String,
    granularity: Granularity,
    source: Source,
}

/// Rows of one batch that go to one partition directory, in first-seen order.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    /// The directory, e.g. `created_at_day=2024-01-05`.
    pub dir: String,
    /// Row indices into the batch.
    pub rows: Vec<u32>,
}

impl Partitioner {
    /// Resolve `spec` against the stream's schema. Fails with `invalid-config` when the
    /// column is missing, or cannot be partitioned by date (or at all) with the granularity.
    pub fn new(spec: &Partitioning, schema: &Schema, stream: &str) -> Result<Self> {
        let column = &spec.column;
        let Ok(index) = schema.index_of(column) else {
            let have: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("`{}`", f.name()))
                .collect();
            return Err(Error::config(format!(
                "file sink, stream `{stream}`: `partition_by = \"{column}\"` names no column of \
                 the stream; its columns are: {}",
                have.join(", ")
            )));
        };
        let data_type = schema.field(index).data_type();
        let dated = match data_type {
            DataType::Date32 => Some(Source::Date32),
            DataType::Date64 => Some(Source::Date64),
            DataType::Timestamp(unit, _) => Some(Source::Timestamp(*unit)),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Source::IsoText),
            _ => None,
        };
        let granularity = spec.granularity.unwrap_or(match data_type {
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => Granularity::Day,
            _ => Granularity::Value,
        });
        let source = match (granularity, dated) {
            (Granularity::Value, _) if can_display(data_type) => Source::Value,
            (Granularity::Value, _) => {
                return Err(Error::config(format!(
                    "file sink, stream `{stream}`: column `{column}` has type {data_type}, which \
                     cannot be a partition value; partition by a column of a scalar type"
                )))
            }
            (_, Some(source)) => source,
            (_, None) => {
                return Err(Error::config(format!(
                    "file sink, stream `{stream}`: `partition_granularity = \"{}\"` needs a \
                     date, timestamp or ISO 8601 text column, but `{column}` has type \
                     {data_type}; use `partition_granularity = \"value\"` or another column",
                    granularity.name()
                )))
            }
        };
        let prefix = match granularity {
            Granularity::Value => format!("{}=", escape_segment(column)),
            g => format!("{}_{}=", escape_segment(column), g.name()),
        };
        Ok(Partitioner {
            index,
            prefix,
            granularity,
            source,
        })
    }

    /// Group the rows of `batch` by partition directory.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<Group>> {
        let column = batch.column(self.index);
        match self.source {
            Source::Date32 => {
                let days = column.as_primitive::<Date32Type>();
                Ok(self.group_by_day(days.iter().map(|d| d.map(i64::from))))
            }
            Source::Date64 => {
                let ms = column.as_primitive::<Date64Type>();
                Ok(self.group_by_day(ms.iter().map(|v| v.map(|v| v.div_euclid(86_400_000)))))
            }
            Source::Timestamp(unit) => {
                let per_day: i64 = match unit {
                    TimeUnit::Second => 86_400,
                    TimeUnit::Millisecond => 86_400_000,
                    TimeUnit::Microsecond => 86_400_000_000,
                    TimeUnit::Nanosecond => 86_400_000_000_000,
                };
                let day = |v: Option<i64>| v.map(|v| v.div_euclid(per_day));
                Ok(match unit {
                    TimeUnit::Second => self
                        .group_by_day(column.as_primitive::<TimestampSecondType>().iter().map(day)),
                    TimeUnit::Millisecond => self.group_by_day(
                        column
                            .as_primitive::<TimestampMillisecondType>()
                            .iter()
                            .map(day),
                    ),
                    TimeUnit::Microsecond => self.group_by_day(
                        column
                            .as_primitive::<TimestampMicrosecondType>()
                            .iter()
                            .map(day),
                    ),
                    TimeUnit::Nanosecond => self.group_by_day(
                        column
                            .as_primitive::<TimestampNanosecondType>()
                            .iter()
                            .map(day),
                    ),
                })
            }
            Source::IsoText => {
                let strings = self.as_text(column)?;
                let width = match self.granularity {
                    Granularity::Day => 10,
                    Granularity::Month => 7,
                    Granularity::Year | Granularity::Value => 4,
                };
                Ok(self.group_by_text(
                    strings
                        .iter()
                        .map(|v| v.filter(|v| is_iso_date(v)).map(|v| &v[..width])),
                ))
            }
            Source::Value => {
                let text = self.as_text(column)?;
                Ok(self.group_by_text(text.iter()))
            }
        }
    }

    fn as_text(&self, column: &ArrayRef) -> Result<StringArray> {
        if let Some(strings) = column.as_any().downcast_ref::<StringArray>() {
            return Ok(strings.clone());
        }
        to_text(column).map_err(|e| {
            Error::data(format!(
                "file sink: partition column {} of type {} could not be turned into text: {e}",
                self.prefix.trim_end_matches('='),
                column.data_type()
            ))
        })
    }

    /// Group by a day number; the granularity folds days into months or years.
    fn group_by_day(&self, days: impl Iterator<Item = Option<i64>>) -> Vec<Group> {
        let granularity = self.granularity;
        let key = move |day: Option<i64>| {
            day.and_then(civil_from_days)
                .map(|(y, m, d)| match granularity {
                    Granularity::Year => (y, 0, 0),
                    Granularity::Month => (y, m, 0),
                    Granularity::Day | Granularity::Value => (y, m, d),
                })
        };
        group(days.map(key), |k| match k {
            None => DEFAULT_PARTITION.to_string(),
            Some((y, m, d)) => match granularity {
                Granularity::Year => format!("{y:04}"),
                Granularity::Month => format!("{y:04}-{m:02}"),
                Granularity::Day | Granularity::Value => format!("{y:04}-{m:02}-{d:02}"),
            },
        })
        .into_iter()
        .map(|(value, rows)| Group {
            dir: format!("{}{}", self.prefix, escape_segment(&value)),
            rows,
        })
        .collect()
    }

    fn group_by_text<'a>(&self, values: impl Iterator<Item = Option<&'a str>>) -> Vec<Group> {
        group(values, |v| v.unwrap_or_default().to_string())
            .into_iter()
            .map(|(value, rows)| Group {
                dir: format!("{}{}", self.prefix, escape_segment(&value)),
                rows,
            })
            .collect()
    }
}

/// Group row indices by key, keeping the order in which keys first appear, and render each
/// key once. Rows whose keys render alike (e.g. null and empty text) are merged.
fn group<K: std::hash::Hash + Eq + Copy>(
    keys: impl Iterator<Item = K>,
    render: impl Fn(K) -> String,
) -> Vec<(String, Vec<u32>)> {
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut groups: Vec<(K, Vec<u32>)> = Vec::new();
    for (row, key) in keys.enumerate() {
        let at = *index.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(row as u32);
    }
    let mut rendered: Vec<(String, Vec<u32>)> = Vec::with_capacity(groups.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (key, rows) in groups {
        let name = render(key);
        match by_name.get(&name) {
            Some(&at) => {
                let merged = &mut rendered[at].1;
                merged.extend(rows);
                merged.sort_unstable();
            }
            None => {
                by_name.insert(name.clone(), rendered.len());
                rendered.push((name, rows));
            }
        }
    }
    rendered
}

/// Whether `value` starts with an ISO 8601 calendar date `YYYY-MM-DD` (month 01-12, day
/// 01-31).
pub fn is_iso_date(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// The proleptic Gregorian (year, month, day) of a day number counted from 1970-01-01;
/// `None` past the calendar's range (about 262,000 years either way).
pub fn civil_from_days(days: i64) -> Option<(i64, u32, u32)> {
    use chrono::Datelike;
    let from_ce = i32::try_from(days.checked_add(719_163)?).ok()?;
    let date = chrono::NaiveDate::from_num_days_from_ce_opt(from_ce)?;
    Some((i64::from(date.year()), date.month(), date.day()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Date32Array, Int32Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::Field;

    use super::*;

    #[test]
    fn escaping_keeps_values_inside_their_directory() {
        assert_eq!(escape_segment("2024-01-05"), "2024-01-05");
        assert_eq!(escape_segment("a/b"), "a%2Fb");
        assert_eq!(escape_segment("../../etc"), "%2E.%2F..%2Fetc");
        assert_eq!(escape_segment(".."), "%2E.");
        assert_eq!(escape_segment("."), "%2E");
        assert_eq!(escape_segment(".staging"), "%2Estaging");
        assert_eq!(escape_segment("k=v"), "k%3Dv");
        assert_eq!(escape_segment("100%"), "100%25");
        assert_eq!(escape_segment("a\\b"), "a%5Cb");
        assert_eq!(escape_segment("line\nbreak"), "line%0Abreak");
        assert_eq!(escape_segment("a.b"), "a.b");
        assert_eq!(escape_segment("Zürich"), "Zürich");
        assert_eq!(escape_segment(""), DEFAULT_PARTITION);
        for hostile in ["..", "../x", "/abs", "a/../../b", ".", "x/./y", "=", "\0"] {
            let e = escape_segment(hostile);
            assert!(
                !e.contains('/') && !e.contains('=') && !e.contains('\0'),
                "{e}"
            );
            assert!(e != "." && e != ".." && !e.starts_with('.'), "{e}");
        }
    }

    #[test]
    fn published_and_staging_paths() {
        let l = StreamLayout::new("public/orders");
        assert_eq!(l.staging(), ".staging/public%2Forders");
        assert_eq!(l.current(), ".staging/public%2Forders/current");
        let tagged = l.clone().with_writer_tag(Some("0a1b-3"));
        assert_eq!(tagged.current(), ".staging/public%2Forders/current-0a1b-3");
        assert_eq!(tagged.epoch(7), l.epoch(7));
        assert_eq!(l.epoch(7), ".staging/public%2Forders/epoch-7");
        assert_eq!(StreamLayout::staged_name(3, "csv"), "0003.csv");
        assert_eq!(
            l.published(Some("created_at_day=2024-01-05"), 7, 3, "parquet"),
            "public%2Forders/created_at_day=2024-01-05/part-0000000007-0003.parquet"
        );
        assert_eq!(
            l.published(None, 12, 0, "jsonl"),
            "public%2Forders/part-0000000012-0000.jsonl"
        );
        // A stream cannot be named like the staging area.
        assert_eq!(
            StreamLayout::new(".staging").published(None, 1, 0, "csv"),
            "%2Estaging/part-0000000001-0000.csv"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), Some((1970, 1, 1)));
        assert_eq!(civil_from_days(-1), Some((1969, 12, 31)));
        assert_eq!(civil_from_days(19_727), Some((2024, 1, 5)));
        assert_eq!(civil_from_days(19_782), Some((2024, 2, 29)));
        assert_eq!(civil_from_days(11_016), Some((2000, 2, 29)));
    }

    #[test]
    fn iso_dates() {
        assert!(is_iso_date("2024-01-05"));
        assert!(is_iso_date("2024-01-05T10:00:00Z"));
        assert!(!is_iso_date("2024-13-05"));
        assert!(!is_iso_date("2024-1-5"));
        assert!(!is_iso_date("05/01/2024"));
        assert!(!is_iso_date("2024-01-0"));
        assert!(!is_iso_date("20240105ab"));
    }

    fn spec(column: &str, granularity: Option<Granularity>) -> Partitioning {
        Partitioning {
            column: column.into(),
            granularity,
        }
    }

    fn groups(p: &Partitioner, batch: &RecordBatch) -> Vec<(String, Vec<u32>)> {
        p.split(batch)
            .unwrap()
            .into_iter()
            .map(|g| (g.dir, g.rows))
            .collect()
    }

    fn one_column(name: &str, array: ArrayRef) -> RecordBatch {
        let schema = Schema::new(vec![Field::new(name, array.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    }

    #[test]
    fn dates_partition_by_day_by_default_and_fold_to_months() {
        let batch = one_column(
            "d",
            Arc::new(Date32Array::from(vec![
                Some(19_727),
                None,
                Some(19_728),
                Some(19_727),
            ])),
        );
        let p = Partitioner::new(&spec("d", None), &batch.schema(), "s").unwrap();
        assert_eq!(
            groups(&p, &batch),
            vec![
                ("d_day=2024-01-05".into(), vec![0, 3]),
                (format!("d_day={DEFAULT_PARTITION}"), vec![1]),
                ("d_day=2024-01-06".into(), vec![2]),
            ]
        );
        let p =
            Partitioner::new(&spec("d", Some(Granularity::Month)), &batch.schema(), "s").unwrap();
        assert_eq!(
            groups(&p, &batch)[0],
            ("d_month=2024-01".into(), vec![0, 2, 3])
        );
        let p =
            Partitioner::new(&spec("d", Some(Granularity::Year)), &batch.schema(), "s").unwrap();
        assert_eq!(groups(&p, &batch)[0], ("d_year=2024".into(), vec![0, 2, 3]));
    }

    #[test]
    fn timestamps_partition_by_their_utc_date() {
        // 2024-01-05T23:59:59.999999Z, 2024-01-06T00:00:00Z, 1969-12-31T23:59:59Z
        let ts = TimestampMicrosecondArray::from(vec![
            1_704_499_199_999_999,
            1_704_499_200_000_000,
            -1_000_000,
        ])
        .with_timezone("UTC");
        let batch = one_column("ts", Arc::new(ts));
        let p = Partitioner::new(&spec("ts", None), &batch.schema(), "s").unwrap();
        let dirs: Vec<String> = groups(&p, &batch).into_iter().map(|g| g.0).collect();
        assert_eq!(
            dirs,
            [
                "ts_day=2024-01-05",
                "ts_day=2024-01-06",
                "ts_day=1969-12-31"
            ]
        );
    }

    #[test]
    fn iso_text_uses_its_prefix_and_other_text_the_default_partition() {
        let batch = one_column(
            "created",
            Arc::new(StringArray::from(vec![
                Some("2024-01-05T10:00:00Z"),
                Some("yesterday"),
                None,
                Some("2024-02-01"),
            ])),
        );
        let p = Partitioner::new(
            &spec("created", Some(Granularity::Month)),
            &batch.schema(),
            "s",
        )
        .unwrap();
        assert_eq!(
            groups(&p, &batch),
            vec![
                ("created_month=2024-01".into(), vec![0]),
                (format!("created_month={DEFAULT_PARTITION}"), vec![1, 2]),
                ("created_month=2024-02".into(), vec![3]),
            ]
        );
    }

    #[test]
    fn values_are_escaped_and_nulls_go_to_the_default_partition() {
        let batch = one_column(
            "region",
            Arc::new(StringArray::from(vec![
                Some("eu/west"),
                Some(".."),
                None,
                Some(""),
            ])),
        );
        // Text defaults to `value`.
        let p = Partitioner::new(&spec("region", None), &batch.schema(), "s").unwrap();
        assert_eq!(
            groups(&p, &batch),
            vec![
                ("region=eu%2Fwest".into(), vec![0]),
                ("region=%2E.".into(), vec![1]),
                (format!("region={DEFAULT_PARTITION}"), vec![2, 3]),
            ]
        );
        let ints = one_column("n", Arc::new(Int32Array::from(vec![Some(-3), Some(7)])));
        let p = Partitioner::new(&spec("n", None), &ints.schema(), "s").unwrap();
        let dirs: Vec<String> = groups(&p, &ints).into_iter().map(|g| g.0).collect();
        assert_eq!(dirs, ["n=-3", "n=7"]);
    }

    #[test]
    fn timestamps_in_named_zones_render_at_utc() {
        let ts = TimestampMicrosecondArray::from(vec![1_704_499_200_000_000]).with_timezone("UTC");
        let batch = one_column("ts", Arc::new(ts));
        let p =
            Partitioner::new(&spec("ts", Some(Granularity::Value)), &batch.schema(), "s").unwrap();
        assert_eq!(groups(&p, &batch)[0].0, "ts=2024-01-06T00%3A00%3A00Z");
        assert_eq!(
            text_safe_type(&DataType::Timestamp(
                TimeUnit::Second,
                Some("+02:00".into())
            )),
            DataType::Timestamp(TimeUnit::Second, Some("+02:00".into()))
        );
    }

    #[test]
    fn unpartitionable_columns_fail_at_open() {
        let schema = Schema::new(vec![
            Field::new("n", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let err =
            Partitioner::new(&spec("n", Some(Granularity::Day)), &schema, "orders").unwrap_err();
        let Error::InvalidConfig(m) = err else {
            panic!("{err:?}")
        };
        assert!(
            m.contains("stream `orders`") && m.contains("`n`") && m.contains("Int32"),
            "{m}"
        );
        let err = Partitioner::new(&spec("missing", None), &schema, "orders").unwrap_err();
        let Error::InvalidConfig(m) = err else {
            panic!("{err:?}")
        };
        assert!(m.contains("\"missing\"") && m.contains("`n`, `s`"), "{m}");
    }
}
