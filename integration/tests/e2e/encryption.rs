//! Client-side encryption with age, end to end: archives on S3, SSH and local targets that hold
//! no plaintext, open with Debian's `age` and the identity, restore exactly with it, and are
//! refused (volume unchanged) by an engine without it; Postgres dumps and incremental chains
//! (their manifests too) the same.

use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use uuid::Uuid;
use vardo_actors::encryption::{fingerprint, Encryption};
use vardo_actors::model::{Compression, Status, TargetKind, VolumeKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::{describe as text, postgres, process, volumes, TestBed};

/// A line no archive may hold in clear once encrypted (it is there, in clear, in a plain gzip
/// archive: checked below, so that the check can fail).
const MARKER: &str = "vardo-plaintext-marker-6f1c2a";

fn populate() -> String {
    format!(
        r#"set -e; cd /volume
mkdir -p docs/'odd $(name)' empty
echo '{MARKER}' > docs/marker.txt
printf 'x%.0s' $(seq 1 3000) > 'docs/odd $(name)/-rf *?[.txt'
head -c 3000000 /dev/urandom > blob.bin
chown -R 1234:4321 docs
"#
    )
}

/// A new age identity file (Debian's `age-keygen`) and its recipient.
fn age_keygen(dir: &Path) -> (PathBuf, String) {
    let path = dir.join(format!("key-{}.txt", Uuid::new_v4().simple()));
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen runs (Debian's age package; scripts/services installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("key file");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .to_owned();
    (path, recipient)
}

fn cli(bed: &TestBed, args: &[&str], identity: Option<&Path>) -> std::process::Output {
    let mut env = bed.env();
    if let Some(path) = identity {
        env.push((
            "VARDO_AGE_IDENTITY_FILE".to_owned(),
            path.display().to_string(),
        ));
    }
    process::run(args, &env)
}

async fn object(bed: &TestBed, target: Uuid, key: &str) -> Vec<u8> {
    let t = bed.store.target(target).await.expect("target");
    let storage = TargetStorage::open(&t.config, true).expect("storage");
    let mut body = storage.download(key).await.expect("download");
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// `age -d -i identity` of `sealed`, then `tar -t -v` of the result (compressed as `z`).
fn age_then_tar(sealed: &[u8], identity: &Path, compression: Compression) -> String {
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("archive.age");
    std::fs::write(&file, sealed).expect("write");
    let plain = dir.path().join("archive.tar");
    let out = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg("-o")
        .arg(&plain)
        .arg(&file)
        .output()
        .expect("age runs");
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flag = match compression {
        Compression::Gzip => "--gzip",
        Compression::Zstd => "--zstd",
    };
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", flag, "-tvf"])
        .arg(&plain)
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn encrypted_round_trip(kind: TargetKind, compression: Compression) {
    let bed = TestBed::new().await;
    let keys = tempfile::tempdir().expect("temp");
    let (identity, recipient) = age_keygen(keys.path());
    let (_, stranger) = age_keygen(keys.path());
    let (other_identity, _) = age_keygen(keys.path());
    let org = bed.organization().await;
    let app = bed
        .app(&org, "files", &[("uploads", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "uploads");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(&bed.docker, &volume, &populate())
        .await
        .expect("populate");
    let before = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");

    let config = match kind {
        TargetKind::Ssh => bed.ssh_config(),
        TargetKind::Local => bed.local_config(),
        _ => bed.bucket.target_json(Some("sealed")),
    };
    let target = bed.target(Some(org.id), kind, config).await;
    let job = bed.job(&org, Some(target), &[&app], compression).await;

    // Plain first: the marker is there in clear (what the encrypted archive must not show).
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let plain_key = rows[0].storage_path.clone().expect("key");
    assert!(!plain_key.ends_with(".age"), "{plain_key}");
    assert!(rows[0].encrypted_to.is_none());
    let plain = object(&bed, target, &plain_key).await;
    if compression == Compression::Gzip {
        assert!(
            contains(&plain, MARKER),
            "deflate keeps the marker as literals"
        );
    }

    let encryption = Encryption::Age {
        recipients: vec![stranger.clone(), recipient.clone()],
    };
    bed.store
        .set_target_encryption(target, &encryption)
        .await
        .expect("encryption on");
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let row = rows[0].clone();
    assert_eq!(row.status, Status::Success, "{}", row.log);
    let key = row.storage_path.clone().expect("key");
    assert!(
        key.ends_with(&format!(".tar.{}.age", compression.suffix())),
        "{key}"
    );
    assert_eq!(
        row.encrypted_to.as_deref(),
        Some(&[stranger.clone(), recipient.clone()][..])
    );
    assert!(row.log.contains(&fingerprint(&recipient)), "{}", row.log);

    // The stored object: an age file without the marker, of the recorded size and sha256,
    // which Debian's age opens into a tar that GNU tar lists with owners and odd names.
    let sealed = object(&bed, target, &key).await;
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    assert!(!contains(&sealed, MARKER));
    assert!(!contains(&sealed, "marker.txt"));
    assert_eq!(Some(sealed.len() as i64), row.size_bytes);
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&sealed))
    };
    assert_eq!(
        row.checksum.as_deref(),
        Some(format!("sha256:{sha}").as_str())
    );
    let listing = age_then_tar(&sealed, &identity, compression);
    assert!(listing.contains("./docs/marker.txt"), "{listing}");
    assert!(listing.contains("1234/4321"), "{listing}");
    assert!(listing.contains("-rf *?[.txt"), "{listing}");

    // The volume changes; an engine without the identity (none, or another one) refuses the
    // restore naming the fingerprints it would need, and the volume stays as it is.
    volumes::sh(
        &bed.docker,
        &volume,
        "set -e; cd /volume; rm -rf docs; echo changed > new.txt",
    )
    .await
    .expect("change");
    let changed = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    for engine_identity in [None, Some(other_identity.as_path())] {
        let out = cli(
            &bed,
            &["restore", "--backup", &row.id.to_string()],
            engine_identity,
        );
        assert!(!out.status.success(), "{}", text(&out));
        let said = text(&out);
        assert!(said.contains(&fingerprint(&recipient)), "{said}");
        assert!(said.contains(&fingerprint(&stranger)), "{said}");
        assert_eq!(
            volumes::listing(&bed.docker, &volume)
                .await
                .expect("listing"),
            changed,
            "a refused restore changed the volume"
        );
    }
    // Verification needs no identity: the stored object is checked, its content is not read.
    let out = cli(&bed, &["verify", "--backup", &row.id.to_string()], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("intact as stored"), "{}", text(&out));
    // With it: decrypted and read to the end, as a restore would.
    let out = cli(
        &bed,
        &["verify", "--backup", &row.id.to_string()],
        Some(&identity),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("tar read to its end"), "{}", text(&out));

    let out = cli(
        &bed,
        &["restore", "--backup", &row.id.to_string()],
        Some(&identity),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing"),
        before,
        "the restored volume is exactly the backed-up one"
    );
    // A drill decrypts on the fly too; without the identity it fails, naming what it needs.
    let out = cli(&bed, &["drill", "--job", &job.to_string()], Some(&identity));
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&bed, &["drill", "--job", &job.to_string()], None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&fingerprint(&recipient)),
        "{}",
        text(&out)
    );
    // The plain archive from before still restores: turning encryption on changed nothing old.
    // Its safety backup is encrypted to the target's recipients, so an engine without their
    // identity refuses (it could not undo the restore), before anything changes.
    let plain_id = rows_first(&bed, job).await.to_string();
    let out = cli(&bed, &["restore", "--backup", &plain_id], None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("could not be undone"), "{}", text(&out));
    assert_eq!(
        volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing"),
        before
    );
    let out = cli(&bed, &["restore", "--backup", &plain_id], Some(&identity));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing"),
        before
    );
    bed.cleanup().await;
}

