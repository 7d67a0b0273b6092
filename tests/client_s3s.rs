//! The S3 client against a real s3s-fs, which verifies SigV4/SigV2
//! signatures and Content-MD5: every signing path, listings, multipart,
//! copies, batch deletes, odd keys, typed errors and retries.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bladefs::s3::config::{PayloadSigning, SignatureVersion};
use bladefs::s3::*;
use bytes::Bytes;
use common::{Kind, data, md5_hex, proxy};
use futures::{StreamExt, TryStreamExt};

const MIB: usize = 1024 * 1024;

/// Keys whose every character must survive signing, URL encoding and XML.
fn odd_keys() -> Vec<String> {
    vec![
        "with space".to_string(),
        "plus+sign".to_string(),
        "percent%41literal".to_string(),
        "question?mark".to_string(),
        "hash#tag".to_string(),
        "tilde~".to_string(),
        "equals=and&amp".to_string(),
        "unicode/é日本語🙂".to_string(),
        "semi;colon,comma'quote\"dq".to_string(),
        "brackets[]{}()!$*@".to_string(),
        "dir with space/nested+dir/file".to_string(),
        // s3s-fs names metadata files after the base64 of the whole key, so
        // it cannot hold keys beyond about 130 bytes; the 1024-byte key is
        // tested on moto (client_moto.rs).
        format!("long/{}", "k".repeat(120)),
    ]
}

async fn put_many(client: &Arc<S3Client>, bucket: &str, keys: &[String]) {
    futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let client = client.clone();
            let bucket = bucket.to_string();
            async move {
                client
                    .put_object(&bucket, &key, Bytes::from(key.clone().into_bytes()))
                    .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("seed objects");
}

async fn list_all_v2(
    client: &S3Client,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: Option<u32>,
) -> (Vec<String>, Vec<String>, usize) {
    let mut params = ListObjectsParams {
        prefix: prefix.to_string(),
        delimiter: delimiter.map(str::to_string),
        max_keys,
        ..Default::default()
    };
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = client
            .list_objects_v2(bucket, &params)
            .await
            .expect("list v2");
        pages += 1;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        match page.next_continuation_token {
            Some(t) => params.continuation_token = Some(t),
            None => return (keys, prefixes, pages),
        }
    }
}

async fn list_all_v1(
    client: &S3Client,
    bucket: &str,
    delimiter: Option<&str>,
    max_keys: Option<u32>,
) -> (Vec<String>, Vec<String>, usize) {
    let mut params = ListObjectsV1Params {
        delimiter: delimiter.map(str::to_string),
        max_keys,
        ..Default::default()
    };
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = client
            .list_objects_v1(bucket, &params)
            .await
            .expect("list v1");
        pages += 1;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        match page.next_marker {
            Some(m) => params.marker = Some(m),
            None => return (keys, prefixes, pages),
        }
    }
}

