#!/usr/bin/env python3
"""Push small multi-platform test images to a plain-HTTP registry with the raw v2 API.

    registry-multiarch.py 127.0.0.1:5000 test/multi

Pushes, in REPO:
- `latest`: an OCI image index with linux/amd64 and linux/arm64/v8 (OCI manifests);
- `docker`: the same as a Docker schema2 manifest list (Docker media types).
Each platform's image has one gzip layer holding the file `/arch` (its architecture name)
and a config whose `architecture` says the same, so a test can tell which one it got.
"""
import gzip
import hashlib
import io
import json
import sys
import tarfile
import urllib.request

REG, REPO = sys.argv[1], sys.argv[2]
BASE = f"http://{REG}/v2/{REPO}"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
D_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
D_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
D_CONFIG = "application/vnd.docker.container.image.v1+json"
D_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def req(method, url, data=None, ctype=None):
    r = urllib.request.Request(url, data=data, method=method)
    if ctype:
        r.add_header("Content-Type", ctype)
    return urllib.request.urlopen(r)


def push_blob(data: bytes) -> str:
    d = sha(data)
    try:
        req("HEAD", f"{BASE}/blobs/{d}")
        return d
    except urllib.error.HTTPError:
        pass
    loc = req("POST", f"{BASE}/blobs/uploads/").headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{REG}{loc}"
    sep = "&" if "?" in loc else "?"
    req("PUT", f"{loc}{sep}digest={d}", data, "application/octet-stream")
    return d


def put_manifest(ref: str, body: bytes, ctype: str) -> str:
    req("PUT", f"{BASE}/manifests/{ref}", body, ctype)
    return sha(body)


def layer(arch: str) -> (bytes, str):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        content = f"{arch}\n".encode()
        ti = tarfile.TarInfo("arch")
        ti.size, ti.mode, ti.mtime = len(content), 0o644, 0
        t.addfile(ti, io.BytesIO(content))
    tar = raw.getvalue()
    return gzip.compress(tar, mtime=0), sha(tar)


def image(arch: str, variant, docker: bool):
    gz, diff_id = layer(arch)
    cfg = {"architecture": arch, "os": "linux",
           "config": {"Cmd": ["/bin/sh"]},
           "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    if variant:
        cfg["variant"] = variant
    cfg_b = json.dumps(cfg, sort_keys=True).encode()
    m = {"schemaVersion": 2,
         "mediaType": D_MANIFEST if docker else OCI_MANIFEST,
         "config": {"mediaType": D_CONFIG if docker else OCI_CONFIG,
                    "digest": push_blob(cfg_b), "size": len(cfg_b)},
         "layers": [{"mediaType": D_LAYER if docker else OCI_LAYER,
                     "digest": push_blob(gz), "size": len(gz)}]}
    mb = json.dumps(m, sort_keys=True).encode()
    mtype = D_MANIFEST if docker else OCI_MANIFEST
    d = put_manifest(sha(mb), mb, mtype)
    plat = {"os": "linux", "architecture": arch}
    if variant:
        plat["variant"] = variant
    return {"mediaType": mtype, "digest": d, "size": len(mb), "platform": plat}


for tag, docker in (("latest", False), ("docker", True)):
    entries = [image("amd64", None, docker), image("arm64", "v8", docker)]
    idx = {"schemaVersion": 2, "mediaType": D_LIST if docker else OCI_INDEX, "manifests": entries}
    ib = json.dumps(idx, sort_keys=True).encode()
    print(f"{REG}/{REPO}:{tag} {put_manifest(tag, ib, D_LIST if docker else OCI_INDEX)}")
