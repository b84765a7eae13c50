//! The Docker adapter (`vardo_actors::docker`) against the real Docker engine of the test bed and
//! its local helper image. No mocks. Each test makes its own volumes (named by a UUID) and removes
//! them, and any container left on them, at the end — even when it fails.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use bytes::Bytes;
use futures::{stream, StreamExt};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use vardo_actors::docker::{DockerClient, DockerError, HelperContainer};
use vardo_actors::stream::ByteStream;

const MIB: usize = 1024 * 1024;
const BIG: usize = 5 * MIB;

// ---------------------------------------------------------------------------------------------
// Test bed

fn services_env_exists() -> bool {
    vardo_integration::repo_root()
        .join(".vardo-dev/services.env")
        .exists()
}

fn helper_image() -> String {
    if services_env_exists() {
        vardo_integration::setting("VARDO_HELPER_IMAGE")
    } else {
        std::env::var("VARDO_HELPER_IMAGE").unwrap_or_else(|_| "vardo-test/helper:1".to_owned())
    }
}

async fn client() -> DockerClient {
    let host = services_env_exists().then(|| vardo_integration::setting("DOCKER_HOST"));
    let client = DockerClient::connect(host.as_deref(), &helper_image())
        .await
        .unwrap_or_else(|e| panic!("{e}; start the test bed with scripts/services"));
    client.ping().await.expect("Docker answers a ping");
    client
        .ensure_helper_image()
        .await
        .expect("the helper image is available (scripts/services builds it)");
    client
}

/// Volumes of one test: created on demand, removed on drop with any container still using them.
struct Volumes {
    docker: bollard::Docker,
    names: Vec<String>,
}

impl Volumes {
    fn new(client: &DockerClient) -> Self {
        Self {
            docker: client.raw().clone(),
            names: Vec::new(),
        }
    }

    /// A fresh, unique name (not created yet), removed at the end of the test.
    fn name(&mut self, what: &str) -> String {
        let name = format!("vardo-test-{what}-{}", Uuid::new_v4().simple());
        self.names.push(name.clone());
        name
    }
}

