//! vardo-actors: the engine of vardo-backup — its actors and their messages, the domain model, and
//! the adapters the actors drive (Postgres, Redis, Docker, storage targets).

pub mod after_run;
pub mod backup;
pub mod codec;
pub mod docker;
pub mod download;
pub mod engine;
pub mod lock;
pub mod messages;
pub mod model;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod secrets;
pub mod storage;
pub mod store;
pub mod stream;
pub mod tar_guard;
pub mod uploader;
pub mod volume_runner;