on_servers!(every_sigv4_payload_mode_and_sigv2_are_accepted: s3s => Kind::S3sFs, rgw => Kind::CephRgw);
async fn every_sigv4_payload_mode_and_sigv2_are_accepted(kind: Kind) {
    let server = common::start(kind);
    let (_, bucket) = server.client_and_bucket("signing").await;
    let body = Bytes::from(data(200_000, 1));
    let modes = [
        (SignatureVersion::V4, PayloadSigning::Sha256),
        (SignatureVersion::V4, PayloadSigning::Unsigned),
        (SignatureVersion::V4, PayloadSigning::Crc32c),
        (
            SignatureVersion::V4,
            PayloadSigning::Chunked {
                chunk_size: 64 * 1024,
            },
        ),
        (SignatureVersion::V2, PayloadSigning::Sha256),
    ];
    for (signature, payload) in modes {
        let mut cfg = server.config();
        cfg.signature = signature;
        cfg.payload_signing = payload;
        let client = server.client_with(cfg);
        let key = format!("obj {signature:?} {payload:?}");
        client
            .put_object(&bucket, &key, body.clone())
            .await
            .unwrap();
        let got = client
            .get_object(&bucket, &key, &GetObjectParams::default())
            .await
            .unwrap();
        assert_eq!(got.body, body, "{key}");
        // Requests with a query string, a range header and an XML body.
        let page = client
            .list_objects_v2(
                &bucket,
                &ListObjectsParams {
                    prefix: key.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.objects.len(), 1, "{key}");
        let part = client
            .get_object(
                &bucket,
                &key,
                &GetObjectParams {
                    range: Some(10..20),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(&part.body[..], &body[10..20]);
        // Multipart with the same signing: upload part bodies are signed too.
        let upload = client.create_multipart_upload(&bucket, &key).await.unwrap();
        let etag = client
            .upload_part(&bucket, &key, &upload, 1, body.clone())
            .await
            .unwrap();
        client
            .complete_multipart_upload(
                &bucket,
                &key,
                &upload,
                &[CompletedPart {
                    part_number: 1,
                    etag,
                }],
            )
            .await
            .unwrap();
        let out = client
            .delete_objects(&bucket, &[ObjectIdentifier::key(&key)])
            .await
            .unwrap();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }
}

// Every way the client guards a body (the signed SHA-256, the signed
// chunks, Content-MD5 with UNSIGNED-PAYLOAD over HTTP, the CRC32C
// checksum) is checked by these servers: a byte changed on the way is
// refused, for PUT and for upload part, and nothing is stored; the same
// requests unchanged are accepted. The mount's check of a server's
// CRC32C answers accordingly, and leaves nothing behind.
on_servers!(a_body_changed_on_the_way_is_refused_whatever_guards_it: garage => Kind::Garage, rgw => Kind::CephRgw);
async fn a_body_changed_on_the_way_is_refused_whatever_guards_it(kind: Kind) {
    let server = tokio::task::spawn_blocking(move || common::start(kind))
        .await
        .expect("start");
    let (_, bucket) = server.client_and_bucket("digests").await;
    let body = Bytes::from(data(100_000, 3));
    let proxy = proxy::start(server.addr, proxy::Fault::CorruptBody, usize::MAX).await;
    for payload in [
        PayloadSigning::Sha256,
        PayloadSigning::Unsigned,
        PayloadSigning::Crc32c,
        PayloadSigning::Chunked {
            chunk_size: 64 * 1024,
        },
    ] {
        let mut cfg = server.config();
        cfg.payload_signing = payload;
        let direct = server.client_with(cfg.clone());
        cfg.endpoint = proxy.endpoint.clone();
        cfg.retry.max_attempts = 1;
        let corrupting = server.client_with(cfg);
        let key = format!("{payload:?}");
        // Ceph RGW 16.2 ignores the CRC32C checksum (the mount refuses
        // `--checksum-crc32c` there, see below).
        if payload == PayloadSigning::Crc32c && kind == Kind::CephRgw {
            continue;
        }
        corrupting
            .put_object(&bucket, &key, body.clone())
            .await
            .expect_err("a changed PUT body is refused");
        let missing = direct
            .head_object(&bucket, &key, None)
            .await
            .expect_err("nothing stored");
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{key}: {missing}");
        let upload = direct.create_multipart_upload(&bucket, &key).await.unwrap();
        corrupting
            .upload_part(&bucket, &key, &upload, 1, body.clone())
            .await
            .expect_err("a changed part is refused");
        let etag = direct
            .upload_part(&bucket, &key, &upload, 1, body.clone())
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let part = CompletedPart {
            part_number: 1,
            etag,
        };
        direct
            .complete_multipart_upload(&bucket, &key, &upload, &[part])
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        direct
            .put_object(&bucket, &format!("{key} put"), body.clone())
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        for k in [key.clone(), format!("{key} put")] {
            let got = direct
                .get_object(&bucket, &k, &GetObjectParams::default())
                .await
                .unwrap();
            assert_eq!(got.body, body, "{k}");
        }
    }
    let mut cfg = server.config();
    cfg.payload_signing = PayloadSigning::Crc32c;
    let client = server.client_with(cfg);
    let checked = client.checks_crc32c(&bucket, "probe").await.unwrap();
    assert_eq!(checked, kind == Kind::Garage, "{kind:?}");
    let gone = client.head_object(&bucket, "probe", None).await;
    assert_eq!(gone.unwrap_err().kind(), ErrorKind::NotFound);
}

on_servers!(wrong_secret_is_refused_and_never_shown: s3s => Kind::S3sFs, rgw => Kind::CephRgw);
async fn wrong_secret_is_refused_and_never_shown(kind: Kind) {
    let server = common::start(kind);
    let (_, bucket) = server.client_and_bucket("authcheck").await;
    for signature in [SignatureVersion::V4, SignatureVersion::V2] {
        let mut cfg = server.config();
        cfg.signature = signature;
        let wrong_secret = "WRONGSECRETwrongsecretWRONGSECRETwrongsec";
        let client = Arc::new(
            S3Client::new(cfg, Credentials::new(&server.access_key, wrong_secret)).unwrap(),
        );
        let err = client
            .put_object(&bucket, "x", Bytes::from_static(b"data"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{signature:?}: {err}");
        assert_eq!(
            err.code(),
            Some(&S3ErrorCode::SignatureDoesNotMatch),
            "{signature:?}: {err}"
        );
        let shown = format!("{err} {err:?} {client:?}");
        assert!(!shown.contains(wrong_secret), "{shown}");
        // Refused requests are not retried: a wrong key stays wrong.
        assert_eq!(client.stats().snapshot().get(Op::PutObject).requests, 1);
    }
    // An unknown access key is refused as well.
    let client = Arc::new(
        S3Client::new(server.config(), Credentials::new("NOSUCHKEY", "whatever")).unwrap(),
    );
    let err = client.list_buckets().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
}

#[tokio::test]
async fn buckets() {
    let server = common::start(Kind::S3sFs);
    let client = server.client();
    client.create_bucket("alpha").await.unwrap();
    client.create_bucket("beta").await.unwrap();
    let mut names: Vec<String> = client
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    names.sort(); // s3s-fs lists in directory order
    assert_eq!(names, ["alpha", "beta"]);
    client.head_bucket("alpha").await.unwrap();
    let err = client.head_bucket("missing").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSuchBucket, "{err}");
    // s3s-fs answers an empty LocationConstraint.
    assert_eq!(client.get_bucket_location("alpha").await.unwrap(), None);

    client
        .put_object("beta", "k", Bytes::from_static(b"x"))
        .await
        .unwrap();
    // (s3s-fs deletes non-empty buckets; BucketNotEmpty is tested on moto.)
    client.delete_object("beta", "k", None).await.unwrap();
    client.delete_bucket("beta").await.unwrap();
    let names: Vec<String> = client
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["alpha"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_paginate_past_1000_keys_v1_and_v2() {
    let server = common::start(Kind::S3sFs);
    let (client, bucket) = server.client_and_bucket("pages").await;
    // 1500 files at the top, 30 directories of 10 files each.
    let mut keys: Vec<String> = (0..1500).map(|i| format!("f{i:05}")).collect();
    for d in 0..30 {
        for f in 0..10 {
            keys.push(format!("dir{d:02}/g{f}"));
        }
    }
    put_many(&client, &bucket, &keys).await;
    let mut all = keys.clone();
    all.sort();

    let (listed, prefixes, pages) = list_all_v2(&client, &bucket, "", None, None).await;
    assert_eq!(listed, all);
    assert!(prefixes.is_empty());
    assert_eq!(pages, 2, "1800 keys take two pages of 1000");

    let (listed, prefixes, pages) = list_all_v2(&client, &bucket, "", Some("/"), Some(250)).await;
    assert_eq!(listed.len(), 1500);
    assert_eq!(prefixes.len(), 30);
    assert!(
        prefixes
            .iter()
            .all(|p| p.starts_with("dir") && p.ends_with('/'))
    );
    assert!(pages >= 7, "{pages} pages of at most 250 entries");

    let (listed, _, _) = list_all_v2(&client, &bucket, "dir07/", Some("/"), None).await;
    assert_eq!(listed.len(), 10);

    let (listed, prefixes, pages) = list_all_v1(&client, &bucket, None, None).await;
    assert_eq!(listed, all);
    assert!(prefixes.is_empty());
    assert_eq!(pages, 2);

    let (listed, prefixes, _) = list_all_v1(&client, &bucket, Some("/"), Some(333)).await;
    assert_eq!(listed.len(), 1500);
    assert_eq!(prefixes.len(), 30);

    // start-after skips what precedes it.
    let page = client
        .list_objects_v2(
            &bucket,
            &ListObjectsParams {
                start_after: Some("f01498".into()),
                max_keys: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(got, ["f01499"], "keys sort after dir*/, so one key follows");
}

on_servers!(multipart_20_mib_round_trip_with_md5: s3s => Kind::S3sFs, rgw => Kind::CephRgw);
async fn multipart_20_mib_round_trip_with_md5(kind: Kind) {
    let server = common::start(kind);
    let (client, bucket) = server.client_and_bucket("multipart").await;
    let body = data(20 * MIB, 7);
    let key = "big/object.bin";
    let upload = client.create_multipart_upload(&bucket, key).await.unwrap();
    let part_size = 5 * MIB;
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(part_size).enumerate() {
        let n = i as u32 + 1;
        let etag = client
            .upload_part(&bucket, key, &upload, n, Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
        // The part ETag is the MD5 the server computed of what it received.
        assert_eq!(etag.trim_matches('"'), md5_hex(chunk));
        parts.push(CompletedPart {
            part_number: n,
            etag,
        });
    }
    assert_eq!(parts.len(), 4);
    let listed = client
        .list_parts(&bucket, key, &upload, None)
        .await
        .unwrap();
    assert_eq!(
        listed
            .parts
            .iter()
            .map(|p| p.part_number)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(listed.parts[0].size, part_size as u64);
    let done = client
        .complete_multipart_upload(&bucket, key, &upload, &parts)
        .await
        .unwrap();
    let head = client.head_object(&bucket, key, None).await.unwrap();
    assert_eq!(head.size, body.len() as u64);
    // The ETag the completion reports is the object's, quoted as in
    // headers: reads that follow use it in If-Match (RGW sends it empty).
    assert_eq!(done.etag, head.etag);
    client
        .get_object(
            &bucket,
            key,
            &GetObjectParams {
                if_match: done.etag.clone(),
                range: Some(0..1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = client
        .get_object(&bucket, key, &GetObjectParams::default())
        .await
        .unwrap();
    assert_eq!(got.body.len(), body.len());
    assert_eq!(md5_hex(&got.body), md5_hex(&body));

    // An aborted upload leaves no object behind.
    let upload = client
        .create_multipart_upload(&bucket, "aborted")
        .await
        .unwrap();
    client
        .upload_part(&bucket, "aborted", &upload, 1, Bytes::from(data(1000, 1)))
        .await
        .unwrap();
    client
        .abort_multipart_upload(&bucket, "aborted", &upload)
        .await
        .unwrap();
    let err = client
        .head_object(&bucket, "aborted", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

on_servers!(upload_part_copy_with_ranges: s3s => Kind::S3sFs, rgw => Kind::CephRgw);
async fn upload_part_copy_with_ranges(kind: Kind) {
    let server = common::start(kind);
    let (client, bucket) = server.client_and_bucket("partcopy").await;
    let source = data(12 * MIB, 3);
    client
        .put_object(&bucket, "src", Bytes::from(source.clone()))
        .await
        .unwrap();
    let src = CopySource {
        bucket: bucket.clone(),
        key: "src".into(),
        version_id: None,
        if_match: None,
    };
    // New object = source[6 MiB..12 MiB] + source[0..5 MiB] + fresh tail.
    let tail = data(4096, 9);
    let upload = client
        .create_multipart_upload(&bucket, "dst")
        .await
        .unwrap();
    let p1 = client
        .upload_part_copy(
            &bucket,
            "dst",
            &upload,
            1,
            &src,
            Some(6 * MIB as u64..12 * MIB as u64),
        )
        .await
        .unwrap();
    let p2 = client
        .upload_part_copy(&bucket, "dst", &upload, 2, &src, Some(0..5 * MIB as u64))
        .await
        .unwrap();
    let p3 = client
        .upload_part(&bucket, "dst", &upload, 3, Bytes::from(tail.clone()))
        .await
        .unwrap();
    let parts: Vec<CompletedPart> = [p1, p2, p3]
        .into_iter()
        .enumerate()
        .map(|(i, etag)| CompletedPart {
            part_number: i as u32 + 1,
            etag,
        })
        .collect();
    let done = client
        .complete_multipart_upload(&bucket, "dst", &upload, &parts)
        .await
        .unwrap();
    let head = client.head_object(&bucket, "dst", None).await.unwrap();
    assert_eq!(done.etag, head.etag);
    let mut expected = source[6 * MIB..].to_vec();
    expected.extend_from_slice(&source[..5 * MIB]);
    expected.extend_from_slice(&tail);
    let got = client
        .get_object(&bucket, "dst", &GetObjectParams::default())
        .await
        .unwrap();
    assert_eq!(got.body.len(), expected.len());
    assert!(got.body == expected, "content of the part-copied object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_in_batches_of_1000() {
    let server = common::start(Kind::S3sFs);
    let (client, bucket) = server.client_and_bucket("batchdelete").await;
    let keys: Vec<String> = (0..1500).map(|i| format!("d/{i:04}")).collect();
    put_many(&client, &bucket, &keys).await;
    assert_too_many_refused(&client, &bucket, &keys).await;
    let before = client.stats().snapshot();
    for batch in keys.chunks(limits::MAX_DELETE_OBJECTS) {
        let ids: Vec<ObjectIdentifier> = batch.iter().map(ObjectIdentifier::key).collect();
        let out = client.delete_objects(&bucket, &ids).await.unwrap();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }
    let spent = client.stats().snapshot().since(&before);
    assert_eq!(spent.get(Op::DeleteObjects).requests, 2);
    let (left, _, _) = list_all_v2(&client, &bucket, "", None, None).await;
    assert!(left.is_empty(), "{} keys left", left.len());
}

/// More than 1000 keys in one call is refused before anything is sent.
async fn assert_too_many_refused(client: &S3Client, bucket: &str, keys: &[String]) {
    let ids: Vec<ObjectIdentifier> = keys.iter().map(ObjectIdentifier::key).collect();
    let before = client.stats().snapshot();
    let err = client.delete_objects(bucket, &ids).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert_eq!(client.stats().snapshot().since(&before).total().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_round_trip() {
    let server = common::start(Kind::S3sFs);
    let (client, bucket) = server.client_and_bucket("oddkeys").await;
    for key in odd_keys() {
        let body = Bytes::from(format!("body of {key}"));
        client
            .put_object(&bucket, &key, body.clone())
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let head = client.head_object(&bucket, &key, None).await.unwrap();
        assert_eq!(head.size, body.len() as u64, "{key}");
        let got = client
            .get_object(&bucket, &key, &GetObjectParams::default())
            .await
            .unwrap();
        assert_eq!(got.body, body, "{key}");
        let copy = format!("{key}.copy");
        if copy.len() <= limits::MAX_KEY_LEN {
            let src = CopySource {
                bucket: bucket.clone(),
                key: key.clone(),
                version_id: None,
                if_match: None,
            };
            client
                .copy_object(&bucket, &copy, &src)
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let got = client
                .get_object(&bucket, &copy, &GetObjectParams::default())
                .await
                .unwrap();
            assert_eq!(got.body, body, "copy of {key}");
        }
    }
    let (listed, _, _) = list_all_v2(&client, &bucket, "", None, None).await;
    for key in odd_keys() {
        assert!(listed.contains(&key), "listing lacks {key:?}: {listed:?}");
    }
    // A prefix with odd characters selects exactly its keys.
    let (listed, _, _) = list_all_v2(&client, &bucket, "dir with space/", None, None).await;
    assert_eq!(
        listed,
        [
            "dir with space/nested+dir/file",
            "dir with space/nested+dir/file.copy"
        ]
    );
    let ids: Vec<ObjectIdentifier> = listed.iter().map(ObjectIdentifier::key).collect();
    let out = client.delete_objects(&bucket, &ids).await.unwrap();
    assert!(out.errors.is_empty());
    for key in odd_keys()
        .into_iter()
        .filter(|k| !k.starts_with("dir with"))
    {
        client.delete_object(&bucket, &key, None).await.unwrap();
    }
    // A key with a dot segment is refused before sending, not misdirected.
    let err = client
        .put_object(&bucket, "a/../b", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
}

#[tokio::test]
async fn typed_errors() {
    let server = common::start(Kind::S3sFs);
    let (client, bucket) = server.client_and_bucket("errors").await;
    let err = client
        .get_object(&bucket, "missing", &GetObjectParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&S3ErrorCode::NoSuchKey), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = client
        .head_object(&bucket, "missing", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = client
        .list_objects_v2("nobucket", &ListObjectsParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&S3ErrorCode::NoSuchBucket), "{err}");
    assert_eq!(err.kind(), ErrorKind::NoSuchBucket);

    client
        .put_object(&bucket, "ten", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let err = client
        .get_object(
            &bucket,
            "ten",
            &GetObjectParams {
                range: Some(100..200),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&S3ErrorCode::InvalidRange), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidRange);

    // s3s-fs honours x-amz-copy-source-if-match (it ignores If-Match on GET;
    // moto checks that one).
    let src = CopySource {
        bucket: bucket.clone(),
        key: "ten".into(),
        version_id: None,
        if_match: Some("\"00000000000000000000000000000000\"".into()),
    };
    let err = client.copy_object(&bucket, "copy", &src).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    let etag = client.head_object(&bucket, "ten", None).await.unwrap().etag;
    let src = CopySource {
        if_match: etag,
        ..src
    };
    client.copy_object(&bucket, "copy", &src).await.unwrap();

    let err = client.delete_bucket("nobucket").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSuchBucket, "{err}");
}

#[tokio::test]
async fn transient_faults_are_retried_until_success() {
    let server = common::start(Kind::S3sFs);
    let (_, bucket) = server.client_and_bucket("retries").await;
    for fault in [
        proxy::Fault::SlowDown,
        proxy::Fault::InternalError,
        proxy::Fault::Reset,
    ] {
        let faults = 3;
        let proxy = proxy::start(server.addr, fault, faults).await;
        let mut cfg = server.config();
        cfg.endpoint = proxy.endpoint.clone();
        let client = server.client_with(cfg);
        let body = Bytes::from(data(100_000, 5));
        client
            .put_object(&bucket, "k", body.clone())
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        let got = client
            .get_object(&bucket, "k", &GetObjectParams::default())
            .await
            .unwrap();
        assert_eq!(got.body, body);
        assert_eq!(proxy.injected(), faults, "{fault:?}");
        let stats = client.stats().snapshot();
        assert_eq!(stats.get(Op::PutObject).retries, faults as u64, "{fault:?}");
        assert_eq!(stats.get(Op::PutObject).requests, faults as u64 + 1);
        assert_eq!(stats.get(Op::GetObject).retries, 0);
    }
}

#[tokio::test]
async fn retries_stop_at_the_limit() {
    let server = common::start(Kind::S3sFs);
    let (_, bucket) = server.client_and_bucket("giveup").await;
    let proxy = proxy::start(server.addr, proxy::Fault::InternalError, 1000).await;
    let mut cfg = server.config();
    cfg.endpoint = proxy.endpoint.clone();
    cfg.retry.max_attempts = 4;
    let client = server.client_with(cfg);
    let err = client
        .get_object(&bucket, "k", &GetObjectParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError, "{err}");
    assert_eq!(client.stats().snapshot().get(Op::GetObject).requests, 4);
    // Initiating a multipart upload is resent too (a 500 may have created
    // an upload; what it created is aborted, see client_moto.rs), and gives
    // up at the same limit.
    let err = client
        .create_multipart_upload(&bucket, "k")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(
        client
            .stats()
            .snapshot()
            .get(Op::CreateMultipartUpload)
            .requests,
        4
    );
}

#[tokio::test]
async fn unreachable_endpoint_fails_fast_and_clearly() {
    let port = common::free_port();
    let mut cfg = bladefs::s3::config::S3Config::new(format!("http://127.0.0.1:{port}"));
    cfg.retry.max_attempts = 3;
    cfg.retry.initial_backoff = Duration::from_millis(5);
    let client = S3Client::new(cfg, Credentials::new("a", "b")).unwrap();
    let start = Instant::now();
    let err = client.head_bucket("b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cannot reach") && text.contains(&port.to_string()),
        "{text}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(client.stats().snapshot().get(Op::HeadBucket).requests, 3);
}

/// One full round trip (put, list, get, multipart, copy, delete): exactly
/// one request per step, no retries; the time is printed for the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_request_count() {
    let server = common::start(Kind::S3sFs);
    let (client, bucket) = server.client_and_bucket("roundtrip").await;
    let small = Bytes::from(data(64 * 1024, 1));
    let big = data(12 * MIB, 2);
    let start = Instant::now();
    let before = client.stats().snapshot();

    client
        .put_object(&bucket, "small", small.clone())
        .await
        .unwrap();
    let page = client
        .list_objects(&bucket, &ListObjectsParams::default())
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 1);
    let got = client
        .get_object(&bucket, "small", &GetObjectParams::default())
        .await
        .unwrap();
    assert_eq!(got.body, small);
    let upload = client
        .create_multipart_upload(&bucket, "big")
        .await
        .unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in big.chunks(5 * MIB).enumerate() {
        let etag = client
            .upload_part(
                &bucket,
                "big",
                &upload,
                i as u32 + 1,
                Bytes::copy_from_slice(chunk),
            )
            .await
            .unwrap();
        parts.push(CompletedPart {
            part_number: i as u32 + 1,
            etag,
        });
    }
    client
        .complete_multipart_upload(&bucket, "big", &upload, &parts)
        .await
        .unwrap();
    let src = CopySource {
        bucket: bucket.clone(),
        key: "big".into(),
        version_id: None,
        if_match: None,
    };
    client.copy_object(&bucket, "big-copy", &src).await.unwrap();
    let ids: Vec<ObjectIdentifier> = ["small", "big", "big-copy"]
        .into_iter()
        .map(ObjectIdentifier::key)
        .collect();
    client.delete_objects(&bucket, &ids).await.unwrap();

    let elapsed = start.elapsed();
    let spent = client.stats().snapshot().since(&before);
    println!("round trip in {elapsed:?}:\n{spent}");
    let expect = [
        (Op::PutObject, 1),
        (Op::ListObjectsV2, 1),
        (Op::GetObject, 1),
        (Op::CreateMultipartUpload, 1),
        (Op::UploadPart, 3),
        (Op::CompleteMultipartUpload, 1),
        (Op::CopyObject, 1),
        (Op::DeleteObjects, 1),
    ];
    for (op, n) in expect {
        assert_eq!(spent.get(op).requests, n, "{op:?}");
    }
    assert_eq!(spent.total().requests, 10);
    assert_eq!(spent.total().retries, 0);
    assert!(spent.total().bytes_sent >= (64 * 1024 + 12 * MIB) as u64);
}

/// s3s-fs echoes `encoding-type=url` but sends keys raw. A listing that
/// gives itself away (a raw space) makes the client stop asking, so later
/// listings of keys that would decode differently (`%41`) stay exact.
#[tokio::test]
async fn raw_listings_behind_an_encoding_claim_are_detected() {
    let server = common::start(Kind::S3sFs);
    let mut cfg = server.config();
    cfg.list_url_encoding = true;
    let client = server.client_with(cfg);
    client.create_bucket("claims").await.unwrap();
    for key in ["with space", "pct%41", "a+b"] {
        client
            .put_object("claims", key, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let (mut listed, _, _) = list_all_v2(&client, "claims", "", None, None).await;
    listed.sort();
    assert_eq!(listed, ["a+b", "pct%41", "with space"]);
    for prefix in ["pct", "a+"] {
        let (listed, _, _) = list_all_v2(&client, "claims", prefix, None, None).await;
        assert_eq!(listed.len(), 1, "{prefix}");
        assert!(listed[0] == "pct%41" || listed[0] == "a+b", "{listed:?}");
    }
}

#[tokio::test]
async fn https_with_a_private_ca() {
    let server = common::start(Kind::S3sFs);
    let tls = proxy::start_tls(server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();

    let mut cfg = server.config();
    cfg.endpoint = tls.endpoint.clone();
    cfg.ca_bundle = Some(ca);
    let client = server.client_with(cfg.clone());
    client.create_bucket("tls").await.unwrap();
    let body = Bytes::from(data(300_000, 4));
    client.put_object("tls", "k", body.clone()).await.unwrap();
    let got = client
        .get_object("tls", "k", &GetObjectParams::default())
        .await
        .unwrap();
    assert_eq!(got.body, body);

    // Without the CA the certificate is refused, at once and for good.
    cfg.ca_bundle = None;
    let client = server.client_with(cfg);
    let err = client.head_bucket("tls").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("--ca-bundle"), "{err}");
    assert_eq!(client.stats().snapshot().get(Op::HeadBucket).requests, 1);
}

#[tokio::test]
async fn virtual_hosted_addressing_with_both_signatures() {
    let server = common::start_with(Kind::S3sFs, &["--domain", "s3.test:{port}"]);
    for (signature, bucket) in [(SignatureVersion::V4, "vh4"), (SignatureVersion::V2, "vh2")] {
        let mut cfg = server.config();
        cfg.endpoint = format!("http://s3.test:{}", server.addr.port());
        cfg.addressing = bladefs::s3::config::Addressing::VirtualHosted;
        cfg.signature = signature;
        cfg.resolve = vec![
            ("s3.test".to_string(), server.addr),
            (format!("{bucket}.s3.test"), server.addr),
        ];
        let client = server.client_with(cfg);
        client.create_bucket(bucket).await.unwrap();
        client
            .put_object(bucket, "dir/a b", Bytes::from_static(b"vhost"))
            .await
            .unwrap();
        let page = client
            .list_objects(
                bucket,
                &ListObjectsParams {
                    prefix: "dir/".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.objects[0].key, "dir/a b", "{signature:?}");
        let got = client
            .get_object(bucket, "dir/a b", &GetObjectParams::default())
            .await
            .unwrap();
        assert_eq!(&got.body[..], b"vhost");
        let names: Vec<String> = client
            .list_buckets()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert!(names.contains(&bucket.to_string()), "{names:?}");
    }
    // The path-style view of the same store sees what went in by host name.
    let got = server
        .client()
        .get_object("vh4", "dir/a b", &GetObjectParams::default())
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"vhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_falls_back_to_v1_when_v2_is_not_implemented() {
    let server = common::start(Kind::S3sFs);
    let (seeder, bucket) = server.client_and_bucket("fallback").await;
    let keys: Vec<String> = (0..1500).map(|i| format!("k{i:04}")).collect();
    put_many(&seeder, &bucket, &keys).await;
    let proxy = proxy::start_rules(
        server.addr,
        vec![proxy::Rule {
            when: vec!["list-type=2"],
            fault: proxy::Fault::NotImplemented,
            count: usize::MAX,
        }],
    )
    .await;
    let mut cfg = server.config();
    cfg.endpoint = proxy.endpoint.clone();
    let client = server.client_with(cfg);
    let mut params = ListObjectsParams::default();
    let mut listed = Vec::new();
    loop {
        let page = client.list_objects(&bucket, &params).await.unwrap();
        listed.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_continuation_token {
            Some(t) => params.continuation_token = Some(t),
            None => break,
        }
    }
    assert_eq!(listed, keys);
    let stats = client.stats().snapshot();
    assert_eq!(stats.get(Op::ListObjectsV2).requests, 1, "V2 is tried once");
    assert_eq!(stats.get(Op::ListObjectsV1).requests, 2);
}

#[tokio::test]
async fn an_error_inside_a_200_answer_is_an_error() {
    let server = common::start(Kind::S3sFs);
    let (_, bucket) = server.client_and_bucket("embedded").await;
    let proxy = proxy::start_rules(
        server.addr,
        vec![
            proxy::Rule {
                when: vec!["x-amz-copy-source"],
                fault: proxy::Fault::ErrorIn200,
                count: 2,
            },
            proxy::Rule {
                when: vec!["post ", "uploadid="],
                fault: proxy::Fault::ErrorIn200,
                count: 1,
            },
        ],
    )
    .await;
    let mut cfg = server.config();
    cfg.endpoint = proxy.endpoint.clone();
    let client = server.client_with(cfg);
    client
        .put_object(&bucket, "src", Bytes::from_static(b"source"))
        .await
        .unwrap();
    let src = CopySource {
        bucket: bucket.clone(),
        key: "src".into(),
        version_id: None,
        if_match: None,
    };
    client.copy_object(&bucket, "dst", &src).await.unwrap();
    let upload = client.create_multipart_upload(&bucket, "mp").await.unwrap();
    let etag = client
        .upload_part(&bucket, "mp", &upload, 1, Bytes::from_static(b"part"))
        .await
        .unwrap();
    client
        .complete_multipart_upload(
            &bucket,
            "mp",
            &upload,
            &[CompletedPart {
                part_number: 1,
                etag,
            }],
        )
        .await
        .unwrap();
    assert_eq!(proxy.injected(), 3);
    let stats = client.stats().snapshot();
    assert_eq!(stats.get(Op::CopyObject).retries, 2);
    assert_eq!(stats.get(Op::CompleteMultipartUpload).retries, 1);
    for (key, want) in [("dst", &b"source"[..]), ("mp", b"part")] {
        let got = client
            .get_object(&bucket, key, &GetObjectParams::default())
            .await
            .unwrap();
        assert_eq!(&got.body[..], want);
    }
}

/// CompleteMultipartUpload reaches the server, which completes the upload,
/// but the answer is lost. The retry finds the upload gone; the client then
/// recognises the object as its own by its multipart ETag. (moto lets an
/// upload be completed twice, so it cannot show this.)
#[tokio::test]
async fn a_lost_complete_answer_is_recognised() {
    let server = common::start(Kind::S3sFs);
    let (_, bucket) = server.client_and_bucket("lostanswer").await;
    let proxy = proxy::start_rules(
        server.addr,
        vec![proxy::Rule {
            when: vec!["post ", "uploadid="],
            fault: proxy::Fault::LoseAnswer,
            count: 1,
        }],
    )
    .await;
    let mut cfg = server.config();
    cfg.endpoint = proxy.endpoint.clone();
    let client = server.client_with(cfg);
    let upload = client
        .create_multipart_upload(&bucket, "obj")
        .await
        .unwrap();
    let first = common::data(5 * 1024 * 1024, 1);
    let second = common::data(1000, 2);
    let mut parts = Vec::new();
    for (n, body) in [(1u32, &first), (2, &second)] {
        let etag = client
            .upload_part(&bucket, "obj", &upload, n, Bytes::from(body.clone()))
            .await
            .unwrap();
        parts.push(CompletedPart {
            part_number: n,
            etag,
        });
    }
    let out = client
        .complete_multipart_upload(&bucket, "obj", &upload, &parts)
        .await
        .unwrap();
    assert_eq!(proxy.injected(), 1);
    let stats = client.stats().snapshot();
    assert_eq!(stats.get(Op::CompleteMultipartUpload).requests, 2);
    assert_eq!(stats.get(Op::HeadObject).requests, 1);
    assert!(out.etag.unwrap().ends_with("-2\""));
    let got = client
        .get_object(&bucket, "obj", &GetObjectParams::default())
        .await
        .unwrap();
    assert_eq!(got.body.len(), first.len() + second.len());
    assert!(got.body[..first.len()] == first[..] && got.body[first.len()..] == second[..]);
}

/// A server that answers a listing with garbage, or with a document that
/// never ends: an error each time, never a panic, and the endless one is
/// cut off at the document limit instead of filling memory.
#[tokio::test]
async fn garbage_and_endless_answers_are_errors() {
    let server = common::start(Kind::S3sFs);
    let (_, bucket) = server.client_and_bucket("garbage").await;
    // A garbled document is not retried (only a body cut short is); an
    // endless one is cut off at the limit, which reads as cut short.
    for (fault, count) in [(proxy::Fault::Garbage, 1), (proxy::Fault::Endless, 2)] {
        let proxy = proxy::start(server.addr, fault, count).await;
        let mut cfg = server.config();
        cfg.endpoint = proxy.endpoint.clone();
        cfg.retry.max_attempts = 2;
        let client = server.client_with(cfg);
        // Without the limit the endless answer would be read forever.
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            client.list_objects(&bucket, &ListObjectsParams::default()),
        )
        .await
        .expect("an endless answer is cut off")
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{fault:?}: {err}");
        assert_eq!(proxy.injected(), count, "{fault:?}");
        // The server behind is fine once the faults are spent.
        client
            .list_objects(&bucket, &ListObjectsParams::default())
            .await
            .unwrap();
    }
}