impl Drop for Volumes {
    fn drop(&mut self) {
        let (docker, names) = (self.docker.clone(), std::mem::take(&mut self.names));
        // Drop cannot await, and the test's runtime may be shutting down: clean up on a thread of
        // our own, and wait for it.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            runtime.block_on(async move {
                for name in names {
                    for id in containers_on(&docker, &name, true).await {
                        let force = RemoveContainerOptionsBuilder::new().force(true).build();
                        let _ = docker.remove_container(&id, Some(force)).await;
                    }
                    let force = RemoveVolumeOptionsBuilder::new().force(true).build();
                    match docker.remove_volume(&name, Some(force)).await {
                        Ok(()) => {}
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 404,
                            ..
                        }) => {}
                        Err(e) => eprintln!("could not remove test volume {name}: {e}"),
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Ids of the containers (all states) that mount `volume`; only our helpers when `any` is false.
async fn containers_on(docker: &bollard::Docker, volume: &str, any: bool) -> Vec<String> {
    let mut filters = HashMap::from([("volume", vec![volume])]);
    if !any {
        filters.insert("label", vec!["vardo-backup=helper"]);
    }
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Polls until no helper container mounts `volume` any more (or fails after a deadline).
async fn assert_helpers_gone(client: &DockerClient, volume: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = containers_on(client.raw(), volume, false).await;
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "helper containers left on {volume}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sh_ok(helper: &HelperContainer, script: &str) -> String {
    let out = helper.sh(script).await.expect("exec in the helper");
    assert_eq!(
        out.exit_code, 0,
        "script failed: {script}\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------------
// Archives

/// ~200 bytes of UTF-8, most of it non-ASCII.
fn long_non_ascii_name() -> String {
    format!("{}-日本語-ñ.txt", "é".repeat(90))
}

/// Fills a volume with the cases an archive must preserve; returns the big file's sha256.
async fn populate(client: &DockerClient, volume: &str) -> String {
    let helper = client
        .start_helper(volume, false)
        .await
        .expect("start helper");
    let name = long_non_ascii_name();
    assert!((195..=230).contains(&name.len()), "{}", name.len());
    let script = format!(
        r#"set -e
cd /volume
mkdir -p a/b/c empty/
printf 'hello\n' > a/b/c/hello.txt
touch -t 202001020304.05 a/b/c/hello.txt
ln -s b/c/hello.txt a/link
printf 'secret' > a/secret
chown 1234:1234 a/secret
chmod 0600 a/secret
printf 'non-ascii' > 'a/{name}'
head -c {BIG} /dev/urandom > big.bin
chown 999:998 .
chmod 0750 .
sha256sum big.bin | cut -d' ' -f1"#
    );
    let sha = sh_ok(&helper, &script).await.trim().to_owned();
    helper.remove().await.expect("remove helper");
    sha
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: Option<String>,
    /// sha256 of the contents of regular files.
    sha256: Option<String>,
}

async fn collect(mut stream: ByteStream) -> (Vec<u8>, usize) {
    let (mut bytes, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("archive chunk"));
        chunks += 1;
    }
    (bytes, chunks)
}

/// Path → entry of an uncompressed tar, read with the `tar` crate (PAX names included).
fn listing(tar_bytes: &[u8]) -> BTreeMap<String, Entry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entries = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let header = entry.header().clone();
        let link = entry
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned());
        let sha256 = (header.entry_type() == tar::EntryType::Regular).then(|| {
            let mut hasher = Sha256::new();
            std::io::copy(&mut entry, &mut hasher).expect("read entry");
            hex::encode(hasher.finalize())
        });
        let previous = entries.insert(
            path.clone(),
            Entry {
                kind: header.entry_type(),
                mode: header.mode().expect("mode"),
                uid: header.uid().expect("uid"),
                gid: header.gid().expect("gid"),
                size: header.size().expect("size"),
                mtime: header.mtime().expect("mtime"),
                link,
                sha256,
            },
        );
        assert!(previous.is_none(), "{path} twice in the archive");
    }
    entries
}

async fn export_listing(client: &DockerClient, volume: &str) -> BTreeMap<String, Entry> {
    let stream = client.export_volume(volume).await.expect("export volume");
    let (bytes, _) = collect(stream).await;
    listing(&bytes)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn find_app_volume_prefers_blue_then_green_then_none() {
    let client = client().await;
    let mut volumes = Volumes::new(&client);
    let app = format!("vardo-test-app-{}", Uuid::new_v4().simple());
    let blue = format!("{app}-blue_data");
    let green = format!("{app}-green_data");
    volumes.names.extend([blue.clone(), green.clone()]);

    assert_eq!(
        client.find_app_volume(&app, "data").await.expect("find"),
        None
    );

    client.create_volume(&green).await.expect("create green");
    assert!(client.volume_exists(&green).await.expect("exists"));
    assert!(!client.volume_exists(&blue).await.expect("exists"));
    assert_eq!(
        client.find_app_volume(&app, "data").await.expect("find"),
        Some(green.clone())
    );

    client.create_volume(&blue).await.expect("create blue");
    assert_eq!(
        client.find_app_volume(&app, "data").await.expect("find"),
        Some(blue.clone())
    );
    // Another logical volume of the same app is not confused with this one.
    assert_eq!(
        client.find_app_volume(&app, "dat").await.expect("find"),
        None
    );
}

#[tokio::test]
async fn export_volume_streams_a_faithful_tar_rooted_at_the_volume() {
    let client = client().await;
    let mut volumes = Volumes::new(&client);
    let volume = volumes.name("export");
    client.create_volume(&volume).await.expect("create volume");
    let big_sha = populate(&client, &volume).await;

    let stream = client.export_volume(&volume).await.expect("export");
    let (bytes, chunks) = collect(stream).await;
    // Read to its end, the stream has removed its container already: no polling needed.
    assert!(containers_on(client.raw(), &volume, false).await.is_empty());
    assert!(chunks > 1, "the archive arrived in {chunks} chunk(s)");
    let entries = listing(&bytes);

    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    let long = format!("./a/{}", long_non_ascii_name());
    let mut expected = vec![
        "./",
        "./a/",
        "./a/b/",
        "./a/b/c/",
        "./a/b/c/hello.txt",
        "./a/link",
        "./a/secret",
        long.as_str(),
        "./big.bin",
        "./empty/",
    ];
    expected.sort_unstable();
    assert_eq!(names, expected);

    // The volume root itself (a database volume's owner and mode matter).
    let root = &entries["./"];
    assert_eq!(root.kind, tar::EntryType::Directory);
    assert_eq!((root.mode & 0o7777, root.uid, root.gid), (0o750, 999, 998));
    // Docker's Go tar writer keeps the file type bits in the mode field.
    assert_eq!(root.mode & 0o170000, 0o040000);

    let dir = &entries["./empty/"];
    assert_eq!(dir.kind, tar::EntryType::Directory);
    assert_eq!(dir.mode & 0o7777, 0o755);

    let hello = &entries["./a/b/c/hello.txt"];
    assert_eq!(hello.kind, tar::EntryType::Regular);
    assert_eq!((hello.size, hello.mode & 0o7777), (6, 0o644));
    assert_eq!(hello.mtime, 1_577_934_245, "2020-01-02T03:04:05Z");

    let link = &entries["./a/link"];
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some("b/c/hello.txt"));

    let secret = &entries["./a/secret"];
    assert_eq!(secret.mode & 0o7777, 0o600);
    assert_eq!((secret.uid, secret.gid), (1234, 1234));
    assert_eq!(secret.size, 6);

    assert_eq!(entries[long.as_str()].size, 9);

    let big = &entries["./big.bin"];
    assert_eq!(big.size, BIG as u64);
    assert_eq!(big.sha256.as_deref(), Some(big_sha.as_str()));

    assert_helpers_gone(&client, &volume).await;
}

#[tokio::test]
async fn export_volume_of_a_missing_volume_says_so_and_a_dropped_export_cleans_up() {
    let client = client().await;
    let mut volumes = Volumes::new(&client);
    let missing = volumes.name("missing");
    match client.export_volume(&missing).await {
        Err(DockerError::VolumeNotFound { volume }) => assert_eq!(volume, missing),
        Err(other) => panic!("expected VolumeNotFound, got {other}"),
        Ok(_) => panic!("exported a volume that does not exist"),
    }
    assert!(!client.volume_exists(&missing).await.expect("exists"));

    let volume = volumes.name("dropped");
    client.create_volume(&volume).await.expect("create volume");
    populate(&client, &volume).await;
    let mut stream = client.export_volume(&volume).await.expect("export");
    let first = stream
        .next()
        .await
        .expect("a first chunk")
        .expect("ok chunk");
    assert!(!first.is_empty());
    assert_eq!(containers_on(client.raw(), &volume, false).await.len(), 1);
    drop(stream);
    assert_helpers_gone(&client, &volume).await;
}

#[tokio::test]
async fn put_archive_round_trip_reproduces_the_volume() {
    let client = client().await;
    let mut volumes = Volumes::new(&client);
    let source = volumes.name("source");
    let target = volumes.name("target");
    client.create_volume(&source).await.expect("create source");
    client.create_volume(&target).await.expect("create target");
    populate(&client, &source).await;
    let original = export_listing(&client, &source).await;

    // Straight from one volume into the other: nothing buffered in between.
    let helper = client.start_helper(&target, false).await.expect("helper");
    let archive = client.export_volume(&source).await.expect("export source");
    helper
        .put_archive("/volume", archive)
        .await
        .expect("put archive");
    helper.remove().await.expect("remove helper");

    let restored = export_listing(&client, &target).await;
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>()
    );
    for (path, entry) in &original {
        assert_eq!(&restored[path], entry, "{path}");
    }

