//! The S3 client against real moto and Ceph RGW servers: versioning and
//! ListObjectVersions, ListMultipartUploads, If-Match on GET and
//! URL-encoded listings, which s3s-fs lacks. Each behaviour that both
//! servers have is checked on both, so none is proven on one server's
//! quirks; RGW also verifies signatures (moto accepts any).

#[macro_use]
mod common;

use bladefs::s3::*;
use bytes::Bytes;
use common::Kind;

on_servers!(versioning_and_listing_versions: moto => Kind::Moto, rgw => Kind::CephRgw);
async fn versioning_and_listing_versions(kind: Kind) {
    let server = common::start(kind);
    let (client, bucket) = server.client_and_bucket("versions").await;
    assert_eq!(
        client.get_bucket_versioning(&bucket).await.unwrap(),
        VersioningStatus::Unversioned
    );
    client.put_bucket_versioning(&bucket, true).await.unwrap();
    assert_eq!(
        client.get_bucket_versioning(&bucket).await.unwrap(),
        VersioningStatus::Enabled
    );

    let mut ids = Vec::new();
    for i in 0..3 {
        let out = client
            .put_object(&bucket, "doc", Bytes::from(format!("version {i}")))
            .await
            .unwrap();
        ids.push(
            out.version_id
                .expect("a versioned PUT returns a version id"),
        );
    }
    client
        .put_object(&bucket, "other", Bytes::from_static(b"o"))
        .await
        .unwrap();
    let deleted = client.delete_object(&bucket, "doc", None).await.unwrap();
    assert!(deleted.delete_marker);
    let err = client
        .get_object(&bucket, "doc", &GetObjectParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Old versions stay readable by id.
    let old = client
        .get_object(
            &bucket,
            "doc",
            &GetObjectParams {
                version_id: Some(ids[0].clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(&old.body[..], b"version 0");
    let head = client
        .head_object(&bucket, "doc", Some(&ids[1]))
        .await
        .unwrap();
    assert_eq!(head.size, 9);
    assert_eq!(head.version_id.as_deref(), Some(ids[1].as_str()));

    let all = client
        .list_object_versions(&bucket, &ListVersionsParams::default())
        .await
        .unwrap();
    assert!(all.next_key_marker.is_none());
    let doc: Vec<&ObjectVersion> = all.versions.iter().filter(|v| v.key == "doc").collect();
    assert_eq!(doc.len(), 4, "{doc:?}");
    assert!(doc[0].is_delete_marker && doc[0].is_latest, "{doc:?}");
    assert_eq!(doc.iter().filter(|v| v.is_latest).count(), 1);
    let mut listed: Vec<String> = doc
        .iter()
        .filter(|v| !v.is_delete_marker)
        .filter_map(|v| v.version_id.clone())
        .collect();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);

    // Pages of two entries, resumed from key and version markers, give the
    // same entries in the same order.
    let mut params = ListVersionsParams {
        max_keys: Some(2),
        ..Default::default()
    };
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.list_object_versions(&bucket, &params).await.unwrap();
        pages += 1;
        assert!(page.versions.len() <= 2);
        paged.extend(page.versions);
        match page.next_key_marker {
            Some(k) => {
                params.key_marker = Some(k);
                params.version_id_marker = page.next_version_id_marker;
            }
            None => break,
        }
    }
    assert_eq!(paged, all.versions);
    assert_eq!(pages, 3);

    // Removing a version by id removes only it.
    client
        .delete_object(&bucket, "doc", Some(&ids[0]))
        .await
        .unwrap();
    let after = client
        .list_object_versions(
            &bucket,
            &ListVersionsParams {
                prefix: "doc".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(after.versions.len(), 3);
    assert!(
        after
            .versions
            .iter()
            .all(|v| v.version_id.as_ref() != Some(&ids[0]))
    );

    client.put_bucket_versioning(&bucket, false).await.unwrap();
    assert_eq!(
        client.get_bucket_versioning(&bucket).await.unwrap(),
        VersioningStatus::Suspended
    );
}

on_servers!(list_and_abort_multipart_uploads: moto => Kind::Moto, rgw => Kind::CephRgw);
async fn list_and_abort_multipart_uploads(kind: Kind) {
    let server = common::start(kind);
    let (client, bucket) = server.client_and_bucket("uploads").await;
    let mut made = Vec::new();
    for key in ["a/one", "a/one", "b two"] {
        let id = client.create_multipart_upload(&bucket, key).await.unwrap();
        made.push((key.to_string(), id));
    }
    let listed = client
        .list_multipart_uploads(&bucket, &ListUploadsParams::default())
        .await
        .unwrap();
    let mut got: Vec<(String, String)> = listed
        .uploads
        .iter()
        .map(|u| (u.key.clone(), u.upload_id.clone()))
        .collect();
    got.sort();
    made.sort();
    assert_eq!(got, made);
    assert!(listed.uploads.iter().all(|u| u.initiated.is_some()));

    let only_a = client
        .list_multipart_uploads(
            &bucket,
            &ListUploadsParams {
                prefix: "a/".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(only_a.uploads.len(), 2);

    for (key, id) in &made {
        client
            .abort_multipart_upload(&bucket, key, id)
            .await
            .unwrap();
    }
    let listed = client
        .list_multipart_uploads(&bucket, &ListUploadsParams::default())
        .await
        .unwrap();
    assert!(listed.uploads.is_empty(), "{:?}", listed.uploads);
    let err = client
        .abort_multipart_upload(&bucket, "a/one", &made[0].1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&S3ErrorCode::NoSuchUpload), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

on_servers!(conditional_get: moto => Kind::Moto, rgw => Kind::CephRgw);
async fn conditional_get(kind: Kind) {
    let server = common::start(kind);
    let (client, bucket) = server.client_and_bucket("conditional").await;
    let first = client
        .put_object(&bucket, "f", Bytes::from_static(b"first"))
        .await
        .unwrap();
    let etag = first.etag.expect("PUT returns an ETag");
    let got = client
        .get_object(
            &bucket,
            "f",
            &GetObjectParams {
                if_match: Some(etag.clone()),
                range: Some(1..3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"ir");
    assert_eq!(got.object_size, 5);

    // Another writer replaces the object: a reader holding the old ETag
    // gets PreconditionFailed, never the new bytes.
    client
        .put_object(&bucket, "f", Bytes::from_static(b"second!"))
        .await
        .unwrap();
    let err = client
        .get_object(
            &bucket,
            "f",
            &GetObjectParams {
                if_match: Some(etag.clone()),
                range: Some(1..3),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");

    let current = client.head_object(&bucket, "f", None).await.unwrap().etag;
    let err = client
        .get_object(
            &bucket,
            "f",
            &GetObjectParams {
                if_none_match: current,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotModified, "{err}");
}

on_servers!(url_encoded_listings_keep_odd_keys_exact: moto => Kind::Moto, rgw => Kind::CephRgw);
async fn url_encoded_listings_keep_odd_keys_exact(kind: Kind) {
    let server = common::start(kind);
    let (client, bucket) = server.client_and_bucket("encoded").await;
    assert!(client.config().list_url_encoding);
    let mut keys: Vec<String> = [
        "pct%41",
        "a+b",
        "sp ace",
        "q?h#a&e=",
        "tab\there",
        "uni/é日本",
        "dir/sub/x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // One 1024-byte segment: moto stores keys as strings, not paths.
    keys.push("z".repeat(1024));
    for key in &keys {
        client
            .put_object(&bucket, key, Bytes::from(key.clone()))
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
    }
    let page = client
        .list_objects(&bucket, &ListObjectsParams::default())
        .await
        .unwrap();
    let mut listed: Vec<String> = page.objects.into_iter().map(|o| o.key).collect();
    listed.sort();
    keys.sort();
    assert_eq!(listed, keys);

    let page = client
        .list_objects(
            &bucket,
            &ListObjectsParams {
                delimiter: Some("/".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut prefixes = page.common_prefixes.clone();
    prefixes.sort();
    assert_eq!(prefixes, ["dir/", "uni/"]);

    let v1 = client
        .list_objects_v1(
            &bucket,
            &ListObjectsV1Params {
                prefix: "uni/".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(v1.objects[0].key, "uni/é日本");
    for key in &keys {
        let got = client
            .get_object(&bucket, key, &GetObjectParams::default())
            .await
            .unwrap();
        assert_eq!(got.body, key.as_bytes());
    }
}

#[tokio::test]
async fn bucket_location_and_delete_objects_report() {
    let server = common::start(Kind::Moto);
    let (client, bucket) = server.client_and_bucket("misc").await;
    // moto, like AWS, answers an empty constraint for us-east-1.
    assert_eq!(client.get_bucket_location(&bucket).await.unwrap(), None);
    for k in ["x", "y"] {
        client
            .put_object(&bucket, k, Bytes::from_static(b"1"))
            .await
            .unwrap();
    }
    let out = client
        .delete_objects(
            &bucket,
            &[ObjectIdentifier::key("x"), ObjectIdentifier::key("y")],
        )
        .await
        .unwrap();
    assert!(out.errors.is_empty());
    let page = client
        .list_objects(&bucket, &ListObjectsParams::default())
        .await
        .unwrap();
    assert!(page.objects.is_empty());

    client
        .put_object(&bucket, "keep", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let err = client.delete_bucket(&bucket).await.unwrap_err();
    assert_eq!(err.code(), Some(&S3ErrorCode::BucketNotEmpty), "{err}");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    client.delete_object(&bucket, "keep", None).await.unwrap();
    client.delete_bucket(&bucket).await.unwrap();
    let err = client.head_bucket(&bucket).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSuchBucket, "{err}");
}

/// CreateMultipartUpload reaches the server, which creates an upload, but
/// the answer is lost. The client retries (a write must not fail for one
/// lost answer) and aborts the upload the lost attempt made, so exactly
/// one upload of the key is left: the one it returned.
#[tokio::test]
async fn a_lost_create_answer_leaves_no_orphan() {
    let server = common::start(Kind::Moto);
    let (_, bucket) = server.client_and_bucket("lostcreate").await;
    let proxy = common::proxy::start_rules(
        server.addr,
        vec![common::proxy::Rule {
            when: vec!["post ", "?uploads"],
            fault: common::proxy::Fault::LoseAnswer,
            count: 1,
        }],
    )
    .await;
    let mut cfg = server.config();
    cfg.endpoint = proxy.endpoint.clone();
    let client = server.client_with(cfg);
    let id = client
        .create_multipart_upload(&bucket, "obj")
        .await
        .unwrap();
    assert_eq!(proxy.injected(), 1);
    let stats = client.stats().snapshot();
    assert_eq!(stats.get(Op::CreateMultipartUpload).requests, 2);
    assert_eq!(stats.get(Op::AbortMultipartUpload).requests, 1);
    let listed = client
        .list_multipart_uploads(&bucket, &ListUploadsParams::default())
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .uploads
        .iter()
        .map(|u| u.upload_id.as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
}
