//! Recipients, keyrings, and the encrypted pipeline's round trips and refusals.

use std::sync::Arc;

use secrecy::ExposeSecret as _;

use super::*;
use crate::codec::tests::{collect, stream_of};
use crate::codec::{self, Format, Payload};
use crate::model::Compression;

/// The public key of an ssh-ed25519 test key (no private key needed to encrypt).
const SSH_ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB/VHtZlwD+C alice@example";

fn keyring_and_recipient() -> (Keyring, String) {
    let (text, recipient) = Keyring::generate();
    let keyring = Keyring::parse(text.expose_secret(), "test").expect("generated identity parses");
    (keyring, recipient)
}

/// `sample()` packed with gzip and encrypted to `recipient`, and its digest.
async fn seal(recipient: String) -> (Vec<u8>, codec::Digest) {
    let recipients = Arc::new(Recipients::from_texts(&[recipient]).expect("parse"));
    let (out, digest) = codec::pack(
        stream_of(sample()),
        Compression::Gzip,
        None,
        Some(recipients),
    );
    let sealed = collect(out).await.expect("packs");
    (sealed, digest.await.expect("digest"))
}

fn sample() -> Vec<u8> {
    (0..400_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes())
        .collect()
}

#[test]
fn recipients_parse_to_their_canonical_form_and_bad_ones_are_named() {
    let (_, age1) = keyring_and_recipient();
    let setting = Encryption::Age {
        recipients: vec![format!("  {age1} "), SSH_ED25519.to_owned()],
    };
    let canonical = setting.canonical().expect("valid");
    let Encryption::Age { recipients } = &canonical else {
        panic!("still age: {canonical:?}");
    };
    assert_eq!(recipients[0], age1);
    // The comment is dropped: the key alone is the recipient.
    assert!(!recipients[1].contains("alice"), "{recipients:?}");
    assert!(recipients[1].starts_with("ssh-ed25519 AAAA"));

    for (bad, says) in [
        (vec![], "at least one recipient"),
        (vec!["age1nope".to_owned()], "recipients[0]"),
        (vec!["$(rm -rf /)".to_owned()], "neither an age recipient"),
        (vec![age1.clone(), age1.clone()], "named twice"),
        (vec!["ssh-ed25519".to_owned()], "not an ssh public key"),
        (vec![age1.clone(); MAX_RECIPIENTS + 1], "at most"),
        (
            vec![format!("{SSH_ED25519} ssh-ed25519 AAAAC3Nza")],
            "more than one key",
        ),
        (vec![format!("{SSH_ED25519} {age1}")], "more than one key"),
        (vec![format!("{SSH_ED25519}\nssh-rsa AAAA")], "one line"),
        (vec![format!("age1{}", "q".repeat(5000))], "…"),
    ] {
        let err = Encryption::Age { recipients: bad }
            .canonical()
            .expect_err("refused");
        assert!(err.contains(says), "{err} should say {says}");
    }
    assert_eq!(Encryption::None.canonical(), Ok(Encryption::None));
}

