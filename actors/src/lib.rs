//! vardo-actors: the engine of vardo-backup — its actors and their messages, the domain model, and
//! the adapters the actors drive (Postgres, Redis, Docker, storage targets).

pub mod after_run;
pub mod backup;
pub mod codec;
pub mod deploy_events;
pub mod dispatcher;
pub mod docker;
pub mod download;
pub mod engine;
pub mod events_out;
pub mod events_publisher;
pub mod host_volume;
pub mod instance;
pub mod janitor;
pub mod lock;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod notifier;
pub mod notify;
pub mod ownership;
pub mod progress;
pub mod pruner;
pub mod restore;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod secrets;
pub mod shutdown;
pub mod storage;
pub mod store;
pub mod stream;
pub mod tar_guard;
pub mod uploader;
pub mod volume_runner;
