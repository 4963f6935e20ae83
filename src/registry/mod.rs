//! OCI Distribution API v2 client: manifests, blobs, auth, TLS, retries.
//! (Being implemented; see issue 2.)
