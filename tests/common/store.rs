//! A bucket seen through the S3 API, beside a mount: what tests check a
//! mount's results against. Blocking, for tests that drive the mount from
//! their own thread.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use bladefs::s3::{GetObjectParams, ListObjectsParams, ListUploadsParams, ObjectClient, S3Client};
use sha2::{Digest, Sha256};

use super::Server;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub struct Store {
    pub client: Arc<S3Client>,
    pub bucket: String,
}

impl Store {
    pub fn new(server: &Server, bucket: &str) -> Store {
        let client = server.client();
        runtime().block_on(client.create_bucket(bucket)).unwrap();
        Store {
            client,
            bucket: bucket.to_string(),
        }
    }

    /// Every key in the bucket with its size.
    pub fn keys(&self) -> BTreeMap<String, u64> {
        runtime().block_on(async {
            let mut out = BTreeMap::new();
            let mut params = ListObjectsParams::default();
            loop {
                let page = self
                    .client
                    .list_objects(&self.bucket, &params)
                    .await
                    .unwrap();
                for o in page.objects {
                    out.insert(o.key, o.size);
                }
                match page.next_continuation_token {
                    Some(t) => params.continuation_token = Some(t),
                    None => return out,
                }
            }
        })
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        runtime()
            .block_on(
                self.client
                    .get_object(&self.bucket, key, &GetObjectParams::default()),
            )
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .body
            .to_vec()
    }

    pub fn put(&self, key: &str, body: Vec<u8>) {
        runtime()
            .block_on(self.client.put_object(&self.bucket, key, body.into()))
            .unwrap();
    }

    /// Puts every object, 16 at a time.
    pub fn put_all(&self, objects: &[(String, Vec<u8>)]) {
        use futures::{StreamExt, TryStreamExt};
        runtime()
            .block_on(
                futures::stream::iter(objects)
                    .map(|(key, body)| {
                        self.client
                            .put_object(&self.bucket, key, body.clone().into())
                    })
                    .buffer_unordered(16)
                    .try_collect::<Vec<_>>(),
            )
            .unwrap();
    }

    pub fn assert_no_uploads_left(&self) {
        let left = runtime()
            .block_on(
                self.client
                    .list_multipart_uploads(&self.bucket, &ListUploadsParams::default()),
            )
            .unwrap();
        assert!(left.uploads.is_empty(), "uploads left: {:?}", left.uploads);
    }
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
