//! Round trips through the stages, and the ways a damaged or cut archive must fail.

use super::*;
use futures::StreamExt as _;

pub(crate) fn stream_of(data: Vec<u8>) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(10_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

pub(crate) async fn collect(mut s: ByteStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

fn sample() -> Vec<u8> {
    (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect()
}

#[tokio::test]
async fn gzip_and_zstd_round_trip_with_matching_digests() {
    for compression in [Compression::Gzip, Compression::Zstd] {
        let data = sample();
        let (out, digest) = compress(stream_of(data.clone()), compression, None);
        let packed = collect(out).await.expect("compresses");
        let digest = digest.await.expect("digest");
        assert_eq!(digest.size, packed.len() as u64);
        assert_eq!(digest.sha256_hex, hex::encode(Sha256::digest(&packed)));
        let back = collect(unpack(stream_of(packed), compression.into(), Payload::Sql, digest).0)
            .await
            .expect("unpacks");
        assert_eq!(back, data);
    }
}

#[tokio::test]
async fn a_changed_byte_fails_the_unpack() {
    let (out, digest) = compress(stream_of(sample()), Compression::Gzip, Some(1));
    let mut packed = collect(out).await.expect("compresses");
    let digest = digest.await.expect("digest");
    let mid = packed.len() / 2;
    packed[mid] ^= 0xff;
    let err = collect(
        unpack(
            stream_of(packed),
            Compression::Gzip.into(),
            Payload::Sql,
            digest,
        )
        .0,
    )
    .await
    .expect_err("damaged");
    assert!(!err.to_string().is_empty());
}

#[tokio::test]
async fn a_wrong_checksum_fails_even_when_the_data_decodes() {
    let (out, digest) = compress(stream_of(sample()), Compression::Gzip, None);
    let packed = collect(out).await.expect("compresses");
    let mut wrong = digest.await.expect("digest");
    wrong.sha256_hex = "0".repeat(64);
    let err = collect(
        unpack(
            stream_of(packed),
            Compression::Gzip.into(),
            Payload::Sql,
            wrong,
        )
        .0,
    )
    .await
    .expect_err("mismatch");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[tokio::test]
async fn digest_hashes_a_stream() {
    let data = sample();
    let d = digest(stream_of(data.clone())).await.expect("digest");
    assert_eq!(d.size, data.len() as u64);
    assert_eq!(d.sha256_hex, hex::encode(Sha256::digest(&data)));
}

/// Several MiB of mixed text and noise: enough for several gzip members and zstd jobs.
fn large_sample() -> Vec<u8> {
    let mut state = 0x9e37_79b9_u32;
    (0..5 * CHUNK + 777)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if (i / 100_000) % 3 == 0 {
                state as u8
            } else {
                const TEXT: &[u8] = b"<p class=\"c1\">volume backup</p>\n";
                TEXT[i % TEXT.len()]
            }
        })
        .collect()
}

#[tokio::test]
async fn large_inputs_round_trip_at_every_level_kind() {
    let data = large_sample();
    for (compression, level) in [
        (Compression::Gzip, Some(1)),
        (Compression::Gzip, None),
        (Compression::Gzip, Some(12)),
        (Compression::Zstd, None),
        (Compression::Zstd, Some(19)),
    ] {
        let (out, digest) = compress(stream_of(data.clone()), compression, level);
        let packed = collect(out).await.expect("compresses");
        let digest = digest.await.expect("digest");
        assert!(
            packed.len() < data.len(),
            "{compression:?} {level:?} compresses"
        );
        assert_eq!(digest.size, packed.len() as u64);
        let back = collect(unpack(stream_of(packed), compression.into(), Payload::Sql, digest).0)
            .await
            .expect("unpacks");
        assert!(back == data, "{compression:?} {level:?} round trip");
    }
}

#[tokio::test]
async fn gzip_output_is_a_standard_multi_member_gzip_file() {
    use std::io::Read as _;
    let data = large_sample();
    let (out, _) = compress(stream_of(data.clone()), Compression::Gzip, None);
    let packed = collect(out).await.expect("compresses");
    // What `gzip -d` does: read member after member to the end of the file.
    let mut back = Vec::new();
    flate2::read::MultiGzDecoder::new(&packed[..])
        .read_to_end(&mut back)
        .expect("decodes");
    assert!(back == data);
    // ...and a single-member reader stops after the first member: there are several.
    let mut first = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut first)
        .expect("decodes the first member");
    assert!(!first.is_empty() && first.len() < data.len());
}

#[tokio::test]
async fn an_input_error_ends_the_compressed_stream_with_that_error() {
    for compression in [Compression::Gzip, Compression::Zstd] {
        let chunks: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from(vec![1u8; 3 * CHUNK])),
            Err(io::Error::other("docker went away")),
        ];
        let (out, digest) = compress(Box::pin(futures::stream::iter(chunks)), compression, None);
        let err = collect(out).await.expect_err("the input failed");
        assert!(err.to_string().contains("docker went away"), "{err}");
        assert!(digest.await.is_err(), "no digest for a failed stream");
    }
}

#[tokio::test]
async fn a_truncated_archive_fails_the_unpack() {
    let (out, digest) = compress(stream_of(large_sample()), Compression::Zstd, None);
    let packed = collect(out).await.expect("compresses");
    let digest = digest.await.expect("digest");
    let cut = packed[..packed.len() / 2].to_vec();
    let (out, done) = unpack(
        stream_of(cut),
        Compression::Zstd.into(),
        Payload::Sql,
        digest,
    );
    assert!(collect(out).await.is_err());
    assert!(done.await.is_err());
}

#[tokio::test]
async fn a_panicking_stage_ends_its_stream_with_an_error() {
    let (out, done) = blocking_stage(stream_of(sample()), false, |_, _| -> io::Result<()> {
        panic!("boom")
    });
    let err = collect(out).await.expect_err("crashed");
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(done.await.is_err());
}

#[tokio::test]
async fn dropping_the_output_stops_the_stage() {
    // An endless input: the stage can only end because its consumer went away.
    let endless = futures::stream::repeat_with(|| Ok(Bytes::from(vec![7u8; 64 * 1024])));
    let (mut out, digest) = compress(Box::pin(endless), Compression::Gzip, Some(1));
    assert!(out.next().await.is_some());
    drop(out);
    assert!(digest.await.is_err(), "the stage stopped without a digest");
}
