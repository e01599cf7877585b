//! Stand-in for [`remote`](super) in a build without the `cloud` feature
//! (the fuzz target's, which needs the spec parser and planner, not S3): an
//! object-store URL is refused with a message, and no other method can be
//! reached since no [`RemoteStore`] can exist.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use super::CacheError;

pub struct RemoteStore(Infallible);

pub struct Lease;

impl RemoteStore {
    pub fn open(url: &str) -> Result<RemoteStore, CacheError> {
        Err(CacheError::Remote {
            url: url.to_string(),
            detail: "this seqpipe was built without the `cloud` feature".into(),
        })
    }
    pub fn url(&self) -> &str {
        match self.0 {}
    }
    pub fn get(&self, _: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match self.0 {}
    }
    pub fn put(&self, _: &str, _: Vec<u8>) -> Result<(), CacheError> {
        match self.0 {}
    }
    pub fn has_artifact(&self, _: &str) -> Result<bool, CacheError> {
        match self.0 {}
    }
    pub fn upload_artifact(&self, _: &str, _: &Path) -> Result<(), CacheError> {
        match self.0 {}
    }
    pub fn download_artifact(&self, _: &str, _: &Path) -> Result<bool, CacheError> {
        match self.0 {}
    }
    pub fn gc(&self, _: std::time::Duration) -> Result<super::StoreGc, CacheError> {
        match self.0 {}
    }
}

pub fn lease(
    store: &Arc<RemoteStore>,
    _: &str,
    _: &str,
    _: impl FnOnce(),
) -> Result<Option<Lease>, CacheError> {
    match store.0 {}
}
