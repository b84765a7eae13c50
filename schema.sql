-- vardo-backup: the whole database schema.
-- Idempotent: `vardo-backup migrate` (and `serve` at start-up) applies it as a whole, under an advisory
-- lock, as often as it likes. Changes are additive (`ADD COLUMN IF NOT EXISTS`, new indexes), never a
-- rewrite of what is there.

CREATE TABLE IF NOT EXISTS organization (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Organization API tokens. Only a SHA-256 of the token is stored; the token is shown once.
CREATE TABLE IF NOT EXISTS api_token (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    token_hash       text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz
);

-- Apps are named by the deploy pipeline, so their ids are the pipeline's strings.
CREATE TABLE IF NOT EXISTS app (
    id               text PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    name             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS app_organization ON app (organization_id);

CREATE TABLE IF NOT EXISTS volume (
    app_id      text NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    name        text NOT NULL,
    persistent  boolean NOT NULL DEFAULT true,
    kind        text NOT NULL DEFAULT 'generic' CHECK (kind IN ('generic', 'postgres')),
    PRIMARY KEY (app_id, name)
);

-- organization_id NULL = a system-level target, the fallback for every organization.
-- Secret fields inside `config` are encrypted (XChaCha20-Poly1305, key from VARDO_SECRET_KEY).
CREATE TABLE IF NOT EXISTS backup_target (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid REFERENCES organization (id) ON DELETE CASCADE,
    name             text NOT NULL,
    type             text NOT NULL CHECK (type IN ('s3', 'r2', 'b2', 'ssh', 'local')),
    config           jsonb NOT NULL,
    is_default       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS backup_target_system_name
    ON backup_target (name) WHERE organization_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS backup_target_org_name
    ON backup_target (organization_id, name) WHERE organization_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS backup_target_one_default
    ON backup_target (organization_id) WHERE is_default AND organization_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS backup_job (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    name               text NOT NULL,
    schedule           text NOT NULL,
    timezone           text NOT NULL DEFAULT 'UTC',
    enabled            boolean NOT NULL DEFAULT true,
    -- NULL (or a deleted target) falls back to the resolution order: org default, any org, system.
    target_id          uuid REFERENCES backup_target (id) ON DELETE SET NULL,
    keep_all           boolean NOT NULL DEFAULT false,
    keep_last          integer CHECK (keep_last >= 0),
    keep_hourly        integer CHECK (keep_hourly >= 0),
    keep_daily         integer CHECK (keep_daily >= 0),
    keep_weekly        integer CHECK (keep_weekly >= 0),
    keep_monthly       integer CHECK (keep_monthly >= 0),
    keep_yearly        integer CHECK (keep_yearly >= 0),
    notify_on_success  boolean NOT NULL DEFAULT false,
    notify_on_failure  boolean NOT NULL DEFAULT true,
    compression        text NOT NULL DEFAULT 'gzip' CHECK (compression IN ('gzip', 'zstd')),
    compression_level  integer,
    -- Set on auto-created jobs: the database, not the code, guarantees one auto job per app.
    auto_for_app_id    text UNIQUE REFERENCES app (id) ON DELETE SET NULL,
    last_run_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS backup_job_organization ON backup_job (organization_id);
CREATE INDEX IF NOT EXISTS backup_job_enabled ON backup_job (enabled) WHERE enabled;

CREATE TABLE IF NOT EXISTS backup_job_app (
    job_id  uuid NOT NULL REFERENCES backup_job (id) ON DELETE CASCADE,
    app_id  text NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, app_id)
);
CREATE INDEX IF NOT EXISTS backup_job_app_app ON backup_job_app (app_id);

-- The backup table: one row per attempt to back up one volume of one app in one run.
CREATE TABLE IF NOT EXISTS backup (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    run_id           uuid NOT NULL,
    job_id           uuid REFERENCES backup_job (id) ON DELETE SET NULL,
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    app_id           text NOT NULL,
    app_name         text NOT NULL,
    target_id        uuid REFERENCES backup_target (id) ON DELETE SET NULL,
    volume_name      text NOT NULL,
    volume_kind      text NOT NULL DEFAULT 'generic' CHECK (volume_kind IN ('generic', 'postgres')),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'success', 'failed', 'pruned')),
    reason           text NOT NULL DEFAULT 'manual',
    size_bytes       bigint,
    storage_path     text,
    checksum         text CHECK (checksum IS NULL OR checksum ~ '^sha256:[0-9a-f]{64}$'),
    log              text NOT NULL DEFAULT '',
    scheduled_for    timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    heartbeat_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS backup_job_time ON backup (job_id, created_at DESC);
CREATE INDEX IF NOT EXISTS backup_org_time ON backup (organization_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS backup_status ON backup (status);
CREATE INDEX IF NOT EXISTS backup_unfinished ON backup (heartbeat_at) WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS backup_series
    ON backup (job_id, app_id, volume_name, finished_at DESC) WHERE status = 'success';

CREATE TABLE IF NOT EXISTS restore (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    backup_id        uuid NOT NULL REFERENCES backup (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'success', 'failed')),
    log              text NOT NULL DEFAULT '',
    started_at       timestamptz,
    finished_at      timestamptz,
    heartbeat_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS restore_backup ON restore (backup_id);

-- Secret parts of `config` (webhook secrets, URLs with tokens) are encrypted like target secrets.
CREATE TABLE IF NOT EXISTS notification_channel (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('email', 'webhook', 'slack')),
    config           jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notification_channel_organization ON notification_channel (organization_id);

-- Durable delivery: a notice is written in the transaction that finishes a run, then delivered.
CREATE TABLE IF NOT EXISTS notification_outbox (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    channel_id       uuid NOT NULL REFERENCES notification_channel (id) ON DELETE CASCADE,
    run_id           uuid,
    event            text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX IF NOT EXISTS notification_outbox_due ON notification_outbox (next_attempt_at) WHERE status = 'pending';
-- One notice per run and channel, whoever enqueues it (the run's end or the recovery sweep).
CREATE UNIQUE INDEX IF NOT EXISTS notification_outbox_run_channel
    ON notification_outbox (run_id, channel_id) WHERE run_id IS NOT NULL;

-- Runs whose notices are enqueued (`notices` may be 0): written in the transaction that enqueues
-- them, so enqueuing is idempotent per run and the delivery loop finds runs whose enqueue a crash lost.
CREATE TABLE IF NOT EXISTS notification_run (
    run_id      uuid PRIMARY KEY,
    notices     integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- The recovery sweep looks at recent runs only.
CREATE INDEX IF NOT EXISTS backup_created ON backup (created_at);

-- Every delivery attempt and its outcome.
CREATE TABLE IF NOT EXISTS notification_attempt (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    outbox_id    uuid NOT NULL REFERENCES notification_outbox (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notification_attempt_outbox ON notification_attempt (outbox_id, attempt);

-- The scheduler's memory of the last minute it evaluated, for catching up missed minutes.
CREATE TABLE IF NOT EXISTS scheduler_state (
    key          text PRIMARY KEY,
    minute       bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Runs asked for by the HTTP control plane or the deploy pipeline, picked up by any instance that
-- runs the scheduler role. The id becomes the run's id.
CREATE TABLE IF NOT EXISTS run_request (
    id           uuid PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES backup_job (id) ON DELETE CASCADE,
    reason       text NOT NULL,
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at   timestamptz,
    claimed_by   text
);
CREATE INDEX IF NOT EXISTS run_request_unclaimed ON run_request (created_at) WHERE claimed_at IS NULL;

-- A restore is claimed by one instance before it starts.
ALTER TABLE restore ADD COLUMN IF NOT EXISTS claimed_by text;
CREATE INDEX IF NOT EXISTS restore_unclaimed ON restore (created_at) WHERE claimed_by IS NULL AND status = 'pending';

-- The scheduled minute a job last fired for: a compare-and-set on it makes each (job, minute) fire
-- once across instances even after the minute's Redis lock has expired (catch-up).
ALTER TABLE backup_job ADD COLUMN IF NOT EXISTS last_scheduled_for timestamptz;
-- Start of the current overdue episode (NULL while the job is on time).
ALTER TABLE backup_job ADD COLUMN IF NOT EXISTS overdue_since timestamptz;

-- The deploy pipeline's `backup.requested` asks for each job's run once per requestId, however
-- often the message is delivered.
CREATE UNIQUE INDEX IF NOT EXISTS run_request_deploy_once
    ON run_request (job_id, request_id) WHERE reason = 'deploy' AND request_id IS NOT NULL;

-- When the run of a claimed request ended; a request claimed by an engine that died before its run
-- recorded anything is handed back by the janitor.
ALTER TABLE run_request ADD COLUMN IF NOT EXISTS finished_at timestamptz;

-- Events for other systems (the Redis Stream `vardo:backup-events`), written in the transaction
-- that writes the run's `notification_run` marker (or, for an answer to a deploy request that
-- started no run, on their own) and published by any instance's publisher, oldest first.
CREATE TABLE IF NOT EXISTS event_outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream        text NOT NULL,
    type          text NOT NULL,
    payload       jsonb NOT NULL,
    run_id        uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX IF NOT EXISTS event_outbox_unpublished ON event_outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS event_outbox_published ON event_outbox (published_at) WHERE published_at IS NOT NULL;
-- One event of each type per run, whoever enqueues it (the run's end or the recovery sweep).
CREATE UNIQUE INDEX IF NOT EXISTS event_outbox_run_type
    ON event_outbox (run_id, type) WHERE run_id IS NOT NULL;

-- A file restore writes into its volume (a staging folder, then a journaled swap) only while
-- `recovery_pending` is set on its row, with the Docker volume named: if its engine dies, the
-- janitor of any instance, or the next backup or restore of that volume, finishes or undoes the
-- swap before anything else touches the volume.
ALTER TABLE restore ADD COLUMN IF NOT EXISTS docker_volume text;
ALTER TABLE restore ADD COLUMN IF NOT EXISTS recovery_pending boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS restore_recovery ON restore (docker_volume) WHERE recovery_pending;

-- Docker volume names are authority: each (app, volume) claims `{app}-blue_{volume}` and
-- `{app}-green_{volume}`, and no other registration, of any organization, can claim them again
-- (`x` + volume `y-blue_z` and `x-blue_y` + volume `z` name one Docker volume). Backups and
-- restores touch only a Docker volume claimed by the backup's app of the backup's organization.
-- A claim belongs to its organization for good: when its app is deleted, renamed or stops listing
-- the volume, `app_id` becomes NULL (released to the organization; the Docker volume may still
-- hold the organization's data) and only an app of that organization can claim the name again.
-- Deleting an organization that holds claims fails until its claims are deleted on purpose.
CREATE TABLE IF NOT EXISTS docker_volume_claim (
    name             text PRIMARY KEY,
    app_id           text,
    organization_id  uuid NOT NULL REFERENCES organization (id),
    volume_name      text NOT NULL
);
CREATE INDEX IF NOT EXISTS docker_volume_claim_app ON docker_volume_claim (app_id);
-- Claims from before they named their organization: the organization of their app (then still
-- required, so every row has one).
ALTER TABLE docker_volume_claim ADD COLUMN IF NOT EXISTS organization_id uuid REFERENCES organization (id);
UPDATE docker_volume_claim c SET organization_id = a.organization_id
FROM app a WHERE a.id = c.app_id AND c.organization_id IS NULL;
ALTER TABLE docker_volume_claim ALTER COLUMN organization_id SET NOT NULL;
-- Deleting an app used to delete its claims (ON DELETE CASCADE); now it releases them.
ALTER TABLE docker_volume_claim DROP CONSTRAINT IF EXISTS docker_volume_claim_app_id_fkey;
ALTER TABLE docker_volume_claim ALTER COLUMN app_id DROP NOT NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'docker_volume_claim_app_released'
                     AND conrelid = 'docker_volume_claim'::regclass) THEN
        ALTER TABLE docker_volume_claim ADD CONSTRAINT docker_volume_claim_app_released
            FOREIGN KEY (app_id) REFERENCES app (id) ON DELETE SET NULL;
    END IF;
END
$$;

-- One-off data migrations that ran, by name: a step guarded by its marker runs exactly once.
CREATE TABLE IF NOT EXISTS schema_marker (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
-- Apps registered before claims existed: the earliest registration of a name keeps it. Once only:
-- an app that lost a name here must never pick it up at a later start, when its holder has
-- released it.
INSERT INTO docker_volume_claim (name, app_id, organization_id, volume_name)
SELECT c.name, v.app_id, a.organization_id, v.name
FROM volume v JOIN app a ON a.id = v.app_id
CROSS JOIN LATERAL (VALUES (a.name || '-blue_' || v.name), (a.name || '-green_' || v.name)) AS c (name)
WHERE NOT EXISTS (SELECT 1 FROM schema_marker m WHERE m.name = 'docker_volume_claim_backfill')
  AND NOT EXISTS (SELECT 1 FROM docker_volume_claim d WHERE d.app_id = v.app_id AND d.volume_name = v.name)
ORDER BY a.created_at, a.id
ON CONFLICT (name) DO NOTHING;
INSERT INTO schema_marker (name) VALUES ('docker_volume_claim_backfill') ON CONFLICT (name) DO NOTHING;

-- Every object a backup writes is reserved here first (by the target's scheme, bucket or root,
-- and key), so a second upload can never overwrite the object of another row.
CREATE TABLE IF NOT EXISTS stored_object (
    location    text PRIMARY KEY,
    backup_id   uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Runs that ended without a single backup row (no target resolves, no persistent volume, an error
-- before the rows were written), so that the history shows them with their reason. A run with
-- rows is told by its rows.
CREATE TABLE IF NOT EXISTS run (
    id               uuid PRIMARY KEY,
    job_id           uuid REFERENCES backup_job (id) ON DELETE SET NULL,
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'failed' CHECK (status IN ('failed')),
    reason           text NOT NULL CHECK (reason IN ('no_target', 'no_volumes', 'error')),
    message          text NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS run_org_time ON run (organization_id, finished_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS run_finished ON run (finished_at);

-- Engine processes (`serve`, and the `backup` / `restore` commands), one row per process: their
-- helper containers carry the id as the label `vardo-backup.instance`, and a janitor removes the
-- helpers of an instance that stopped (`stopped_at`) or whose heartbeat is older than the lease.
-- Helpers of an instance this table does not know (another deployment on the same Docker host)
-- are never touched.
CREATE TABLE IF NOT EXISTS engine_instance (
    id            text PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);

-- Verification: a backup's object downloaded and checked (size, sha256, content read to its end
-- through the restore's guard). Requested through the API or the CLI; claimed by one instance.
CREATE TABLE IF NOT EXISTS verification (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    backup_id        uuid NOT NULL REFERENCES backup (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'success', 'failed')),
    log              text NOT NULL DEFAULT '',
    checked          text[] NOT NULL DEFAULT '{}',
    claimed_by       text,
    heartbeat_at     timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS verification_backup ON verification (backup_id);
CREATE INDEX IF NOT EXISTS verification_unclaimed ON verification (created_at)
    WHERE claimed_by IS NULL AND status = 'pending';
ALTER TABLE backup ADD COLUMN IF NOT EXISTS verified_at timestamptz;
ALTER TABLE backup ADD COLUMN IF NOT EXISTS verify_outcome text
    CHECK (verify_outcome IN ('ok', 'failed'));

-- Undoable restores: a restore first backs up the contents it replaces (a backup row with reason
-- `pre-restore`, kept `restore.keep_pre_restore_days`, outside the job's retention) unless asked
-- not to.
ALTER TABLE restore ADD COLUMN IF NOT EXISTS safety_backup boolean NOT NULL DEFAULT true;
ALTER TABLE restore ADD COLUMN IF NOT EXISTS pre_restore_backup_id uuid
    REFERENCES backup (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS backup_pre_restore ON backup (finished_at)
    WHERE reason = 'pre-restore' AND status = 'success';

-- Drills: a job's newest backups restored on a schedule into scratch volumes and containers that
-- never touch live data, then compared with the archive (files) or counted (databases). One row
-- per drill; a scheduled drill's (job, slot) is unique, so it happens once across instances.
ALTER TABLE backup_job ADD COLUMN IF NOT EXISTS drill_schedule text DEFAULT '0 4 * * 0';
ALTER TABLE backup_job ADD COLUMN IF NOT EXISTS last_drill_at timestamptz;
ALTER TABLE backup_job ADD COLUMN IF NOT EXISTS last_drill_outcome text
    CHECK (last_drill_outcome IN ('ok', 'failed'));
CREATE TABLE IF NOT EXISTS drill (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    job_id           uuid NOT NULL REFERENCES backup_job (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'success', 'failed')),
    reason           text NOT NULL CHECK (reason IN ('schedule', 'manual')),
    slot             timestamptz,
    log              text NOT NULL DEFAULT '',
    claimed_by       text,
    heartbeat_at     timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, slot)
);
CREATE INDEX IF NOT EXISTS drill_job ON drill (job_id, created_at);
CREATE INDEX IF NOT EXISTS drill_unclaimed ON drill (created_at)
    WHERE claimed_by IS NULL AND status = 'pending';

-- The engine's own database (`self_backup`): its backups are rows of the system organization's
-- app `vardo-engine`, volume `database`, kind `engine` (never accepted from the API or events).
DO $vardo_kinds$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'volume_kind_check'
                   AND pg_get_constraintdef(oid) LIKE '%engine%') THEN
        ALTER TABLE volume DROP CONSTRAINT IF EXISTS volume_kind_check;
        ALTER TABLE volume ADD CONSTRAINT volume_kind_check
            CHECK (kind IN ('generic', 'postgres', 'engine')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'backup_volume_kind_check'
                   AND pg_get_constraintdef(oid) LIKE '%engine%') THEN
        ALTER TABLE backup DROP CONSTRAINT IF EXISTS backup_volume_kind_check;
        ALTER TABLE backup ADD CONSTRAINT backup_volume_kind_check
            CHECK (volume_kind IN ('generic', 'postgres', 'engine')) NOT VALID;
    END IF;
END
$vardo_kinds$;

-- Sessions of the Backups page. Only the SHA-256 of the cookie's value is stored. An
-- organization's session is tied to the token it signed in with (deleting the token ends it); the
-- admin's names the organization the admin is looking at (none yet: NULL) and a fingerprint of the
-- admin token it signed in with (a changed or removed admin token ends it). `csrf` is the token
-- every form of the session carries.
CREATE TABLE IF NOT EXISTS web_session (
    id_hash          text PRIMARY KEY,
    admin            boolean NOT NULL,
    admin_token      text,
    api_token_id     uuid REFERENCES api_token (id) ON DELETE CASCADE,
    organization_id  uuid REFERENCES organization (id) ON DELETE CASCADE,
    csrf             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    CHECK (admin OR (api_token_id IS NOT NULL AND organization_id IS NOT NULL)),
    CHECK (NOT admin OR admin_token IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS web_session_expiry ON web_session (expires_at);
ALTER TABLE web_session ADD COLUMN IF NOT EXISTS admin_token text;

-- The digest of the schema text last applied; an engine whose schema.sql matches it changes
-- nothing and takes no table lock at start-up (replicas starting beside live traffic).
CREATE TABLE IF NOT EXISTS schema_digest (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    digest text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Incremental backups (a job's `incremental.fullEvery`): a series is a chain of one full archive
-- and incrementals that hold what changed since their parent; every archive of a chain has a
-- manifest of the whole tree beside it on the target.
ALTER TABLE backup_job ADD COLUMN IF NOT EXISTS incremental_full_every int
    CHECK (incremental_full_every BETWEEN 1 AND 1000);
ALTER TABLE backup ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'full'
    CHECK (kind IN ('full', 'incremental'));
ALTER TABLE backup ADD COLUMN IF NOT EXISTS parent_backup_id uuid REFERENCES backup (id);
ALTER TABLE backup ADD COLUMN IF NOT EXISTS chain_position int NOT NULL DEFAULT 0;
ALTER TABLE backup ADD COLUMN IF NOT EXISTS manifest_path text;
ALTER TABLE backup ADD COLUMN IF NOT EXISTS manifest_checksum text;
ALTER TABLE backup ADD COLUMN IF NOT EXISTS manifest_size bigint;
CREATE INDEX IF NOT EXISTS backup_parent ON backup (parent_backup_id) WHERE parent_backup_id IS NOT NULL;

-- Client-side encryption (age): a target's setting (null: none); the recipients a backup's
-- archive and manifest are encrypted to (null: plain); identities sealed with VARDO_SECRET_KEY
-- (`vardo-backup identity`), which the engine decrypts with besides VARDO_AGE_IDENTITY_FILE.
ALTER TABLE backup_target ADD COLUMN IF NOT EXISTS encryption jsonb;
ALTER TABLE backup ADD COLUMN IF NOT EXISTS encrypted_to text[];
CREATE TABLE IF NOT EXISTS age_identity (
    recipient   text PRIMARY KEY,
    sealed      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