/// The oldest successful volume backup of the job (not a restore's safety backup).
async fn rows_first(bed: &TestBed, job: Uuid) -> Uuid {
    let client = bed.db.client().await.expect("db");
    client
        .query_one(
            "SELECT id FROM backup WHERE job_id = $1 AND status = 'success'
             ORDER BY created_at LIMIT 1",
            &[&job],
        )
        .await
        .expect("row")
        .get(0)
}

#[tokio::test]
async fn s3_archives_are_encrypted_open_with_age_and_restore_only_with_the_identity() {
    encrypted_round_trip(TargetKind::S3, Compression::Gzip).await;
}

#[tokio::test]
async fn ssh_archives_are_encrypted_open_with_age_and_restore_only_with_the_identity() {
    encrypted_round_trip(TargetKind::Ssh, Compression::Zstd).await;
}

#[tokio::test]
async fn local_archives_are_encrypted_open_with_age_and_restore_only_with_the_identity() {
    encrypted_round_trip(TargetKind::Local, Compression::Gzip).await;
}

/// A Postgres dump, encrypted to an identity sealed in the database with `vardo-backup identity
/// generate` (no identity file): restored through psql; once the identity is removed, refused.
#[tokio::test]
async fn an_encrypted_dump_restores_with_a_sealed_identity_and_is_refused_once_it_is_removed() {
    let bed = TestBed::new().await;
    let keys = tempfile::tempdir().expect("temp");
    let kept = keys.path().join("kept.txt");
    let out = bed.cli(&["identity", "generate", "--out", &kept.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let recipient = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let file = std::fs::read_to_string(&kept).expect("identity written");
    assert!(file.contains("AGE-SECRET-KEY-1"));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&kept).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Listed by fingerprint and recipient, never the key; the database holds it sealed only.
    let out = bed.cli(&["identity", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&fingerprint(&recipient)),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("AGE-SECRET-KEY"), "{}", text(&out));
    let sealed: String = bed
        .db
        .client()
        .await
        .expect("db")
        .query_one("SELECT sealed FROM age_identity", &[])
        .await
        .expect("row")
        .get(0);
    assert!(!sealed.contains("AGE-SECRET-KEY"));

    let org = bed.organization().await;
    let app = bed.app(&org, "db", &[("data", VolumeKind::Postgres)]).await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(&bed, &volume).await.expect("postgres");
    let sql = |q: &'static str| {
        let (docker, pg) = (&bed.docker, pg.clone());
        async move { postgres::psql(docker, &pg, q).await.expect(q) }
    };
    sql("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1,'one'),(2,'vardo-plaintext-marker-6f1c2a');").await;
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    bed.store
        .set_target_encryption(
            target,
            &Encryption::Age {
                recipients: vec![recipient.clone()],
            },
        )
        .await
        .expect("encryption");
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let row = rows[0].clone();
    let key = row.storage_path.clone().expect("key");
    assert!(key.ends_with(".sql.zst.age"), "{key}");
    let stored = object(&bed, target, &key).await;
    assert!(!contains(&stored, MARKER) && !contains(&stored, "CREATE TABLE"));

    sql("DROP TABLE items").await;
    let out = bed.cli(&["restore", "--backup", &row.id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sql("SELECT string_agg(name, ',' ORDER BY id) FROM items")
            .await
            .trim(),
        format!("one,{MARKER}")
    );

    // Removing an identity that archives need is refused unless forced.
    let out = bed.cli(&["identity", "remove", &fingerprint(&recipient)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    let out = bed.cli(&["identity", "remove", "--force", &fingerprint(&recipient)]);
    assert!(out.status.success(), "{}", text(&out));
    sql("DROP TABLE items").await;
    let out = bed.cli(&["restore", "--backup", &row.id.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&fingerprint(&recipient)),
        "{}",
        text(&out)
    );
    let tables = sql("SELECT count(*) FROM pg_tables WHERE tablename = 'items'").await;
    assert_eq!(tables.trim(), "0", "a refused restore replayed nothing");
    // The identity file written at generation still opens the dump by hand.
    let dir = tempfile::tempdir().expect("temp");
    let f = dir.path().join("dump.age");
    std::fs::write(&f, &stored).expect("write");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | zstd -dc",
            kept.display(),
            f.display()
        ))
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(MARKER));
    bed.cleanup().await;
}

