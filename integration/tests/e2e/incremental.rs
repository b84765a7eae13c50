//! Incremental backups against the real engine, Docker volume and S3 server: a chain of a full
//! backup and incrementals that hold only what changed; every link restores the volume exactly as
//! it was at that backup; GNU tar alone restores the chain by hand from the stored objects; a
//! download of an incremental is the whole tree; retention keeps the ancestors a kept backup needs
//! and deletes a chain's objects (archives and manifests) only once nothing needs them.

use std::io::Read as _;
use std::time::Duration;

use futures::StreamExt as _;
use vardo_actors::model::{BackupKind, Compression, Status, TargetKind, VolumeKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::{describe, volumes, TestBed};

const FROM_HOST: &[(&str, &str)] = &[("VARDO_READ_VOLUMES_FROM_HOST", "true")];
const THROUGH_DOCKER: &[(&str, &str)] = &[("VARDO_READ_VOLUMES_FROM_HOST", "false")];

/// A tree with a few hundred files, hard and symbolic links, odd names and owners.
const POPULATE: &str = r#"set -e; cd /volume
mkdir -p uploads/2024 uploads/2025 cache/tmp 'odd -rf $(x) "q" *?['
for i in $(seq 1 150); do head -c $((i * 97)) /dev/urandom > uploads/2024/f$i.bin; done
for i in $(seq 1 100); do printf 'row %s\n' $i > uploads/2025/t$i.txt; done
printf 'conf\n' > settings.conf && chown 1234:5678 settings.conf && chmod 0600 settings.conf
printf 'gone soon\n' > cache/tmp/a && printf 'b\n' > cache/tmp/b
ln uploads/2025/t1.txt hard-link && ln -s uploads/2025/t2.txt soft-link
printf 'x' > 'odd -rf $(x) "q" *?[/-name'
mkdir aa && printf 'linked\n' > aa/first && ln aa/first zz-link
chown 999:998 . && chmod 0750 .
"#;

/// Waits out the second in which change detection treats fresh entries as changed anyway.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

async fn object(storage: &TargetStorage, key: &str) -> Vec<u8> {
    let mut stream = storage.download(key).await.expect("download");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    bytes
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// An app whose volume holds [`POPULATE`], and a job of it on the bed's S3 bucket with
/// incremental backups (`fullEvery`); the volume's name and the job.
async fn populated_job(
    bed: &TestBed,
    name: &str,
    compression: Compression,
    full_every: i32,
) -> (String, uuid::Uuid) {
    let org = bed.organization().await;
    let app = bed.app(&org, name, &[("files", VolumeKind::Generic)]).await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(&bed.docker, &volume, POPULATE)
        .await
        .expect("populate");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed.job(&org, Some(target), &[&app], compression).await;
    bed.db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE backup_job SET incremental_full_every = $2 WHERE id = $1",
            &[&job, &full_every],
        )
        .await
        .expect("incremental on");
    (volume, job)
}

/// A new volume with `archives` extracted into its host folder by GNU tar (`flags` added), in
/// order; the volume's listing.
async fn untar_into_volume(
    bed: &TestBed,
    name: &str,
    archives: &[Vec<u8>],
    flags: &[&str],
) -> String {
    let volume = bed.track_volume(&format!("{name}-{}", bed.id));
    bed.docker.create_volume(&volume).await.expect("volume");
    let folder = bed
        .docker
        .host_folder(&volume)
        .await
        .expect("inspect")
        .expect("host folder");
    let scratch = tempfile::tempdir().expect("dir");
    for (i, tar) in archives.iter().enumerate() {
        let file = scratch.path().join(format!("{i}.tar"));
        std::fs::write(&file, tar).expect("write");
        let out = std::process::Command::new("tar")
            .args(flags)
            .arg("-xpf")
            .arg(&file)
            .arg("-C")
            .arg(&folder)
            .output()
            .expect("GNU tar");
        assert!(out.status.success(), "{}", describe(&out));
    }
    volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing")
}

/// `runs` backups of `job` read from the host folder, each after the racy window and each
/// followed by the shell change `change(i)` in the volume; their rows.
async fn backed_up_rows(
    bed: &TestBed,
    job: uuid::Uuid,
    volume: &str,
    runs: usize,
    change: impl Fn(usize) -> String,
) -> Vec<vardo_actors::model::Backup> {
    let mut rows = Vec::new();
    for i in 0..runs {
        settle().await;
        let (out, ran) = bed.run_job_with(job, FROM_HOST).await;
        assert!(out.status.success(), "{}", describe(&out));
        rows.push(ran.into_iter().next().expect("row"));
        volumes::sh(&bed.docker, volume, &change(i))
            .await
            .expect("change");
    }
    rows
}

#[tokio::test]
async fn a_chain_read_from_the_host_folder_stores_only_changes_and_every_link_restores_exactly() {
    chain_round_trip(FROM_HOST, "from its folder on the Docker host").await;
}

#[tokio::test]
async fn a_chain_read_through_docker_stores_only_changes_and_every_link_restores_exactly() {
    chain_round_trip(THROUGH_DOCKER, "through the Docker archive API").await;
}

async fn chain_round_trip(read: &[(&str, &str)], read_says: &str) {
    let bed = TestBed::new().await;
    let (volume, job) = populated_job(&bed, "incr", Compression::Gzip, 3).await;
    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET keep_all = false, keep_last = 1 WHERE id = $1",
        &[&job],
    )
    .await
    .expect("keep the last only");

    // The changes between backups: edits (one of the same size), deletions of a file and a
    // folder, additions, a mode change, a file that becomes a folder.
    let changes = [
        "cd /volume && printf 'row X\\n' > uploads/2025/t3.txt && rm -rf cache/tmp \
         && printf 'new\\n' > uploads/2025/new.txt && chmod 0640 uploads/2024/f7.bin \
         && mv aa aa-moved",
        "cd /volume && rm uploads/2024/f9.bin && rm settings.conf && mkdir settings.conf \
         && printf 'inside\\n' > settings.conf/now-a-folder && printf 'row Y\\n' > hard-link",
    ];
    let mut rows = Vec::new();
    let mut listings = Vec::new();
    for step in 0..3 {
        settle().await;
        let (out, ran) = bed.run_job_with(job, read).await;
        assert!(out.status.success(), "{}", describe(&out));
        let row = ran.into_iter().next().expect("a row");
        assert_eq!(row.status, Status::Success, "{}", row.log);
        assert!(row.log.contains(read_says), "{}", row.log);
        listings.push(
            volumes::listing(&bed.docker, &volume)
                .await
                .expect("listing"),
        );
        rows.push(row);
        if let Some(change) = changes.get(step) {
            volumes::sh(&bed.docker, &volume, change)
                .await
                .expect("change");
        }
    }

    // The chain: a full backup, then incrementals that name their parent.
    let storage = bed.bucket.storage();
    for (i, row) in rows.iter().enumerate() {
        let key = row.storage_path.as_deref().expect("key");
        assert_eq!(row.chain.position, i as i32, "{}", row.log);
        assert!(row.chain.manifest_path.is_some(), "{}", row.log);
        if i == 0 {
            assert_eq!(row.chain.kind, BackupKind::Full);
            assert!(key.ends_with(".full.tar.gz"), "{key}");
        } else {
            assert_eq!(row.chain.kind, BackupKind::Incremental, "{}", row.log);
            assert_eq!(row.chain.parent_backup_id, Some(rows[i - 1].id));
            assert!(key.ends_with(".incr.tar.gz"), "{key}");
        }
    }
    let full = rows[0].size_bytes.expect("size");
    for row in &rows[1..] {
        let size = row.size_bytes.expect("size");
        assert!(
            size * 10 < full,
            "an incremental holds only what changed: {size} bytes against the full {full}"
        );
        let tar = gunzip(&object(&storage, row.storage_path.as_deref().expect("key")).await);
        let files: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry"))
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| String::from_utf8_lossy(&e.path_bytes()).into_owned())
            .collect();
        assert!(
            files.len() <= 6,
            "only the changed files are in the archive: {files:?}"
        );
    }

    // Every link of the chain restores the volume exactly as it was at that backup.
    for (row, expected) in rows.iter().zip(&listings).rev() {
        volumes::sh(
            &bed.docker,
            &volume,
            "rm -rf /volume/* && echo other > /volume/x",
        )
        .await
        .expect("mutate");
        let out = bed.cli(&[
            "restore",
            "--backup",
            &row.id.to_string(),
            "--no-safety-backup",
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        let after = volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing");
        assert_eq!(
            &after, expected,
            "restore of chain position {}",
            row.chain.position
        );
    }

    // By hand: GNU tar's incremental extraction of the stored objects, in order.
    let mut archives = Vec::new();
    for row in &rows {
        archives.push(gunzip(
            &object(&storage, row.storage_path.as_deref().expect("key")).await,
        ));
    }
    let by_hand = untar_into_volume(
        &bed,
        "byhand",
        &archives,
        &["--listed-incremental=/dev/null"],
    )
    .await;
    assert_eq!(by_hand, listings[2], "GNU tar alone restores the chain");

    // The download of an incremental backup is one archive of the whole tree.
    let tree = {
        let engine = bed.engine();
        match vardo_actors::download::download(&engine, rows[2].id)
            .await
            .expect("download")
        {
            vardo_actors::download::Download::Stream {
                body, file_name, ..
            } => {
                assert!(file_name.ends_with(".tar.gz"), "{file_name}");
                let mut body = body;
                let mut bytes = Vec::new();
                while let Some(chunk) = body.next().await {
                    bytes.extend_from_slice(&chunk.expect("chunk"));
                }
                gunzip(&bytes)
            }
            vardo_actors::download::Download::Redirect(url) => {
                panic!("an incremental backup is not one object: {url}")
            }
        }
    };
    assert_eq!(
        untar_into_volume(&bed, "whole", &[tree], &[]).await,
        listings[2],
        "the download is the tree at the backup"
    );

    // Verification reads the whole chain.
    let out = bed.cli(&["verify", "--backup", &rows[2].id.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 archives of the chain"),
        "{}",
        describe(&out)
    );

    // A drill of the job restores the newest backup, an incremental, into a scratch volume.
    let out = bed.cli(&["drill", "--job", &job.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));

    // Retention (keepLast 1): the newest is kept, and with it every ancestor.
    let out = bed.cli(&["prune", "--job", &job.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    for row in &rows {
        let now = bed.store.backup(row.id).await.expect("row");
        assert_eq!(now.status, Status::Success, "{}", describe(&out));
    }
    // A fourth backup starts a new chain; then the old chain is no longer needed.
    settle().await;
    let (out, ran) = bed.run_job_with(job, read).await;
    assert!(out.status.success(), "{}", describe(&out));
    let fresh = &ran[0];
    assert_eq!(
        (fresh.chain.kind, fresh.chain.position),
        (BackupKind::Full, 0),
        "{}",
        fresh.log
    );
    let out = bed.cli(&["prune", "--job", &job.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    for row in &rows {
        let now = bed.store.backup(row.id).await.expect("row");
        assert_eq!(now.status, Status::Pruned, "{}", now.log);
        for key in [
            row.storage_path.as_deref(),
            row.chain.manifest_path.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(
                storage.stat(key).await.expect("stat"),
                None,
                "{key} deleted"
            );
        }
    }
    let kept = fresh.chain.manifest_path.as_deref().expect("manifest");
    assert!(storage.stat(kept).await.expect("stat").is_some());
    bed.cleanup().await;
}

/// A damaged link breaks only what needs it: the restore of an incremental whose parent's
/// archive changed on the target fails and leaves the volume exactly as it was.
#[tokio::test]
async fn a_changed_archive_in_the_chain_fails_the_restore_and_changes_nothing() {
    let bed = TestBed::new().await;
    let (volume, job) = populated_job(&bed, "incrbad", Compression::Zstd, 5).await;
    let rows = backed_up_rows(&bed, job, &volume, 2, |_| {
        "echo more >> /volume/uploads/2025/t5.txt".to_owned()
    })
    .await;
    assert_eq!(
        rows[1].chain.kind,
        BackupKind::Incremental,
        "{}",
        rows[1].log
    );
    let before = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");

    // The full archive is replaced on the target by other bytes.
    let storage = bed.bucket.storage();
    let key = rows[0].storage_path.clone().expect("key");
    let mut bytes = object(&storage, &key).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let body: vardo_actors::stream::ByteStream = Box::pin(futures::stream::once(async move {
        Ok(bytes::Bytes::from(bytes))
    }));
    storage.upload(&key, body).await.expect("overwrite");

    let out = bed.cli(&["restore", "--backup", &rows[1].id.to_string()]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(
        volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing"),
        before,
        "a failed restore of a chain changes nothing"
    );
    let out = bed.cli(&["verify", "--backup", &rows[1].id.to_string()]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checksum mismatch")
            || String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        describe(&out)
    );
    bed.cleanup().await;
}

/// While a restore of an older incremental runs, retention defers that backup and every ancestor
/// it reads; once the restore ended, the next prune deletes them.
#[tokio::test]
async fn prune_defers_the_chain_of_a_backup_being_restored() {
    let bed = TestBed::new().await;
    let (volume, job) = populated_job(&bed, "incrkeep", Compression::Gzip, 2).await;
    let rows = backed_up_rows(&bed, job, &volume, 3, |i| {
        format!("echo {i} >> /volume/settings.conf")
    })
    .await;
    let kinds: Vec<_> = rows
        .iter()
        .map(|r| (r.chain.kind, r.chain.position))
        .collect();
    assert_eq!(
        kinds,
        [
            (BackupKind::Full, 0),
            (BackupKind::Incremental, 1),
            (BackupKind::Full, 0)
        ]
    );
    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET keep_all = false, keep_last = 1 WHERE id = $1",
        &[&job],
    )
    .await
    .expect("keep the last only");
    let restore: uuid::Uuid = db
        .query_one(
            "INSERT INTO restore (organization_id, backup_id, status, started_at, heartbeat_at)
             VALUES ($1, $2, 'running', now(), now()) RETURNING id",
            &[&rows[1].organization_id, &rows[1].id],
        )
        .await
        .expect("a restore in progress")
        .get(0);

    let out = bed.cli(&["prune", "--job", &job.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    for row in &rows[..2] {
        let now = bed.store.backup(row.id).await.expect("row");
        assert_eq!(now.status, Status::Success, "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("deferred {}", row.id)),
            "{}",
            describe(&out)
        );
    }

    db.execute(
        "UPDATE restore SET status = 'failed', finished_at = now() WHERE id = $1",
        &[&restore],
    )
    .await
    .expect("the restore ended");
    let out = bed.cli(&["prune", "--job", &job.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    for row in &rows[..2] {
        let now = bed.store.backup(row.id).await.expect("row");
        assert_eq!(now.status, Status::Pruned, "{}", now.log);
    }
    assert_eq!(
        bed.store.backup(rows[2].id).await.expect("row").status,
        Status::Success
    );
    bed.cleanup().await;
}