#[test]
fn the_setting_reads_as_the_api_writes_it_and_refuses_unknown_fields() {
    let none: Encryption = serde_json::from_str(r#"{"type":"none"}"#).expect("none");
    assert_eq!(none, Encryption::None);
    let age: Encryption =
        serde_json::from_str(r#"{"type":"age","recipients":["age1x"]}"#).expect("age");
    assert!(matches!(age, Encryption::Age { .. }));
    for bad in [
        r#"{"type":"gpg"}"#,
        r#"{"type":"age","recipients":[],"identity":"AGE-SECRET-KEY-1"}"#,
        r#"{"type":"age"}"#,
    ] {
        assert!(serde_json::from_str::<Encryption>(bad).is_err(), "{bad}");
    }
    assert_eq!(Encryption::from_column(None), Ok(Encryption::None));
    assert_eq!(
        Encryption::from_column(age.to_column()).expect("round trip"),
        age
    );
    assert!(Encryption::None.to_column().is_none());
}

#[test]
fn a_keyring_opens_what_it_holds_and_names_what_it_lacks() {
    let (keyring, mine) = keyring_and_recipient();
    let (_, theirs) = keyring_and_recipient();
    assert_eq!(keyring.recipients(), vec![mine.clone()]);
    assert_eq!(keyring.fingerprints(), vec![fingerprint(&mine)]);
    assert!(keyring.opens(&[theirs.clone(), mine.clone()]).is_ok());
    let why = keyring
        .opens(std::slice::from_ref(&theirs))
        .expect_err("lacks it");
    assert!(why.contains(&fingerprint(&theirs)), "{why}");
    // What the engine holds (other organizations' identities too) is not told.
    assert!(!why.contains(&fingerprint(&mine)), "{why}");
    let why = Keyring::default().opens(&[theirs]).expect_err("empty");
    assert!(why.contains("VARDO_AGE_IDENTITY_FILE"), "{why}");
    assert_eq!(fingerprint(&mine).len(), 16);
}

#[test]
fn identity_files_parse_with_comments_and_errors_never_quote_the_key() {
    let (a, ra) = Keyring::generate();
    let (b, rb) = Keyring::generate();
    let text = format!(
        "# two identities\n\n{}\n{}",
        a.expose_secret(),
        b.expose_secret()
    );
    let keyring = Keyring::parse(&text, "file").expect("parses");
    assert_eq!(keyring.recipients(), vec![ra.clone(), rb]);
    assert_eq!(keyring.texts().len(), 2);
    let merged = keyring.clone().merged(&keyring);
    assert_eq!(merged.recipients().len(), 2, "a recipient is held once");

    let secret_line = a
        .expose_secret()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("key line")
        .to_owned();
    let damaged = format!("{}X\n", &secret_line[..secret_line.len() - 1]);
    let err = Keyring::parse(&damaged, "key.txt").expect_err("damaged key");
    assert!(err.contains("key.txt, line 1"), "{err}");
    assert!(
        !err.contains(&secret_line[20..]),
        "the error quotes the key: {err}"
    );
    assert!(Keyring::parse("# nothing\n", "f")
        .expect_err("empty")
        .contains("holds no identity"));
    assert!(
        format!("{keyring:?}").len() < 60,
        "Debug shows fingerprints only"
    );
    assert!(!format!("{keyring:?}").contains("AGE-SECRET"));
}

#[tokio::test]
async fn an_encrypted_pack_unpacks_with_the_identity_for_gzip_and_zstd() {
    let (keyring, recipient) = keyring_and_recipient();
    let (_, other) = keyring_and_recipient();
    let recipients = Arc::new(Recipients::from_texts(&[other, recipient]).expect("parse"));
    let keyring = Arc::new(keyring);
    for compression in [Compression::Gzip, Compression::Zstd] {
        let data = sample();
        let (out, digest) = codec::pack(
            stream_of(data.clone()),
            compression,
            None,
            Some(recipients.clone()),
        );
        let sealed = collect(out).await.expect("packs");
        let digest = digest.await.expect("digest");
        assert_eq!(
            digest.size,
            sealed.len() as u64,
            "digest of the stored bytes"
        );
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        // Neither plaintext nor the compressed stream's magic survives.
        assert!(!sealed.windows(8).any(|w| w == &data[4000..4008]));
        let format = Format {
            compression,
            keyring: Some(keyring.clone()),
        };
        let back = collect(codec::unpack(stream_of(sealed), format, Payload::Sql, digest).0)
            .await
            .expect("unpacks");
        assert_eq!(back, data);
    }
}

#[tokio::test]
async fn encrypted_archives_refuse_a_wrong_identity_a_changed_byte_and_a_cut_end() {
    let (_, recipient) = keyring_and_recipient();
    let (stranger, _) = keyring_and_recipient();
    let (sealed, digest) = seal(recipient).await;
    let unpack = |bytes: Vec<u8>, keyring: Keyring| {
        let format = Format {
            compression: Compression::Gzip,
            keyring: Some(Arc::new(keyring)),
        };
        collect(codec::unpack(stream_of(bytes), format, Payload::Sql, digest.clone()).0)
    };

    let err = unpack(sealed.clone(), stranger)
        .await
        .expect_err("wrong identity");
    assert!(
        err.to_string().contains("no identity of this engine"),
        "{err}"
    );
    let err = unpack(sealed.clone(), Keyring::default())
        .await
        .expect_err("no identity");
    assert!(err.to_string().contains("VARDO_AGE_IDENTITY_FILE"), "{err}");

    // A changed byte (in the header, in the payload) and a cut end are reported as what they
    // are: the bytes are not those recorded.
    let (keyring, recipient) = keyring_and_recipient();
    let (sealed, digest) = seal(recipient).await;
    for damage in [30, sealed.len() / 2, sealed.len() - 3] {
        let mut bad = sealed.clone();
        bad[damage] ^= 0x01;
        let format = Format {
            compression: Compression::Gzip,
            keyring: Some(Arc::new(keyring.clone())),
        };
        let err = collect(codec::unpack(stream_of(bad), format, Payload::Sql, digest.clone()).0)
            .await
            .expect_err("damaged");
        assert!(
            err.to_string().contains("checksum mismatch"),
            "at {damage}: {err}"
        );
    }
    let format = Format {
        compression: Compression::Gzip,
        keyring: Some(Arc::new(keyring)),
    };
    let cut = sealed[..sealed.len() - 100].to_vec();
    let err = collect(codec::unpack(stream_of(cut), format, Payload::Sql, digest).0)
        .await
        .expect_err("cut");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[test]
fn keys_of_encrypted_objects_name_their_compression_and_their_manifest() {
    assert_eq!(
        Compression::of_key("a/b/t.tar.gz.age"),
        Some(Compression::Gzip)
    );
    assert_eq!(
        Compression::of_key("a/b/t.sql.zst.age"),
        Some(Compression::Zstd)
    );
    assert_eq!(Compression::of_key("a/b/t.tar.age"), None);
    assert_eq!(
        crate::chain::manifest_key("a/t.incr.tar.zst.age", Compression::Zstd),
        "a/t.incr.manifest.jsonl.zst.age"
    );
    assert_eq!(
        crate::chain::manifest_key("a/t.full.tar.gz", Compression::Gzip),
        "a/t.full.manifest.jsonl.gz"
    );
}
