//! PostgreSQL volumes: a backup dumps the whole cluster ([`dump`]) in a layout psql replays by
//! hand and the engine replays database by database ([`format`]); [`login`] is how the engine
//! logs in to a database container.

pub mod dump;
pub mod format;
pub mod login;

pub use login::{PgLogin, PgSession};
