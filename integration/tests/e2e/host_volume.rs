//! Reading file volumes from their folders on the Docker host (`VARDO_READ_VOLUMES_FROM_HOST`):
//! the archive holds what Docker's archive API would, entry for entry; a backup made that way
//! restores the volume exactly; a volume whose files do not live in a host folder is read through
//! Docker as before.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;

use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use vardo_actors::docker::DockerClient;
use vardo_actors::model::{Compression, Status, TargetKind, VolumeKind};
use vardo_integration::{describe, volumes, TestBed};

/// Every kind of entry a volume can hold, with owners, modes and times worth keeping.
const POPULATE: &str = r#"set -e; cd /volume
mkdir -p data/deep/er empty sticky
chmod 1777 sticky && chmod 0700 data/deep
printf 'hello\n' > data/deep/er/hello.txt && touch -t 202001020304.05 data/deep/er/hello.txt
printf 'secret' > data/secret && chown 1234:5678 data/secret && chmod 0600 data/secret
printf '#!/bin/sh\n' > tool && chmod 4755 tool
: > zero-bytes
head -c 3000000 /dev/urandom > random.bin
ln random.bin hard-1 && ln random.bin data/hard-2
ln -s deep/er/hello.txt data/inside && ln -s ../../../elsewhere data/deep/escapes
ln -s /run/app.sock absolute && chown -h 1234:1234 absolute
mkfifo pipe && mknod null-device c 1 3
n=$(printf 'ünïcødé-%.0s' 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16); echo long > "data/$n"
chown 999:998 . && chmod 0750 .
"#;

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    link: Option<String>,
    device: Option<(u32, u32)>,
    /// sha256 of a file's contents; a hard link counts as the file it links to.
    sha256: Option<String>,
}

/// Name (without `./` and a trailing `/`) → entry, for a tar from either reader.
fn listing(tar: &[u8]) -> BTreeMap<String, Entry> {
    let mut archive = tar::Archive::new(tar);
    let mut out = BTreeMap::new();
    let mut contents: HashMap<String, String> = HashMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let header = entry.header().clone();
        let raw = entry.path().expect("path").to_string_lossy().into_owned();
        let name = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let link = entry
            .link_name()
            .expect("link")
            .map(|l| l.to_string_lossy().trim_start_matches("./").to_owned());
        let kind = header.entry_type();
        let (kind_name, sha256) = if kind.is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            let sha = hex::encode(Sha256::digest(&data));
            contents.insert(name.clone(), sha.clone());
            ("file", Some(sha))
        } else if kind.is_hard_link() {
            let target = link.clone().expect("hard link target");
            ("file", Some(contents[&target].clone()))
        } else if kind.is_dir() {
            ("dir", None)
        } else if kind.is_symlink() {
            ("symlink", None)
        } else if kind.is_fifo() {
            ("fifo", None)
        } else if kind.is_character_special() {
            ("char", None)
        } else {
            ("other", None)
        };
        let device = kind.is_character_special().then(|| {
            (
                header.device_major().expect("major").expect("major"),
                header.device_minor().expect("minor").expect("minor"),
            )
        });
        let entry = Entry {
            kind: kind_name,
            // Docker's headers also carry the file type bits; the entry type says that.
            mode: header.mode().expect("mode") & 0o7777,
            owner: (header.uid().expect("uid"), header.gid().expect("gid")),
            mtime: header.mtime().expect("mtime"),
            link: kind.is_symlink().then_some(link).flatten(),
            device,
            sha256,
        };
        assert!(out.insert(name.clone(), entry).is_none(), "{name} twice");
    }
    out
}

async fn docker_tar(docker: &DockerClient, volume: &str) -> Vec<u8> {
    let mut stream = docker.export_volume(volume).await.expect("export");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    bytes
}

#[tokio::test]
async fn the_host_folder_gives_the_archive_docker_gives() {
    let bed = TestBed::new().await;
    let volume = bed.track_volume(&format!("hostread-{}", bed.id));
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(&bed.docker, &volume, POPULATE)
        .await
        .expect("populate");

    let folder = bed
        .docker
        .host_folder(&volume)
        .await
        .expect("inspect")
        .expect("a local volume has a host folder");
    let ours = tokio::task::spawn_blocking(move || {
        let mut tar = Vec::new();
        vardo_actors::host_volume::write_tar(&folder, &mut tar).map(|report| (tar, report))
    })
    .await
    .expect("join")
    .expect("write the tar");
    let (ours, report) = ours;
    let docker = listing(&docker_tar(&bed.docker, &volume).await);
    let host = listing(&ours);
    assert_eq!(
        (report.vanished, report.changed, report.sockets_skipped),
        (0, 0, 0)
    );
    for (name, entry) in &docker {
        assert_eq!(host.get(name), Some(entry), "{name}");
    }
    assert_eq!(
        host.keys().collect::<Vec<_>>(),
        docker.keys().collect::<Vec<_>>()
    );
    // The cases above are all there, so the comparison covered them.
    for name in [
        "",
        "pipe",
        "null-device",
        "data/hard-2",
        "data/deep/escapes",
        "sticky",
    ] {
        assert!(
            host.contains_key(name),
            "{name:?} missing: {:?}",
            host.keys()
        );
    }
    assert_eq!(host["null-device"].device, Some((1, 3)));
    bed.cleanup().await;
}

const FROM_HOST: &[(&str, &str)] = &[("VARDO_READ_VOLUMES_FROM_HOST", "true")];

#[tokio::test]
async fn a_backup_read_from_the_host_folder_restores_the_volume_exactly() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "hostfiles", &[("files", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(&bed.docker, &volume, POPULATE)
        .await
        .expect("populate");
    let before = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;

    let (out, rows) = bed.run_job_with(job, FROM_HOST).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Status::Success, "{}", rows[0].log);
    assert!(
        rows[0].log.contains("from its folder on the Docker host"),
        "{}",
        rows[0].log
    );

    volumes::sh(
        &bed.docker,
        &volume,
        "rm -rf /volume/* && echo other > /volume/x",
    )
    .await
    .expect("mutate");
    let out = bed.cli(&["restore", "--backup", &rows[0].id.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    let after = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    assert_eq!(
        after, before,
        "the restored volume differs from the original"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_volume_with_driver_options_is_read_through_docker_and_says_why() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "tmpfsapp", &[("scratch", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "scratch");
    let request = bollard::models::VolumeCreateRequest {
        name: Some(volume.clone()),
        driver_opts: Some(HashMap::from([
            ("type".to_owned(), "tmpfs".to_owned()),
            ("device".to_owned(), "tmpfs".to_owned()),
        ])),
        ..Default::default()
    };
    bed.docker
        .raw()
        .create_volume(request)
        .await
        .expect("tmpfs volume");
    assert_eq!(
        bed.docker.host_folder(&volume).await.expect("inspect"),
        None
    );
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let (out, rows) = bed.run_job_with(job, FROM_HOST).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(rows[0].status, Status::Success, "{}", rows[0].log);
    assert!(
        rows[0]
            .log
            .contains("through the Docker archive API (its driver or options"),
        "{}",
        rows[0].log
    );
    bed.cleanup().await;
}