    // A failing input stream is the caller's failure, reported as such.
    let helper = client.start_helper(&target, false).await.expect("helper");
    let broken: ByteStream = stream::iter([
        Ok(Bytes::from(vec![0_u8; 512])),
        Err(std::io::Error::other("source went away")),
    ])
    .boxed();
    match helper.put_archive("/volume", broken).await {
        Err(DockerError::Input(e)) => assert_eq!(e.to_string(), "source went away"),
        other => panic!("expected DockerError::Input, got {other:?}"),
    }
    helper.remove().await.expect("remove helper");
    assert_helpers_gone(&client, &source).await;
    assert_helpers_gone(&client, &target).await;
}

#[tokio::test]
async fn exec_streams_stdin_and_stdout_and_reports_failures() {
    let client = client().await;
    let mut volumes = Volumes::new(&client);
    let volume = volumes.name("exec");
    client.create_volume(&volume).await.expect("create volume");
    let helper = client.start_helper(&volume, false).await.expect("helper");
    let id = helper.id().to_owned();
    let cmd = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];

    // exec_write: `cat` echoes its input, fed in several chunks, then sees EOF.
    let input: ByteStream = stream::iter(["hello ", "from ", "stdin\n"])
        .map(|s| Ok(Bytes::from_static(s.as_bytes())))
        .boxed();
    let out = client
        .exec_write(&id, vec!["cat".to_owned()], Vec::new(), input)
        .await
        .expect("exec cat");
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "hello from stdin\n", "")
    );

    // exec_write: a failing command gives its exit code and stderr; env reaches it.
    let input: ByteStream = stream::iter([Ok(Bytes::from_static(b"ignored"))]).boxed();
    let out = client
        .exec_write(
            &id,
            cmd("cat >/dev/null; echo \"no $WHAT\" >&2; exit 3"),
            vec!["WHAT=luck".to_owned()],
            input,
        )
        .await
        .expect("exec failing");
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "", "no luck\n")
    );

    // exec_write: a process that exits without reading 20 MiB of input does not hang us.
    let input: ByteStream =
        stream::iter((0..320).map(|_| Ok(Bytes::from(vec![b'x'; 64 * 1024])))).boxed();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        client.exec_write(&id, cmd("exit 5"), Vec::new(), input),
    )
    .await
    .expect("exec_write returns when the process exits early")
    .expect("exec early exit");
    assert_eq!(out.exit_code, 5);

    // exec_write: captured stdout is capped (first and last 32 KiB kept).
    let input: ByteStream =
        stream::iter((0..4).map(|i| Ok(Bytes::from(vec![b'a' + i; 64 * 1024])))).boxed();
    let out = client
        .exec_write(&id, vec!["cat".to_owned()], Vec::new(), input)
        .await
        .expect("exec big cat");
    assert_eq!(out.exit_code, 0);
    assert!(out.stdout.starts_with(&"a".repeat(32 * 1024)));
    assert!(out.stdout.ends_with(&"d".repeat(32 * 1024)));
    assert!(
        out.stdout.contains("196608 bytes omitted"),
        "{}",
        &out.stdout[32768..32868]
    );

    // exec_write: a failing input is DockerError::Input.
    let input: ByteStream = stream::iter([
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("download failed")),
    ])
    .boxed();
    match client
        .exec_write(&id, vec!["cat".to_owned()], Vec::new(), input)
        .await
    {
        Err(DockerError::Input(e)) => assert_eq!(e.to_string(), "download failed"),
        other => panic!("expected DockerError::Input, got {other:?}"),
    }

    // exec_read: stdout streams (8 MiB, more than any cap), stderr and exit code come after.
    let (mut stdout, handle) = client
        .exec_read(
            &id,
            cmd("head -c 8388608 /dev/zero; echo \"done $N\" >&2"),
            vec!["N=1".to_owned()],
        )
        .await
        .expect("exec_read");
    let mut total = 0;
    while let Some(chunk) = stdout.next().await {
        let chunk = chunk.expect("stdout chunk");
        assert!(chunk.iter().all(|b| *b == 0));
        total += chunk.len();
    }
    assert_eq!(total, 8 * MIB);
    let out = handle.finish().await.expect("finish");
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "done 1\n")
    );

    // exec_read: a failing command.
    let (stdout, handle) = client
        .exec_read(
            &id,
            cmd("echo partial; echo 'bad thing' >&2; exit 7"),
            Vec::new(),
        )
        .await
        .expect("exec_read failing");
    let (bytes, _) = collect(stdout).await;
    assert_eq!(bytes, b"partial\n");
    let out = handle.finish().await.expect("finish");
    assert_eq!((out.exit_code, out.stderr.as_str()), (7, "bad thing\n"));

    // A container that does not exist is named as such.
    match client
        .exec_read("vardo-test-no-such-container", cmd("true"), Vec::new())
        .await
    {
        Err(DockerError::ContainerNotFound { container }) => {
            assert_eq!(container, "vardo-test-no-such-container")
        }
        Err(other) => panic!("expected ContainerNotFound, got {other}"),
        Ok(_) => panic!("exec in a missing container succeeded"),
    }

    helper.remove().await.expect("remove helper");
    assert_helpers_gone(&client, &volume).await;
}