/// An incremental chain on an encrypted target: the archives and the manifests (every file
/// name) are encrypted; the incremental restores exactly; a chain begun plain does not go on
/// encrypted (a new chain starts when encryption is turned on).
#[tokio::test]
async fn an_encrypted_chain_encrypts_its_manifests_and_restores_exactly() {
    let bed = TestBed::new().await;
    let keys = tempfile::tempdir().expect("temp");
    let (identity, recipient) = age_keygen(keys.path());
    let org = bed.organization().await;
    let app = bed
        .app(&org, "files", &[("uploads", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "uploads");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(&bed.docker, &volume, &populate())
        .await
        .expect("populate");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    bed.db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE backup_job SET incremental_full_every = 5 WHERE id = $1",
            &[&job],
        )
        .await
        .expect("incremental on");
    let with_identity = |args: &[&str]| cli(&bed, args, Some(&identity));
    let run = || with_identity(&["backup", "--job", &job.to_string()]);
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    bed.store
        .set_target_encryption(
            target,
            &Encryption::Age {
                recipients: vec![recipient.clone()],
            },
        )
        .await
        .expect("encryption");
    let mut ids = Vec::new();
    for step in ["echo one > /volume/a.txt", "echo two > /volume/b.txt"] {
        volumes::sh(&bed.docker, &volume, step)
            .await
            .expect("change");
        let out = run();
        assert!(out.status.success(), "{}", text(&out));
        let id: Uuid = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("backup id");
        ids.push(id);
    }
    let first = bed.store.backup(ids[0]).await.expect("row");
    let second = bed.store.backup(ids[1]).await.expect("row");
    assert_eq!(
        first.chain.position, 0,
        "encryption on starts a new chain: {}",
        first.log
    );
    assert!(first.log.contains("encryption changed"), "{}", first.log);
    assert_eq!(second.chain.position, 1, "{}", second.log);
    for row in [&first, &second] {
        let manifest = row.chain.manifest_path.clone().expect("manifest");
        assert!(manifest.ends_with(".manifest.jsonl.gz.age"), "{manifest}");
        let bytes = object(&bed, target, &manifest).await;
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
        assert!(!contains(&bytes, "marker.txt"));
    }
    let want = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    volumes::sh(&bed.docker, &volume, "rm -rf /volume/docs /volume/a.txt")
        .await
        .expect("damage");
    let out = with_identity(&["restore", "--backup", &second.id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing"),
        want
    );
    // Verified without the identity: every archive of the chain is checked as stored; one
    // changed on the target is found.
    let out = bed.cli(&["verify", "--backup", &second.id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("and the 1 archives of its chain before it"),
        "{}",
        text(&out)
    );
    let full_key = first.storage_path.clone().expect("key");
    let mut bytes = object(&bed, target, &full_key).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let t = bed.store.target(target).await.expect("target");
    let storage = TargetStorage::open(&t.config, true).expect("storage");
    storage
        .upload(
            &full_key,
            Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(bytes))])),
        )
        .await
        .expect("replace");
    let out = bed.cli(&["verify", "--backup", &second.id.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("checksum mismatch"), "{}", text(&out));
    // Without the identity: refused before anything changes.
    let out = bed.cli(&["restore", "--backup", &second.id.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&fingerprint(&recipient)),
        "{}",
        text(&out)
    );
    bed.cleanup().await;
}
