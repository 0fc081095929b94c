//! Integration tests: the real `host` binary on real files, with outputs checked by an
//! independent reader (the `parquet` crate) and masked values recomputed here.

mod bad_input;
mod cdc;
mod cluster;
mod config_schema;
mod dedupe;
mod dlq;
mod end_to_end;
mod growing;
mod hostile;
mod http_api;
mod inspect;
mod javascript;
mod kafka;
mod lock;
mod maria;
mod mariadb;
mod nats;
mod parallel;
mod pg;
mod polyglot;
mod postgres;
mod protect;
mod python;
mod recovery;
mod retries;
mod s3;
mod sandbox;
mod scaffold;
mod schema;
mod status;
mod stream;
mod support;
mod tap;
mod webhook;