#[tokio::test]
async fn container_using_volume_finds_the_running_app_container_not_helpers() {
    let client = client().await;
    let mut volumes = Volumes::new(&client);
    let volume = volumes.name("app");
    client.create_volume(&volume).await.expect("create volume");

    let helper = client.start_helper(&volume, true).await.expect("helper");
    assert_eq!(
        client
            .container_using_volume(&volume)
            .await
            .expect("lookup"),
        None,
        "helpers are not app containers"
    );

    // An "app" container: no helper label, the volume at some other path, an environment.
    let name = format!("vardo-test-app-{}", Uuid::new_v4().simple());
    let body = ContainerCreateBody {
        image: Some(client.helper_image().to_owned()),
        cmd: Some(vec!["sleep".to_owned(), "3600".to_owned()]),
        env: Some(vec![
            "POSTGRES_USER=shop".to_owned(),
            "POSTGRES_PASSWORD=a=b".to_owned(),
        ]),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/var/lib/postgresql/data".to_owned()),
                source: Some(volume.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = client
        .raw()
        .create_container(Some(options), body)
        .await
        .expect("create app container");
    // Not running yet: not a candidate.
    assert_eq!(
        client
            .container_using_volume(&volume)
            .await
            .expect("lookup"),
        None
    );
    client
        .raw()
        .start_container(&created.id, None)
        .await
        .expect("start app container");

    let found = client
        .container_using_volume(&volume)
        .await
        .expect("lookup")
        .expect("the app container is found");
    assert_eq!(found.id, created.id);
    assert_eq!(found.name, name);
    assert_eq!(found.env["POSTGRES_USER"], "shop");
    assert_eq!(found.env["POSTGRES_PASSWORD"], "a=b");

    helper.remove().await.expect("remove helper");
    // `Volumes` removes the app container with the volume.
}
