//! vardo-backup's end-to-end tests, one module per feature, in one test binary (one link instead
//! of one per file). Every test runs the real binary or engine against the real services that
//! `scripts/services` starts; each has its own database, bucket, volumes and streams.

mod backup_restore;
mod cli_exit_codes;
mod deploy_events;
mod docker_adapter;
mod downloads_and_locks;
mod drills;
mod faults;
mod foundation;
mod host_volume;
mod http_apps;
mod http_bad_input;
mod http_channels;
mod http_history;
mod http_isolation;
mod http_jobs;
mod http_metrics;
mod http_openapi;
mod http_organizations;
mod http_targets;
mod incremental;
mod notifications;
mod pinned_read;
mod postgres_cluster;
mod postgres_cut;
mod postgres_volume;
mod restarts;
mod restore_recovery;
mod restore_swap;
mod retention;
mod retention_oracle;
mod scheduler;
mod self_backup;
mod shutdown;
mod soak;
mod stalls;
mod status_cmd;
mod storage_adapter;
mod tenancy;
mod transitions;
mod undo;
mod verify;
mod web_browser;
mod web_pages;
mod workers;
