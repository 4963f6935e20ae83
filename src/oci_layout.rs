//! A local OCI image layout directory as an image source (`oci:DIR[:TAG]`).
